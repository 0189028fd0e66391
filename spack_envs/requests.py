"""What a task asks for: software, for one CPU target, as a Spack environment or an image.

An :class:`EnvRequest` is the whole description of one build.  Two tasks that ask for
the same software on the same target share one build, so the request has a *content
key* (:attr:`EnvRequest.key`): a hash of everything that changes the result -- the
Spack specs, the pip and Debian package lists, the base image, the target, the format
and the Spack version -- and of nothing else.  Order and duplicates in the package
lists do not change the key (the builders install them as one set).

Requests are read from a task's ``resources.backend_parameters`` by
:func:`request_from_parameters`: ``bridge.spack`` (Spack specs), ``bridge.pip``,
``bridge.apt`` (package names), ``bridge.env_format`` (``spack`` | ``container``) and
``bridge.arch`` (a target that overrides the placement's).  Lists are given either as
JSON-style lists or as comma/whitespace separated strings.  A malformed value raises
:class:`BadEnvRequest` naming the parameter.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EnvFormat = Literal["spack", "container"]
FORMATS: tuple[str, ...] = ("spack", "container")

PARAMETERS = {
    "bridge.spack": "Spack specs to build for the task's target (space or comma separated)",
    "bridge.pip": "pip packages to install in a container image built for the target",
    "bridge.apt": "Debian packages to install in a container image built for the target",
    "bridge.env_format": "spack (an activated Spack view) or container (an image)",
    "bridge.arch": "archspec CPU target to build for, instead of the placement's",
}
"""The task parameters this module reads, with what each means (for service-info)."""

# A package name or spec token: letters, digits and the punctuation specs and version
# constraints use.  No shell metacharacters, no whitespace inside one item.
_ITEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-@%=:^~<>!,/]*$")
_SPACK_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-@%=:^~/ ]*$")


class BadEnvRequest(ValueError):
    """A request parameter is malformed; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class EnvRequest:
    """One build: software for one target, in one format."""

    target: str
    format: EnvFormat = "container"
    specs: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    base_image: str = ""
    spack_version: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise BadEnvRequest("bridge.env_format", f"must be one of {FORMATS}")
        if self.format == "spack" and (self.pip or self.apt):
            raise BadEnvRequest(
                "bridge.env_format", "pip and apt packages need the container format"
            )
        if self.format == "spack" and not self.specs:
            raise BadEnvRequest("bridge.spack", "the spack format needs at least one spec")
        for spec in self.specs:
            if not _SPACK_SPEC.match(spec):
                raise BadEnvRequest("bridge.spack", f"not a Spack spec: {spec!r}")
        for name, items in (("bridge.pip", self.pip), ("bridge.apt", self.apt)):
            for item in items:
                if not _ITEM.match(item):
                    raise BadEnvRequest(name, f"not a package name: {item!r}")

    def canonical(self) -> dict[str, Any]:
        """Everything that changes the build, in a stable form."""
        return {
            "target": self.target,
            "format": self.format,
            "specs": sorted(set(self.specs)),
            "pip": sorted(set(self.pip)),
            "apt": sorted(set(self.apt)),
            "base_image": self.base_image,
            "spack_version": self.spack_version if self.specs else "",
            "extra": dict(sorted(self.extra.items())),
        }

    @property
    def key(self) -> str:
        """The content key: equal requests, and only those, share it."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def describe(self) -> str:
        """A short human description (``zlib bzip2 for zen3, spack``)."""
        parts = [*self.specs, *(f"pip:{p}" for p in self.pip), *(f"apt:{a}" for a in self.apt)]
        return f"{' '.join(parts) or 'base image'} for {self.target}, {self.format}"


def split_items(value: Any, field_name: str) -> tuple[str, ...]:
    """A list parameter: a list of strings, or one string split on commas/whitespace."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise BadEnvRequest(field_name, f"not a JSON list: {err}") from err
        else:
            return tuple(item for item in re.split(r"[,\s]+", text) if item)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise BadEnvRequest(field_name, "must be a string or a list of strings")


def split_specs(value: Any) -> tuple[str, ...]:
    """Spack specs: a list, or a comma-separated string (a spec may contain spaces)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str) and not value.strip().startswith("["):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return split_items(value, "bridge.spack")


def wants_environment(params: Mapping[str, Any]) -> bool:
    """Whether the parameters ask for a built environment at all."""
    return any(
        params.get(k) not in (None, "") for k in ("bridge.spack", "bridge.pip", "bridge.apt")
    )


def request_from_parameters(
    params: Mapping[str, Any],
    *,
    placement_target: str,
    base_image: str = "",
    spack_version: str = "",
) -> EnvRequest | None:
    """The request in a task's ``backend_parameters``, or ``None`` if it asks for none.

    ``placement_target`` is the microarchitecture of the target the task was placed
    on; ``bridge.arch`` overrides it.  The default format is ``spack`` when only Spack
    specs are given, ``container`` otherwise.
    """
    if not wants_environment(params):
        return None
    specs = split_specs(params.get("bridge.spack"))
    pip = split_items(params.get("bridge.pip"), "bridge.pip")
    apt = split_items(params.get("bridge.apt"), "bridge.apt")
    fmt = str(
        params.get("bridge.env_format") or ("spack" if specs and not (pip or apt) else "container")
    )
    if fmt not in FORMATS:
        raise BadEnvRequest("bridge.env_format", f"must be one of {FORMATS}, got {fmt!r}")
    target = str(params.get("bridge.arch") or placement_target)
    return EnvRequest(
        target=target,
        format=fmt,  # type: ignore[arg-type]
        specs=specs,
        pip=pip,
        apt=apt,
        base_image=base_image if fmt == "container" else "",
        spack_version=spack_version,
    )
