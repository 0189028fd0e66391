"""What the checks of one target share: its settings, one runner, one backend, and
the node report of the probe job (run once, read by several checks)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import workspace
from bridge.config import Settings, TargetConfig
from schedulers.base import Backend
from schedulers.transport import CommandRunner


@dataclass
class DoctorContext:
    settings: Settings
    target: TargetConfig
    _runner: CommandRunner | None = None
    _backend: Backend | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def work_url(self) -> str:
        """The work directory as the broker writes it (and, here, as nodes see it)."""
        return (self.target.work_url or self.settings.effective_work_url).rstrip("/")

    @property
    def agent(self) -> list[str]:
        return workspace.agent_command(self.target.agent_command)

    @property
    def scratch_dir(self) -> Path:
        """A broker-side directory for the doctor's own files (probe job output)."""
        path = self.settings.data_dir / "doctor" / self.target.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def runner(self) -> CommandRunner:
        """A runner on the target's login side (this machine for ``runner = local``)."""
        if self._runner is None:
            from bridge.targets import make_runner

            self._runner = make_runner(self.target)
        return self._runner

    def backend(self) -> Backend:
        if self._backend is None:
            from bridge.targets import make_backend

            self._backend = make_backend(self.target)
        return self._backend

    def format_fix(self, text: str) -> str:
        t = self.target
        values = {
            "target": t.name,
            "host": t.setting("host") or "localhost",
            "port": t.setting("port"),
            "user": t.setting("user") or "",
            "known_hosts": t.setting("known_hosts") or "~/.ssh/known_hosts",
            "work_url": self.work_url,
            "agent": " ".join(self.agent),
            "partition": t.setting("partition") or "",
            "account": t.setting("account") or "",
        }
        with contextlib.suppress(KeyError, IndexError, ValueError):
            return text.format(**values)
        return text

    async def close(self) -> None:
        if self._backend is not None:
            with contextlib.suppress(Exception):
                await self._backend.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.close()
