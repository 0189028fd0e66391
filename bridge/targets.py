"""Build a backend for each configured target (lazily importing what it needs)."""

from __future__ import annotations

from pathlib import Path

from bridge.config import ConfigError, TargetConfig
from schedulers.base import Backend
from schedulers.transport import CommandRunner, LocalRunner


def make_runner(cfg: TargetConfig) -> CommandRunner:
    if cfg.runner == "local":
        return LocalRunner(env=cfg.env)
    if not cfg.host:
        raise ConfigError(f"target {cfg.name}: runner 'ssh' needs host")
    if not cfg.known_hosts:
        raise ConfigError(
            f"target {cfg.name}: runner 'ssh' needs known_hosts (host keys are verified)"
        )
    try:
        from schedulers.transport import SSHRunner
    except ImportError as err:
        raise ConfigError(
            f"target {cfg.name}: the SSH runner needs paramiko: pip install 'converged-bridge[slurm]'"
        ) from err
    return SSHRunner(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        key_filename=str(Path(cfg.key_file).expanduser()) if cfg.key_file else None,
        known_hosts=str(Path(cfg.known_hosts).expanduser()),
        env=cfg.env,
    )


def make_backend(cfg: TargetConfig) -> Backend:
    if cfg.kind == "local":
        from schedulers.local import LocalBackend

        return LocalBackend(name=cfg.name, max_parallel=cfg.max_parallel)
    if cfg.kind == "slurm":
        from schedulers.slurm import SlurmBackend

        return SlurmBackend(
            name=cfg.name,
            runner=make_runner(cfg),
            partition=cfg.partition,
            account=cfg.account,
            qos=cfg.qos,
        )
    if cfg.kind == "dask":
        from schedulers.dask_settings import DaskSettings

        try:
            from schedulers.dask_cluster import create
        except ImportError as err:
            raise ConfigError(
                f"target {cfg.name}: the Dask backend needs distributed: "
                "pip install 'converged-bridge[dask]'"
            ) from err
        settings = cfg.dask or DaskSettings(address=cfg.address)
        return create(cfg.name, settings)
    raise ConfigError(f"target {cfg.name}: kind {cfg.kind!r} is not available in this version")


def make_backends(targets: list[TargetConfig]) -> dict[str, Backend]:
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"target names must be unique: {names}")
    return {t.name: make_backend(t) for t in targets}
