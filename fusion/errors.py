"""Typed errors for Fusion, and the one table from S3 error codes to errno.

Hierarchy (each also subclasses the builtin ``OSError`` that fits, so callers that
only know the standard library still catch them)::

    FusionError (Exception)
    +-- StoreError (FusionError, OSError)          any failed object-store call; has .errno
    |   +-- ObjectNotFound (StoreError, FileNotFoundError)      NoSuchKey, NoSuchBucket, 404
    |   +-- AccessDenied (StoreError, PermissionError)          AccessDenied, 403
    |   +-- PreconditionFailed (StoreError)                     412: object changed under us
    |   +-- UploadFailed (StoreError)                           a PUT or multipart upload failed
    +-- UnsupportedOperation (FusionError, OSError)  an operation Fusion refuses, with its errno
    +-- MountError (FusionError, RuntimeError)       mounting or unmounting failed
    +-- StageError (FusionError, ValueError)         a bad URL or path for staging

Foreign errors are translated in exactly one place, :func:`translate_store_error`, which
reads the S3 error code (or the HTTP status when the body has none) through
:data:`S3_CODE_TO_ERRNO`. The FUSE adapter then only has to read ``err.errno``.
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = [
    "S3_CODE_TO_ERRNO",
    "AccessDenied",
    "FusionError",
    "MountError",
    "ObjectNotFound",
    "PreconditionFailed",
    "StageError",
    "StoreError",
    "UnsupportedOperation",
    "UploadFailed",
    "errno_for_code",
    "translate_store_error",
]

# The one table. Codes from the S3 API reference "Error responses" list; the HTTP
# statuses at the bottom are the fallback when a server answers without an XML body
# (a HEAD request never carries one).
S3_CODE_TO_ERRNO: dict[str, int] = {
    "NoSuchKey": errno.ENOENT,
    "NoSuchBucket": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    "AccountProblem": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "ExpiredToken": errno.EACCES,
    "InvalidToken": errno.EACCES,
    "Forbidden": errno.EACCES,
    "PreconditionFailed": errno.ESTALE,
    "InvalidObjectState": errno.EIO,
    "BucketAlreadyOwnedByYou": errno.EEXIST,
    "BucketAlreadyExists": errno.EEXIST,
    "BucketNotEmpty": errno.ENOTEMPTY,
    "EntityTooLarge": errno.EFBIG,
    "EntityTooSmall": errno.EINVAL,
    "InvalidPart": errno.EIO,
    "InvalidPartOrder": errno.EIO,
    "InvalidRange": errno.EINVAL,
    "KeyTooLongError": errno.ENAMETOOLONG,
    "MethodNotAllowed": errno.EPERM,
    "NotImplemented": errno.ENOTSUP,
    "QuotaExceeded": errno.EDQUOT,
    "SlowDown": errno.EAGAIN,
    "ServiceUnavailable": errno.EAGAIN,
    "RequestTimeout": errno.ETIMEDOUT,
    "InternalError": errno.EIO,
    "400": errno.EINVAL,
    "403": errno.EACCES,
    "404": errno.ENOENT,
    "405": errno.EPERM,
    "409": errno.EBUSY,
    "412": errno.ESTALE,
    "416": errno.EINVAL,
    "500": errno.EIO,
    "501": errno.ENOTSUP,
    "503": errno.EAGAIN,
}


def errno_for_code(code: str) -> int:
    """Errno for an S3 error code or HTTP status; ``EIO`` for anything unknown."""
    return S3_CODE_TO_ERRNO.get(code, errno.EIO)


class FusionError(Exception):
    """Base class of every error Fusion raises on purpose."""


class StoreError(FusionError, OSError):
    """An object-store call failed. ``errno`` comes from :data:`S3_CODE_TO_ERRNO`."""

    def __init__(self, message: str, *, code: str = "", err: int | None = None) -> None:
        number = err if err is not None else errno_for_code(code)
        OSError.__init__(self, number, message)
        self.code = code

    def __str__(self) -> str:
        suffix = f" ({self.code})" if self.code else ""
        return f"{self.strerror}{suffix}"


class ObjectNotFound(StoreError, FileNotFoundError):
    """The bucket or key does not exist."""


class AccessDenied(StoreError, PermissionError):
    """The credentials do not allow this call."""


class PreconditionFailed(StoreError):
    """The object changed between two calls that expected the same version (ETag)."""


class UploadFailed(StoreError):
    """A PUT or a multipart upload did not complete; the object was not written."""


class UnsupportedOperation(FusionError, OSError):
    """An operation Fusion refuses on purpose (see SEMANTICS.md), with its errno."""

    def __init__(self, err: int, message: str) -> None:
        OSError.__init__(self, err, message)


class MountError(FusionError, RuntimeError):
    """Mounting or unmounting failed."""


class StageError(FusionError, ValueError):
    """A URL or path that cannot be mapped or staged."""


_CLASS_FOR_ERRNO: dict[int, type[StoreError]] = {
    errno.ENOENT: ObjectNotFound,
    errno.EACCES: AccessDenied,
    errno.ESTALE: PreconditionFailed,
}


def store_error(code: str, message: str) -> StoreError:
    """Build the typed error for an S3 error code or HTTP status string."""
    number = errno_for_code(code)
    cls = _CLASS_FOR_ERRNO.get(number, StoreError)
    return cls(message, code=code, err=number)


def translate_store_error(err: BaseException, what: str) -> StoreError:
    """Map a botocore/network exception to a typed :class:`StoreError`.

    ``what`` names the call and object, e.g. ``"GET s3://b/k"``. Use as
    ``raise translate_store_error(e, what) from e``.
    """
    if isinstance(err, StoreError):
        return err
    response: Any = getattr(err, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
        # The code decides when the table knows it; otherwise the HTTP status does.
        lookup = code if code in S3_CODE_TO_ERRNO else status
        number = errno_for_code(lookup)
        message = str(error.get("Message") or code or status or "error")
        cls = _CLASS_FOR_ERRNO.get(number, StoreError)
        return cls(f"{what}: {message}", code=code or status, err=number)
    if isinstance(err, OSError) and err.errno:
        return StoreError(f"{what}: {err}", err=err.errno)
    # Connection resets, timeouts, protocol errors: the store could not be reached.
    return StoreError(f"{what}: {type(err).__name__}: {err}", err=errno.EIO)
