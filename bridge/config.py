"""One typed settings object, read from ``bridge.toml`` and ``BRIDGE_*`` variables.

Precedence, lowest first: built-in defaults, the TOML file (``BRIDGE_CONFIG``, else
``./bridge.toml``, else ``<data_dir>/bridge.toml``), then environment variables
for the scalar settings (``BRIDGE_DATA_DIR``, ``BRIDGE_DATABASE_URL``,
``BRIDGE_HOST``, ``BRIDGE_PORT``, ``BRIDGE_WORK_URL``, ``BRIDGE_WORK_BUCKET``).

With no file at all the embedded defaults apply: SQLite in the data directory,
one ``local`` target, and a local work directory -- or an S3 bucket when object
storage is configured through the standard AWS variables (``AWS_ENDPOINT_URL`` or
``BRIDGE_WORK_BUCKET``).
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.envs_config import EnvsConfig
from bridge.routing_policy import Budget, RoutingPolicy, TargetRouting
from schedulers import registry

# the agent's runtime names (bridge.agent.task.RUNTIME_NAMES; a test keeps them equal)
ContainerRuntime = Literal["auto", "none", "docker", "podman", "charliecloud", "sandbox"]
FusionMode = Literal["auto", "mount", "stage", "off"]


class ConfigError(ValueError):
    """The configuration file or a variable is invalid; the message names it."""


class TargetConfig(BaseModel):
    """One ``[[targets]]`` table: the fields every target has, and ``backend``: the
    settings of its kind, validated by that backend's own model (so a Slurm target
    cannot carry Batch fields).  In TOML both are written flat in one table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    kind: str
    container_runtime: ContainerRuntime = "auto"
    # /fusion/s3/<bucket>/<key> in tasks: a FUSE mount where possible (auto), always
    # (mount), copy-staging (stage, for nodes without FUSE) or not at all (off)
    fusion: FusionMode = "auto"
    fusion_cache_gb: float = Field(default=2.0, ge=0)
    agent_command: list[str] | None = None  # how to start bridge-agent on the node
    max_cpus: int | None = Field(default=None, ge=1)
    max_ram_gb: float | None = Field(default=None, gt=0)
    cost_per_cpu_hour: float = Field(default=0.0, ge=0)
    allowed_users: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)  # for the backend's commands and jobs
    routing: TargetRouting = Field(default_factory=lambda: TargetRouting())  # prices, burst, region
    work_url: str | None = None  # where this target's nodes see the work directory
    backend: Any = None

    @model_validator(mode="before")
    @classmethod
    def _split_backend_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "kind" not in data:
            return data
        common = {k: v for k, v in data.items() if k in cls.model_fields}
        own = {k: v for k, v in data.items() if k not in cls.model_fields}
        nested = own.pop(str(data["kind"]), None)  # [targets.<kind>] is accepted too
        if isinstance(nested, BaseModel) and not own:
            return {**common, "backend": nested}
        if isinstance(nested, dict):
            own = {**nested, **own}
        if isinstance(data.get("backend"), BaseModel):
            return data
        try:
            model = registry.settings_model(str(data["kind"]))
        except registry.UnknownKind as err:
            raise ValueError(str(err)) from err
        common["backend"] = model.model_validate({**own, "kind": data["kind"]})
        return common

    def setting(self, key: str, default: Any = None) -> Any:
        """A backend setting by name, or ``default`` for kinds that do not have it."""
        return getattr(self.backend, key, default)


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    token_sha256: str
    admin: bool = False


class BrokerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    poll_interval_s: float = 0.5
    # After a nudge, wait this long so tasks arriving together are dispatched
    # together (and become one array job where the target has arrays).
    gather_s: float = 0.05
    submit_concurrency: int = 4  # submissions in flight per target when not batching
    lease_s: float = 30.0
    max_retries: int = 1
    claim_batch: int = 200
    # An attempt placed but not recorded as submitted is only submitted again after
    # this long (a submission by a broker that just died may still be in flight).
    adopt_settle_s: float = 20.0
    broker_id: str | None = None


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    work_url: str | None = None
    work_bucket: str | None = None
    public_url: str | None = None  # how agents reach the API (progress posts)
    max_body_bytes: int = 8 * 1024 * 1024
    keep_alive_s: int = 75  # longer than any client's idle keep-alive
    targets: list[TargetConfig] = Field(
        default_factory=lambda: [TargetConfig(name="local", kind="local")]
    )
    users: list[UserConfig] = Field(default_factory=list)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    routing: RoutingPolicy = Field(default_factory=lambda: RoutingPolicy())
    budgets: list[Budget] = Field(default_factory=list)
    envs: EnvsConfig = Field(default_factory=EnvsConfig)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'bridge.db'}"

    @property
    def effective_work_url(self) -> str:
        if self.work_url:
            return self.work_url.rstrip("/")
        if self.work_bucket:
            return f"s3://{self.work_bucket}/work"
        return str(self.data_dir / "work")

    @property
    def effective_broker_id(self) -> str:
        return self.broker.broker_id or f"{socket.gethostname()}:{self.data_dir}"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.users)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "converged-bridge"


_ENV_SCALARS = {
    "BRIDGE_DATA_DIR": "data_dir",
    "BRIDGE_DATABASE_URL": "database_url",
    "BRIDGE_HOST": "host",
    "BRIDGE_PORT": "port",
    "BRIDGE_WORK_URL": "work_url",
    "BRIDGE_WORK_BUCKET": "work_bucket",
    "BRIDGE_PUBLIC_URL": "public_url",
}


def load_settings(
    config_file: Path | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings; ``overrides`` (e.g. from CLI flags) win over everything."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    for var, key in _ENV_SCALARS.items():
        if env.get(var):
            values[key] = env[var]
    path = config_file or _find_config(env, values.get("data_dir"))
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: {err}") from err
    wants_bucket = env.get("AWS_ENDPOINT_URL") and not file_values.get("work_url")
    if wants_bucket and not values.get("work_bucket") and not file_values.get("work_bucket"):
        values.setdefault("work_bucket", "bridge-work")
    merged = {**file_values, **values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return Settings.model_validate(merged)
    except Exception as err:  # pydantic.ValidationError, with the field named
        raise ConfigError(f"{path or 'environment'}: {err}") from err


def find_config_file(env: dict[str, str] | None = None) -> Path | None:
    """The file :func:`load_settings` would read, or ``None`` (embedded defaults)."""
    env = dict(os.environ if env is None else env)
    return _find_config(env, env.get("BRIDGE_DATA_DIR"))


def _find_config(env: dict[str, str], data_dir: str | None) -> Path | None:
    if env.get("BRIDGE_CONFIG"):
        return Path(env["BRIDGE_CONFIG"])
    here = Path("bridge.toml")
    if here.is_file():
        return here
    candidate = Path(data_dir) if data_dir else default_data_dir()
    candidate = candidate / "bridge.toml"
    return candidate if candidate.is_file() else None
