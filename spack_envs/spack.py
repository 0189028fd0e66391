"""Spack environments built for one CPU target, driven through a command runner.

:func:`render_spack_yaml` writes the environment: the specs, a view, ``concretizer:
unify: true`` (one consistent set of packages) and ``packages: all: require:
target=<T>`` so every package -- build dependencies included -- is compiled for the
target the task was placed on.  A target newer than the building host also needs
``concretizer: targets: host_compatible: false``, which is always set: the build runs
on a node *of that target* (the runner decides where: locally, in a Slurm job, over
SSH), and the host check would otherwise refuse it on a login node.

:class:`SpackBuilder` runs ``spack`` through a :class:`CommandRunner` -- the seam that
lets the broker run the same steps on a node of the target -- and keeps, in the build
directory, ``spack.yaml``, the resulting ``spack.lock`` and ``build.log`` (every
command and its output).  ``spack`` is found by :func:`find_spack`: on ``PATH``, or as
``$SPACK_ROOT/bin/spack``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from spack_envs.requests import EnvRequest


class SpackError(RuntimeError):
    """A spack command failed; the message ends with the tail of its output."""


class SpackNotFound(SpackError):
    """No ``spack`` on PATH nor under ``$SPACK_ROOT``."""


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


class CommandRunner(Protocol):
    """Runs one command (an argv list, never a shell string) and returns its output.

    Implementations decide *where*: on this machine, in a batch job on a node of the
    target, over SSH on a remote login node.
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult: ...


class LocalRunner:
    """Runs commands on this machine (stdout and stderr merged)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        full_env = {**os.environ, **(env or {})}
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            out = err.stdout if isinstance(err.stdout, str) else ""
            return CommandResult(124, f"{out}\ntimed out after {timeout} s")
        except OSError as err:
            return CommandResult(127, f"cannot run {argv[0]}: {err}")
        return CommandResult(proc.returncode, proc.stdout)


def find_spack(env: Mapping[str, str] | None = None) -> str | None:
    """The ``spack`` executable: on PATH, else ``$SPACK_ROOT/bin/spack``; None if absent."""
    env = os.environ if env is None else env
    found = shutil.which("spack", path=env.get("PATH"))
    if found:
        return found
    root = env.get("SPACK_ROOT")
    if root and (Path(root) / "bin" / "spack").is_file():
        return str(Path(root) / "bin" / "spack")
    return None


def render_spack_yaml(request: EnvRequest, view: str | Path) -> str:
    """The ``spack.yaml`` of ``request``, pinned to its target."""
    doc: dict[str, Any] = {
        "spack": {
            "specs": sorted(set(request.specs)),
            "view": str(view),
            "concretizer": {"unify": True, "targets": {"host_compatible": False}},
            "packages": {"all": {"require": [f"target={request.target}"]}},
        }
    }
    return yaml.safe_dump(doc, sort_keys=False)


def lock_targets(lock_path: Path) -> set[str]:
    """The targets of every concrete spec in a ``spack.lock``."""
    data = json.loads(lock_path.read_text())
    out: set[str] = set()
    for spec in (data.get("concrete_specs") or {}).values():
        target = ((spec.get("arch") or {}).get("target")) or ""
        if isinstance(target, dict):
            target = target.get("name", "")
        if target:
            out.add(str(target))
    return out


def lock_hash(lock_path: Path) -> str:
    return hashlib.sha256(lock_path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class SpackBuild:
    """What a finished build left: the environment directory, its lock and view."""

    env_dir: Path
    lock_path: Path
    lock_sha256: str
    view: Path
    log_path: Path


class SpackBuilder:
    """Creates, concretizes and installs Spack environments through a runner."""

    def __init__(
        self,
        runner: CommandRunner | None = None,
        spack: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 3600.0,
    ) -> None:
        self.runner = runner or LocalRunner()
        found = spack or find_spack(env)
        if found is None:
            raise SpackNotFound("spack is not on PATH and SPACK_ROOT/bin/spack does not exist")
        self.spack = found
        self.env = dict(env or {})
        self.timeout = timeout

    # -- one command ------------------------------------------------------------------

    def _run(self, args: Sequence[str], log_path: Path | None, cwd: str | None = None) -> str:
        argv = [self.spack, *args]
        result = self.runner.run(argv, cwd=cwd, env=self.env, timeout=self.timeout)
        if log_path is not None:
            with log_path.open("a") as log:
                log.write(f"$ {shlex.join(argv)}\n{result.output}")
                if not result.output.endswith("\n"):
                    log.write("\n")
                log.write(f"[exit {result.returncode}]\n")
        if result.returncode != 0:
            tail = "\n".join(result.output.strip().splitlines()[-15:])
            raise SpackError(
                f"spack {' '.join(args[:3])} failed (exit {result.returncode}):\n{tail}"
            )
        return result.output

    def version(self) -> str:
        return self._run(["--version"], None).strip().split()[0]

    # -- the steps --------------------------------------------------------------------

    def create(self, request: EnvRequest, build_dir: Path) -> Path:
        """``spack env create -d <build_dir>/env`` from the rendered ``spack.yaml``."""
        build_dir.mkdir(parents=True, exist_ok=True)
        source = build_dir / "spack.yaml"
        source.write_text(render_spack_yaml(request, build_dir / "view"))
        env_dir = build_dir / "env"
        if env_dir.exists():
            shutil.rmtree(env_dir)
        self._run(["env", "create", "-d", str(env_dir), str(source)], build_dir / "build.log")
        return env_dir

    def concretize(self, env_dir: Path, log_path: Path) -> Path:
        self._run(["-e", str(env_dir), "concretize", "-f"], log_path)
        lock = env_dir / "spack.lock"
        if not lock.is_file():
            raise SpackError(f"spack concretize wrote no {lock}")
        return lock

    def install(self, env_dir: Path, log_path: Path, *, cache_only: bool = False) -> None:
        args = ["-e", str(env_dir), "install", "--fail-fast"]
        if cache_only:
            args += ["--use-buildcache", "only"]
        self._run(args, log_path)

    def buildcache_push(self, env_dir: Path, mirror: str, log_path: Path) -> None:
        """Push every installed spec of the environment to ``mirror`` (a URL or path)."""
        self._run(
            ["-e", str(env_dir), "buildcache", "push", "--unsigned", "--only", "package", mirror],
            log_path,
        )

    def containerize(self, env_dir: Path, log_path: Path) -> str:
        """``spack containerize`` (it reads ``./spack.yaml``): a Dockerfile for the env."""
        return self._run(["containerize"], log_path, cwd=str(env_dir))

    def build(
        self, request: EnvRequest, build_dir: Path, *, push_to: str | None = None
    ) -> SpackBuild:
        """Create, concretize and install; optionally push the binaries to a mirror."""
        env_dir = self.create(request, build_dir)
        log_path = build_dir / "build.log"
        lock = self.concretize(env_dir, log_path)
        self.install(env_dir, log_path)
        if push_to:
            self.buildcache_push(env_dir, push_to, log_path)
        return SpackBuild(env_dir, lock, lock_hash(lock), build_dir / "view", log_path)
