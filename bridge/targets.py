"""Build a backend for each configured target through the plug-in registry."""

from __future__ import annotations

from bridge.config import ConfigError, Settings, TargetConfig
from schedulers import registry
from schedulers.base import Backend
from schedulers.transport import CommandRunner, LocalRunner


def make_backend(cfg: TargetConfig) -> Backend:
    try:
        return registry.create(cfg.name, cfg.backend, cfg.env)
    except registry.BackendNotInstalled as err:
        raise ConfigError(f"target {cfg.name}: {err}") from err


def make_runner(cfg: TargetConfig) -> CommandRunner:
    """Where a target's commands run: a Slurm target's login node (here or over SSH);
    this machine for every other kind."""
    if cfg.kind != "slurm":
        return LocalRunner(env=cfg.env)
    from schedulers.slurm import make_runner as slurm_runner

    return slurm_runner(cfg.backend, cfg.env)


def make_backends(targets: list[TargetConfig]) -> dict[str, Backend]:
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"target names must be unique: {names}")
    return {t.name: make_backend(t) for t in targets}


def check_work_urls(settings: Settings) -> None:
    """Refuse a path ``work_url`` for a target whose nodes see work only through object
    storage (its backend module declares ``object_store_workdir``)."""
    for cfg in settings.targets:
        try:
            needs_s3 = registry.capabilities(cfg.kind).object_store_workdir
        except registry.BackendNotInstalled:
            continue  # make_backends says so, naming the extra
        url = cfg.work_url or settings.effective_work_url
        if needs_s3 and not url.startswith("s3://"):
            raise ConfigError(
                f"target {cfg.name}: work_url must be an s3:// URL (its nodes reach the work "
                f"directory only through object storage), not {url!r}"
            )
