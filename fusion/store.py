"""The object-store interface Fusion is written against, and its implementations.

Everything above this module (the file system, staging, the benchmarks) talks to object
storage only through :class:`ObjectStore`, a ``Protocol`` of a dozen calls. Two
implementations exist:

* :class:`~fusion.s3_store.S3ObjectStore` - boto3 against any S3-compatible endpoint
  (AWS, MinIO, Ceph, s3rver, moto). Its connection pool is sized for the parallel ranged
  GETs of the prefetcher and the parallel part uploads of the writer.
* :class:`~fusion.memory_store.MemoryObjectStore` - a dict, for unit tests of the
  file-system logic. It follows the same rules (multipart parts of at least 5 MiB except
  the last, a key is visible only once complete, ``copy`` keeps metadata).

Errors are the typed ones of :mod:`fusion.errors`; a missing key is ``ObjectNotFound``
(also a ``FileNotFoundError``), never ``None`` - except :meth:`ObjectStore.head`, whose job
is to answer "is it there".

Multipart calls are part of the interface because the writer uploads parts while a file
is still being written; ``ObjectStore`` users that only need whole objects never see them.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from fusion.memory_store import MemoryObjectStore
from fusion.objects import (
    MAX_PARTS,
    MIN_PART_SIZE,
    CommonPrefix,
    ObjectInfo,
    StoreConfig,
    UploadedPart,
)
from fusion.s3_store import S3ObjectStore

__all__ = [
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "CommonPrefix",
    "MemoryObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "StoreConfig",
    "UploadedPart",
]


@runtime_checkable
class ObjectStore(Protocol):
    """What Fusion needs from an object store. Implementations are thread-safe."""

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object."""
        ...

    def get_range(
        self, bucket: str, key: str, start: int, end_exclusive: int, etag: str | None = None
    ) -> bytes:
        """Bytes ``[start, end_exclusive)``; shorter at the end of the object.

        With ``etag``, fail with ``PreconditionFailed`` if the object changed.
        """
        ...

    def get_object(self, bucket: str, key: str) -> tuple[ObjectInfo, bytes]:
        """The whole object with its info and metadata (a HEAD and a GET in one request)."""
        ...

    def put(
        self, bucket: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Write a whole object in one request (visible all at once); returns its ETag."""
        ...

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info with its metadata, or ``None`` if it does not exist."""
        ...

    def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        max_keys: int | None = None,
    ) -> Iterator[ObjectInfo | CommonPrefix]:
        """Objects and common prefixes in key order, paginated internally.

        ``max_keys`` stops after that many entries in total (not per page).
        """
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Delete an object; deleting a missing key is not an error (as in S3)."""
        ...

    def copy(self, bucket: str, src_key: str, dst_key: str) -> None:
        """Server-side copy within a bucket, keeping metadata."""
        ...

    def upload_file(self, path: str | os.PathLike[str], bucket: str, key: str) -> None:
        """Upload a local file (multipart and parallel when large)."""
        ...

    def download_file(self, bucket: str, key: str, path: str | os.PathLike[str]) -> None:
        """Download an object to a local file (ranged and parallel when large)."""
        ...

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist."""
        ...

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists (and is visible to these credentials)."""
        ...

    def list_buckets(self) -> builtins.list[str]:
        """Names of the buckets these credentials can list."""
        ...

    def create_multipart(
        self, bucket: str, key: str, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Start a multipart upload; returns its upload id."""
        ...

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes | memoryview
    ) -> UploadedPart:
        """Upload part ``number`` (1-based). Re-uploading a number replaces it."""
        ...

    def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: builtins.list[UploadedPart]
    ) -> str:
        """Make the object visible from these parts, atomically; returns its ETag."""
        ...

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; a missing upload is not an error."""
        ...
