"""GA4GH TES v1.1 request documents, validated.

Only what a client sends is modelled here (responses are built as plain dicts by
:mod:`bridge.views`, which is faster and keeps the view rules in one place).
Types are strict: ``"cpu_cores": "4"`` is an error, not a silent coercion.  Every
error names the field, e.g. ``executors[0].stdout``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_CONTENT_BYTES = 128 * 1024
WILDCARD = re.compile(r"[*?\[]")

_Str = Annotated[str, Field(max_length=64 * 1024)]


def _absolute(value: str | None) -> str | None:
    if value is not None and not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


def _file_type(value: str) -> str:
    if value not in ("FILE", "DIRECTORY"):
        raise ValueError("must be FILE or DIRECTORY")
    return value


class _Doc(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Executor(_Doc):
    image: _Str
    command: list[_Str] = Field(min_length=1)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None

    _paths = field_validator("workdir", "stdin", "stdout", "stderr")(_absolute)

    @field_validator("image")
    @classmethod
    def _image_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a container image")
        return value


class Input(_Doc):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: str = "FILE"
    content: str | None = None
    streamable: bool | None = None

    _path = field_validator("path")(_absolute)

    _type = field_validator("type")(_file_type)

    @model_validator(mode="after")
    def _url_xor_content(self) -> Input:
        if self.content is not None and self.url:
            raise ValueError("set either url or content, not both")
        if self.content is None and not self.url:
            raise ValueError("url is required unless content is set")
        if self.content is not None:
            if len(self.content.encode()) > MAX_CONTENT_BYTES:
                raise ValueError(f"content is larger than {MAX_CONTENT_BYTES} bytes")
            if self.type == "DIRECTORY":
                raise ValueError("content cannot be a DIRECTORY")
        return self


class Output(_Doc):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: str = "FILE"

    _path = field_validator("path", "path_prefix")(_absolute)

    _type = field_validator("type")(_file_type)

    @model_validator(mode="after")
    def _prefix_for_wildcards(self) -> Output:
        if WILDCARD.search(self.path) and not self.path_prefix:
            raise ValueError("path_prefix is required when path contains wildcards")
        return self


class Resources(_Doc):
    cpu_cores: int | None = Field(default=None, ge=1, le=1_000_000)
    preemptible: bool | None = None
    ram_gb: float | None = Field(default=None, ge=0)
    disk_gb: float | None = Field(default=None, ge=0)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class TaskRequest(_Doc):
    name: str | None = Field(default=None, max_length=1024)
    description: str | None = None
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    resources: Resources | None = None
    executors: list[Executor] = Field(min_length=1)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None

    @field_validator("volumes")
    @classmethod
    def _absolute_volumes(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            _absolute(item)
        return value


class InvalidTask(ValueError):
    """The submitted document is not a valid TES task.  ``errors`` name each field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first['field']}: {first['message']}{more}")


def field_path(loc: tuple[Any, ...]) -> str:
    """``('executors', 0, 'stdout')`` -> ``executors[0].stdout``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def errors_from(err: ValidationError) -> list[dict[str, str]]:
    result = []
    for item in err.errors(include_url=False):
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(p for p in item.get("loc", ()) if p not in ("function-after",))
        result.append({"field": field_path(loc), "message": message})
    return result


def parse_task(raw: bytes | str | dict[str, Any]) -> TaskRequest:
    """Validate a task document; raise :class:`InvalidTask` naming the fields."""
    try:
        if isinstance(raw, dict):
            raw = json.dumps(raw)
        return TaskRequest.model_validate_json(raw)
    except ValidationError as err:
        raise InvalidTask(errors_from(err)) from err
