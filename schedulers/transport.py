"""Command runners: how a backend runs a command on its target.

A runner runs an *argument vector* (never a shell string) and returns its output.
:class:`LocalRunner` runs on this machine.  Backends take a runner and know nothing
of where it runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from schedulers.errors import CommandFailed


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """Runs commands and moves small files on one host."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv``; raise :class:`CommandFailed` on non-zero exit if ``check``."""
        ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Create or replace a file on the host (parents are created)."""
        ...

    async def read_file(self, path: str) -> bytes:
        """Read a file on the host; ``FileNotFoundError`` if it is missing."""
        ...

    async def close(self) -> None: ...


class LocalRunner:
    """Runs commands on this machine with :mod:`asyncio` subprocesses."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._base_env = dict(env or {})

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        full_env = {**os.environ, **self._base_env, **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        result = CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stdout, result.stderr)
        return result

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(target)

    async def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    async def close(self) -> None:
        return None
