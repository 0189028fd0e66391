"""Build a backend for each configured target through the plug-in registry."""

from __future__ import annotations

from bridge.config import ConfigError, TargetConfig
from schedulers import registry
from schedulers.base import Backend


def make_backend(cfg: TargetConfig) -> Backend:
    try:
        return registry.create(cfg.name, cfg.backend, cfg.env)
    except registry.BackendNotInstalled as err:
        raise ConfigError(f"target {cfg.name}: {err}") from err


def make_backends(targets: list[TargetConfig]) -> dict[str, Backend]:
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"target names must be unique: {names}")
    return {t.name: make_backend(t) for t in targets}
