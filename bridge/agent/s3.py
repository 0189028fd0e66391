"""The one place the agent talks to boto3.

boto3 is imported lazily (it costs ~0.3 s), so a task with only local files never pays
for it.  Credentials, region and endpoint come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``) or any other
source boto3 knows; the agent never reads or logs them itself.  ``AWS_S3_ADDRESSING_STYLE``
(``auto``/``path``/``virtual``) helps with S3-compatible servers on plain host names.

S3 error codes become builtin ``OSError`` subclasses through one table, like s3fs does,
so callers catch ``FileNotFoundError`` and ``PermissionError`` without knowing boto.
"""

from __future__ import annotations

import functools
import os
from typing import Any

_ERRNO_TABLE: dict[str, type[OSError]] = {
    "NoSuchKey": FileNotFoundError,
    "NoSuchBucket": FileNotFoundError,
    "404": FileNotFoundError,
    "NotFound": FileNotFoundError,
    "AccessDenied": PermissionError,
    "403": PermissionError,
    "InvalidAccessKeyId": PermissionError,
    "SignatureDoesNotMatch": PermissionError,
}


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``("bucket", "key")``; the key may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url}")
    return bucket, key


@functools.lru_cache(maxsize=1)
def s3_client() -> Any:
    """A shared S3 client configured from the environment."""
    import boto3
    from botocore.config import Config

    s3_options: Any = {"addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "auto")}
    config = Config(
        s3=s3_options,
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)


def map_s3_error(err: Exception, what: str) -> OSError:
    """Translate a botocore error into a builtin ``OSError`` naming ``what``."""
    code = ""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    cls = _ERRNO_TABLE.get(code, OSError)
    detail = f"{code}: {err}" if code else str(err)
    return cls(f"{what}: {detail}")


def is_s3_error(err: BaseException) -> bool:
    """True for botocore/boto3 exceptions (without importing them eagerly)."""
    module = type(err).__module__
    return module.startswith(("botocore", "boto3", "s3transfer"))
