"""Backends as plug-ins: one entry per kind, imported only when a target uses it.

Each kind names two modules: a light *settings* module holding its pydantic model
(what ``bridge.toml`` may say for a target of that kind, and nothing else), and the
*backend* module, which may need heavy dependencies (``distributed``, ``boto3``,
``paramiko``) and is imported lazily, so a site without them still starts.  A backend
module exports::

    CAPABILITIES: Capabilities
    def create(name: str, settings: <its settings model>, env: Mapping[str, str]) -> Backend

Adding a backend is one entry in :data:`KINDS` and those two modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from schedulers.base import Backend, Capabilities


class UnknownKind(LookupError):
    """No backend of that kind exists."""


class BackendNotInstalled(ImportError):
    """The backend's optional dependencies are missing; the message says which extra."""


@dataclass(frozen=True)
class Kind:
    name: str
    settings: str  # "module:Class" of the settings model (light to import)
    module: str  # the backend module (imported lazily)
    extra: str  # the pip extra that installs what the module needs


KINDS: dict[str, Kind] = {
    "local": Kind("local", "schedulers.local_settings:LocalSettings", "schedulers.local", ""),
    "slurm": Kind("slurm", "schedulers.slurm_settings:SlurmSettings", "schedulers.slurm", "slurm"),
    "dask": Kind(
        "dask", "schedulers.dask_settings:DaskSettings", "schedulers.dask_cluster", "dask"
    ),
    "aws_batch": Kind(
        "aws_batch", "schedulers.aws_batch_settings:AwsBatchSettings", "schedulers.aws_batch", "aws"
    ),
}


def kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"unknown target kind {name!r}; known: {', '.join(KINDS)}") from None


def settings_model(name: str) -> type[BaseModel]:
    module_name, _, cls = kind(name).settings.partition(":")
    model = getattr(importlib.import_module(module_name), cls)
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def backend_module(name: str) -> ModuleType:
    entry = kind(name)
    try:
        return importlib.import_module(entry.module)
    except ImportError as err:
        extra = f"pip install 'converged-bridge[{entry.extra}]'" if entry.extra else ""
        raise BackendNotInstalled(
            f"the {name} backend cannot be loaded ({err}){'; ' + extra if extra else ''}"
        ) from err


def capabilities(name: str) -> Capabilities:
    declared = getattr(backend_module(name), "CAPABILITIES", None)
    return declared if isinstance(declared, Capabilities) else Capabilities()


def create(target: str, settings: Any, env: Mapping[str, str]) -> Backend:
    backend: Backend = backend_module(settings.kind).create(target, settings, env)
    return backend
