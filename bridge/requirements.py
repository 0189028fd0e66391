"""What a task asks for, read once at submission into one typed object.

The TES ``resources`` block and the broker's own ``backend_parameters`` become a
:class:`Requirements`, validated when the task is created: an unknown CPU
microarchitecture, a negative size or an unknown ``bridge.*`` key is a 400 naming the
field, not a SYSTEM_ERROR minutes later.  The router, the broker and the views read
this object (kept in the stored document under ``_requirements``), never the raw
document.

The broker's parameters live in one namespace, ``bridge.*``; the plain names of
earlier versions are accepted as aliases.  TES says keys are case-insensitive.  Keys
outside the namespace are ignored with a warning in the task's ``system_logs``,
unless the task sets ``backend_parameters_strict`` (then a 400, as TES says).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bridge.agent.task import RUNTIME_NAMES
from bridge.tes import InvalidTask

RUNTIMES = RUNTIME_NAMES
ENV_FORMATS = ("spack", "container")


class BadParameter(ValueError):
    """A parameter's value is unusable; the message says what is expected."""


@dataclass(frozen=True)
class EnvRequest:
    """Software the task needs built ("say what, not how"); empty means none."""

    spack: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    format: str | None = None  # "spack" | "container"; None: chosen by what is asked

    def __bool__(self) -> bool:
        return bool(self.spack or self.pip or self.apt)


@dataclass(frozen=True)
class Requirements:
    cpus: int = 1
    ram_gb: float | None = None
    disk_gb: float | None = None
    gpus: int = 0
    wall_time_s: int | None = None
    arch: str | None = None  # archspec name: the task needs at least this CPU
    preemptible: bool = False
    target: str | None = None
    retries: int | None = None  # None: the broker's default
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    container_runtime: str | None = None
    zones: tuple[str, ...] = ()
    env: EnvRequest = field(default_factory=EnvRequest)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["zones"] = list(self.zones)
        out["env"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["env"].items()}
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Requirements:
        env = doc.get("env") or {}
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known["zones"] = tuple(doc.get("zones") or ())
        known["env"] = EnvRequest(
            spack=tuple(env.get("spack") or ()),
            pip=tuple(env.get("pip") or ()),
            apt=tuple(env.get("apt") or ()),
            format=env.get("format"),
        )
        return cls(**known)

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> Requirements:
        """The requirements stored with a task (or read from an older document)."""
        stored = document.get("_requirements")
        if isinstance(stored, Mapping):
            return cls.from_json(stored)
        return read_requirements(dict(document))[0]


# -- the accepted parameters --------------------------------------------------------


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise BadParameter(f"must be a non-negative integer, got {value!r}")
    return number


_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(?:(\d+):)?(\d+)$")


