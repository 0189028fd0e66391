"""Settings of the environment builds (``[envs]`` in ``bridge.toml``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class EnvsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # OCI registry images are pushed to ("host:port"); empty keeps them local
    registry: str = ""
    repository: str = "bridge-env"
    base_image: str = "debian:bookworm"
    engine: str | None = None  # docker | buildah | podman; default: the first found
    spack: str | None = None  # the spack executable; default: PATH, then $SPACK_ROOT
    spack_mirror: str | None = None  # where built Spack binaries are pushed
    builds_dir: Path | None = None  # default: <data_dir>/envs
    webhook_url: str | None = None  # POSTed a JSON summary when a build finishes
    build_timeout_s: float = 3600.0
    # How long routing expects a build to take before any build of its format has
    # finished here (then: the median of the last ones)
    build_estimate_s: float = Field(default=600.0, ge=0)
    # CA bundle pip trusts inside image builds (where TLS is intercepted)
    build_ca_bundle: Path | None = None
    # extra environment for the build commands (DOCKER_HOST, SPACK_ROOT, ...)
    env: dict[str, str] = Field(default_factory=dict)
