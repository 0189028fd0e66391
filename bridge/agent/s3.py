"""The agent's object store: Fusion's, so a node has one S3 layer.

One client configuration (credentials, endpoint, region, connection pool, retries and
addressing style, from the standard AWS variables and ``FUSION_S3_*``), built by
:class:`fusion.s3_store.S3ObjectStore`, and one table from S3 error codes to errors
(:func:`fusion.errors.translate_store_error`: ``NoSuchKey`` is a
``FileNotFoundError``, ``AccessDenied`` a ``PermissionError``, ...), whether a file is
staged by copy, read through a mount or written to the work directory.  boto3 is
imported lazily (it costs ~0.3 s), so a task with only local files never pays for it.
The agent never reads or logs credentials itself.
"""

from __future__ import annotations

import functools
from typing import Any

from fusion.errors import translate_store_error
from fusion.s3_store import S3ObjectStore


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``("bucket", "key")``; the key may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url}")
    return bucket, key


@functools.lru_cache(maxsize=1)
def object_store() -> S3ObjectStore:
    """The node's one object store, configured from the environment."""
    return S3ObjectStore.from_env()


def s3_client() -> Any:
    """The boto3 client of :func:`object_store` (for transfers it does not wrap)."""
    return object_store().client


def map_s3_error(err: Exception, what: str) -> OSError:
    """Translate a botocore error into a typed ``OSError`` naming ``what``."""
    return translate_store_error(err, what)


def is_s3_error(err: BaseException) -> bool:
    """True for botocore/boto3 exceptions (without importing them eagerly)."""
    module = type(err).__module__
    return module.startswith(("botocore", "boto3", "s3transfer"))