def _duration(value: str) -> int:
    """Seconds, or Slurm's ``[D-]HH:MM:SS`` / ``MM:SS``."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if not match or ":" not in text:
        raise BadParameter(f"must be seconds or [D-]HH:MM:SS, got {value!r}")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def _arch(value: str) -> str:
    import archspec.cpu

    name = value.strip()
    if name not in archspec.cpu.TARGETS:
        close = sorted(t for t in archspec.cpu.TARGETS if t.startswith(name[:3]))[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise BadParameter(f"unknown CPU microarchitecture {name!r} (archspec names{hint})")
    return name


def _runtime(value: str) -> str:
    if value not in RUNTIMES:
        raise BadParameter(f"must be one of {', '.join(RUNTIMES)}, got {value!r}")
    return value


def _env_format(value: str) -> str:
    if value not in ENV_FORMATS:
        raise BadParameter(f"must be one of {', '.join(ENV_FORMATS)}, got {value!r}")
    return value


def _word(value: str) -> str:
    text = value.strip()
    if not text or any(c.isspace() or c in "\"'\n" for c in text):
        raise BadParameter(f"must be one word without quotes, got {value!r}")
    return text


def _packages(value: str) -> tuple[str, ...]:
    """A list of packages or specs: separated by commas or new lines."""
    items = tuple(p.strip() for p in re.split(r"[,\n]", value) if p.strip())
    if not items:
        raise BadParameter("must name at least one package")
    return items


@dataclass(frozen=True)
class Parameter:
    field: str  # Requirements field (or "env.<part>")
    help: str
    parse: Callable[[str], Any]
    aliases: tuple[str, ...] = ()


PARAMETERS: dict[str, Parameter] = {
    "bridge.target": Parameter(
        "target", "name of the target to run on (skips routing)", _word, ("target",)
    ),
    "bridge.arch": Parameter(
        "arch",
        "minimum CPU microarchitecture (archspec name, e.g. x86_64_v3, zen2)",
        _arch,
        ("microarchitecture", "arch"),
    ),
    "bridge.gpus": Parameter("gpus", "number of GPUs", _count, ("gpus",)),
    "bridge.retries": Parameter(
        "retries", "retries after a preemption or a lost job", _count, ("max_retries", "retries")
    ),
    "bridge.wall_time": Parameter(
        "wall_time_s", "wall-time limit: seconds or [D-]HH:MM:SS", _duration, ("wall_time",)
    ),
    "bridge.partition": Parameter("partition", "Slurm partition", _word, ("partition",)),
    "bridge.account": Parameter("account", "Slurm account", _word, ("account",)),
    "bridge.qos": Parameter("qos", "Slurm quality of service", _word, ("qos",)),
    "bridge.constraint": Parameter(
        "constraint", "Slurm constraint, e.g. a node feature", str.strip, ("constraint",)
    ),
    "bridge.container_runtime": Parameter(
        "container_runtime", f"one of {', '.join(RUNTIMES)}", _runtime, ("container_runtime",)
    ),
    "bridge.spack": Parameter("env.spack", "Spack specs to build for the target", _packages),
    "bridge.pip": Parameter("env.pip", "pip packages for a built container image", _packages),
    "bridge.apt": Parameter("env.apt", "Debian packages for a built container image", _packages),
    "bridge.env_format": Parameter(
        "env.format", "how the environment is built: spack or container", _env_format
    ),
}
ALIASES: dict[str, str] = {a: key for key, p in PARAMETERS.items() for a in p.aliases}


def accepted_parameters() -> list[str]:
    """What service-info publishes in ``tesResources_backend_parameters``."""
    return [*PARAMETERS, *ALIASES]


def read_requirements(doc: dict[str, Any]) -> tuple[Requirements, dict[str, str], list[str]]:
    """``(requirements, the accepted parameters (keys lower-cased), warnings)``.

    Raises :class:`~bridge.tes.InvalidTask` naming the field of the first bad value.
    """
    resources = doc.get("resources") or {}
    params: Mapping[str, Any] = resources.get("backend_parameters") or {}
    strict = bool(resources.get("backend_parameters_strict"))
    values: dict[str, Any] = {}
    env: dict[str, Any] = {}
    kept: dict[str, str] = {}
    warnings: list[str] = []
    for raw_key, raw_value in params.items():
        key = raw_key.lower()
        canonical = key if key in PARAMETERS else ALIASES.get(key)
        where = f"resources.backend_parameters.{raw_key}"
        if canonical is None:
            if strict or key.startswith("bridge."):
                why = (
                    "unknown bridge.* parameter"
                    if key.startswith("bridge.")
                    else ("unsupported backend parameter (backend_parameters_strict is true)")
                )
                raise InvalidTask(
                    [{"field": where, "message": f"{why}; accepted: {', '.join(PARAMETERS)}"}]
                )
            warnings.append(f"backend parameter {raw_key!r} is not supported and was ignored")
            continue
        spec = PARAMETERS[canonical]
        try:
            value = spec.parse(str(raw_value))
        except BadParameter as err:
            raise InvalidTask([{"field": where, "message": str(err)}]) from err
        if spec.field.startswith("env."):
            env[spec.field[4:]] = value
        else:
            values[spec.field] = value
        kept[key] = str(raw_value)
    cpus = resources.get("cpu_cores") or 1
    req = Requirements(
        cpus=int(cpus),
        ram_gb=resources.get("ram_gb"),
        disk_gb=resources.get("disk_gb"),
        preemptible=bool(resources.get("preemptible")),
        zones=tuple(resources.get("zones") or ()),
        env=EnvRequest(**env),
        **values,
    )
    if req.env.format == "spack" and not req.env.spack:
        raise InvalidTask(
            [
                {
                    "field": "resources.backend_parameters.bridge.env_format",
                    "message": "format 'spack' needs bridge.spack specs",
                }
            ]
        )
    return req, kept, warnings


def with_defaults(req: Requirements, **defaults: Any) -> Requirements:
    """``req`` with the fields it leaves open filled from ``defaults``."""
    return replace(req, **{k: v for k, v in defaults.items() if getattr(req, k) is None})
