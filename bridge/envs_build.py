"""One build, start to end: a request in, an artifact (or a failure with its log) out.

Used by the broker (in a worker thread, for tasks) and by ``bridge envs build``.  The
container format builds an image with :class:`spack_envs.containers.ImageBuilder` and
pushes it to the configured registry; the spack format builds a Spack environment with
:class:`spack_envs.spack.SpackBuilder` through a command runner for the target (on this
machine for a local target, in a Slurm job on the target's own nodes otherwise).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.envs_config import EnvsConfig
from spack_envs.containers import ImageBuilder, ImageBuildError
from spack_envs.requests import EnvRequest
from spack_envs.spack import (
    CommandResult,
    CommandRunner,
    LocalRunner,
    SpackBuilder,
    SpackError,
    find_spack,
)


class BuildFailed(RuntimeError):
    """The build failed; ``log`` is everything it printed."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class SlurmRunner:
    """Runs a build command as a Slurm job step on a node of the target (``srun``)."""

    partition: str | None = None
    env: Mapping[str, str] | None = None
    inner: CommandRunner = field(default_factory=LocalRunner)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        srun = ["srun", "--nodes=1", "--ntasks=1", "--job-name=bridge-env-build"]
        if self.partition:
            srun.append(f"--partition={self.partition}")
        if cwd:
            srun.append(f"--chdir={cwd}")
        return self.inner.run(
            [*srun, "--", *argv], cwd=cwd, env={**(self.env or {}), **(env or {})}, timeout=timeout
        )


def spack_version(config: EnvsConfig) -> str:
    """The Spack version builds would use ('' when there is no Spack here)."""
    env = _spack_env(config)
    if (config.spack or find_spack(env)) is None:
        return ""
    try:
        return SpackBuilder(spack=config.spack, env=env, timeout=120).version()
    except SpackError:
        return ""


def _spack_env(config: EnvsConfig) -> dict[str, str]:
    import os

    return {**os.environ, **config.env}


def build(
    request: EnvRequest,
    config: EnvsConfig,
    build_dir: Path,
    runner: CommandRunner | None = None,
) -> dict[str, Any]:
    """Build ``request`` in ``build_dir``; the artifact (JSON-able) or :class:`BuildFailed`."""
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    log_path = build_dir / "build.log"
    try:
        if request.format == "container":
            images = ImageBuilder(
                engine=config.engine,
                registry=config.registry,
                repository=config.repository,
                runner=runner,
                env=config.env,
                timeout=config.build_timeout_s,
                ca_bundle=config.build_ca_bundle,
            )
            image = images.build(request, request.base_image or config.base_image, build_dir)
            return {
                "format": "container",
                "image": image.pinned,
                "reference": image.reference,
                "digest": image.digest,
                "target": request.target,
            }
        spack = SpackBuilder(
            runner=runner,
            spack=config.spack,
            env=_spack_env(config),
            timeout=config.build_timeout_s,
        )
        result = spack.build(request, build_dir, push_to=config.spack_mirror)
        return {
            "format": "spack",
            "view": str(result.view),
            "env_dir": str(result.env_dir),
            "lock": str(result.lock_path),
            "lock_sha256": result.lock_sha256,
            "target": request.target,
        }
    except (ImageBuildError, SpackError, OSError) as err:
        log = log_path.read_text(errors="replace") if log_path.is_file() else ""
        raise BuildFailed(str(err), log or str(err)) from err
