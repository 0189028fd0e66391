"""Plain data types shared by the object-store interface and its implementations."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "CommonPrefix",
    "ObjectInfo",
    "StoreConfig",
    "UploadedPart",
]

#: S3's smallest multipart part (all parts but the last).
MIN_PART_SIZE = 5 * 1024 * 1024
#: S3's largest number of parts in one multipart upload.
MAX_PARTS = 10_000


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing or HEAD sees it. ``metadata`` is only filled by ``head``."""

    key: str
    size: int
    etag: str
    mtime: float
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommonPrefix:
    """A "directory" in a delimited listing: ``prefix`` ends with the delimiter."""

    prefix: str


@dataclass(frozen=True)
class UploadedPart:
    """A completed part of a multipart upload."""

    number: int
    etag: str


@dataclass(frozen=True)
class StoreConfig:
    """How to reach an S3-compatible store. Secrets may come from the environment.

    Empty fields fall back to the standard AWS variables and profiles, resolved by
    botocore (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ...).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    max_connections: int = 64
    max_attempts: int = 3
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreConfig:
        env = os.environ if environ is None else environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            profile=env.get("AWS_PROFILE") or None,
        )

    def to_env(self) -> dict[str, str]:
        """The same settings as AWS variables, for handing to a child process."""
        pairs = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
            "AWS_PROFILE": self.profile,
            "FUSION_S3_MAX_ATTEMPTS": str(self.max_attempts),
            "FUSION_S3_MAX_CONNECTIONS": str(self.max_connections),
        }
        return {k: v for k, v in pairs.items() if v}
