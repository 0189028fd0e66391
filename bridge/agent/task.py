"""The parts of ``task.json`` the agent acts on, as typed values.

``task.json`` holds ``{"task": <TES task, FULL view>, "runtime": {...}}`` (see
``docs/workdir.md``).  The broker validated the task against the TES schema when it was
submitted, so this module only checks what the agent relies on (absolute paths, an
argv per executor, a url per output) and reports anything else as a
:class:`TaskFileError` that ends the attempt as ``SYSTEM_ERROR``.  Unknown fields are
ignored: the FULL view carries logs, tags and state the agent does not need.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.agent.errors import TaskFileError

WILDCARD_CHARS = frozenset("*?[")
RUNTIME_NAMES = ("auto", "none", "docker", "podman", "charliecloud", "sandbox")


def has_wildcard(path: str) -> bool:
    return any(c in WILDCARD_CHARS for c in path)


def _abs_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise TaskFileError(f"{what} must be an absolute path, got {value!r}")
    norm = posixpath.normpath(value)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if ".." in norm.split("/"):
        raise TaskFileError(f"{what} must not contain '..': {value!r}")
    return norm


def _opt_abs_path(value: object, what: str) -> str | None:
    return None if value in (None, "") else _abs_path(value, what)


@dataclass(frozen=True)
class Input:
    path: str
    url: str | None = None
    content: str | None = None
    directory: bool = False
    name: str = ""
    streamable: bool = False


@dataclass(frozen=True)
class Output:
    path: str
    url: str
    directory: bool = False
    path_prefix: str | None = None
    name: str = ""

    @property
    def wildcard(self) -> bool:
        return has_wildcard(self.path)


@dataclass(frozen=True)
class Executor:
    image: str
    command: tuple[str, ...]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ignore_error: bool = False


@dataclass(frozen=True)
class Task:
    id: str
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    executors: tuple[Executor, ...]
    volumes: tuple[str, ...]


@dataclass(frozen=True)
class RuntimeSettings:
    container_runtime: str = "auto"
    api_url: str | None = None
    attempt: int = 1
    scratch_dir: str | None = None
    podman_runtime: str | None = "runc"
    extra: Mapping[str, Any] = field(default_factory=dict)


def _parse_input(i: int, raw: Mapping[str, Any]) -> Input:
    what = f"inputs[{i}].path"
    path = _abs_path(raw.get("path"), what)
    content = raw.get("content")
    url = raw.get("url")
    if content in (None, "") and not url:
        raise TaskFileError(f"inputs[{i}] ({path}) has neither url nor content")
    return Input(
        path=path,
        url=url or None,
        content=content if content not in (None, "") else None,
        directory=raw.get("type") == "DIRECTORY",
        name=str(raw.get("name") or ""),
        streamable=raw.get("streamable") is True,
    )


def _parse_output(i: int, raw: Mapping[str, Any]) -> Output:
    path = _abs_path(raw.get("path"), f"outputs[{i}].path")
    url = raw.get("url")
    if not url or not isinstance(url, str):
        raise TaskFileError(f"outputs[{i}] ({path}) has no url")
    prefix = None
    if has_wildcard(path):
        prefix = _opt_abs_path(raw.get("path_prefix"), f"outputs[{i}].path_prefix")
        if prefix is None:
            raise TaskFileError(f"outputs[{i}] ({path}) has wildcards but no path_prefix")
    return Output(
        path=path,
        url=url,
        directory=raw.get("type") == "DIRECTORY",
        path_prefix=prefix,
        name=str(raw.get("name") or ""),
    )


def _parse_executor(i: int, raw: Mapping[str, Any]) -> Executor:
    command = raw.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise TaskFileError(f"executors[{i}].command must be a non-empty list of strings")
    env = raw.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise TaskFileError(f"executors[{i}].env must map names to strings")
    return Executor(
        image=str(raw.get("image") or ""),
        command=tuple(command),
        workdir=_opt_abs_path(raw.get("workdir"), f"executors[{i}].workdir"),
        stdin=_opt_abs_path(raw.get("stdin"), f"executors[{i}].stdin"),
        stdout=_opt_abs_path(raw.get("stdout"), f"executors[{i}].stdout"),
        stderr=_opt_abs_path(raw.get("stderr"), f"executors[{i}].stderr"),
        env=dict(env),
        ignore_error=bool(raw.get("ignore_error", False)),
    )


def parse_task(raw: Mapping[str, Any]) -> Task:
    """A :class:`Task` from the ``task`` object of ``task.json``."""
    if not isinstance(raw, Mapping):
        raise TaskFileError("task.json: 'task' must be an object")
    executors = tuple(_parse_executor(i, e) for i, e in enumerate(raw.get("executors") or []))
    if not executors:
        raise TaskFileError("the task has no executors")
    volumes = tuple(_abs_path(v, f"volumes[{i}]") for i, v in enumerate(raw.get("volumes") or []))
    return Task(
        id=str(raw.get("id") or "task"),
        inputs=tuple(_parse_input(i, x) for i, x in enumerate(raw.get("inputs") or [])),
        outputs=tuple(_parse_output(i, x) for i, x in enumerate(raw.get("outputs") or [])),
        executors=executors,
        volumes=volumes,
    )


def parse_runtime(raw: Mapping[str, Any] | None) -> RuntimeSettings:
    """:class:`RuntimeSettings` from the ``runtime`` object of ``task.json``."""
    raw = dict(raw or {})
    name = str(raw.pop("container_runtime", None) or "auto")
    if name not in RUNTIME_NAMES:
        raise TaskFileError(
            f"runtime.container_runtime must be one of {RUNTIME_NAMES}, got {name!r}"
        )
    try:
        attempt = int(raw.pop("attempt", 1) or 1)
    except (TypeError, ValueError) as err:
        raise TaskFileError("runtime.attempt must be an integer") from err
    podman_runtime = raw.pop("podman_runtime", "runc")
    return RuntimeSettings(
        container_runtime=name,
        api_url=raw.pop("api_url", None) or None,
        attempt=attempt,
        scratch_dir=raw.pop("scratch_dir", None) or None,
        podman_runtime=podman_runtime or None,
        extra=raw,
    )
