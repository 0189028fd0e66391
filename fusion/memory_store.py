"""An in-memory :class:`~fusion.store.ObjectStore`, for unit tests of the file-system logic.

It keeps the rules of S3 that the file system relies on, so that a test passing here
means something: objects appear whole (``put`` or ``complete_multipart``), multipart
parts other than the last must be at least 5 MiB, keys list in byte order with common
prefixes folded in, ``copy`` keeps metadata, deleting a missing key succeeds.

``fail_next`` lets a test make a named call fail with an S3 error code, the way a real
server would answer; it is a fault injector, not a model of any server.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from fusion.errors import ObjectNotFound, UploadFailed, store_error
from fusion.objects import MIN_PART_SIZE, CommonPrefix, ObjectInfo, UploadedPart

__all__ = ["MemoryObjectStore"]


@dataclass
class _Object:
    data: bytes
    metadata: dict[str, str]
    etag: str
    mtime: float


@dataclass
class _Upload:
    bucket: str
    key: str
    metadata: dict[str, str]
    parts: dict[int, tuple[bytes, str]]


class MemoryObjectStore:
    """Buckets of objects held in a dict; thread-safe; counts calls per operation."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._failures: dict[str, list[str]] = {}
        self.calls: dict[str, int] = {}

    # -- test hooks ---------------------------------------------------------------------
    def fail_next(self, operation: str, code: str = "InternalError", times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` (a method name) fail with ``code``."""
        with self._lock:
            self._failures.setdefault(operation, []).extend([code] * times)

    def _enter(self, operation: str, what: str) -> None:
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            pending = self._failures.get(operation)
            code = pending.pop(0) if pending else None
        if code is not None:
            err = store_error(code, f"{what}: injected {code}")
            if operation in {"put", "upload_part", "complete_multipart"}:
                raise UploadFailed(str(err), code=code, err=err.errno)
            raise err

    def _bucket(self, bucket: str) -> dict[str, _Object]:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise ObjectNotFound(f"s3://{bucket}: no such bucket", code="NoSuchBucket") from None

    def _object(self, bucket: str, key: str) -> _Object:
        obj = self._bucket(bucket).get(key)
        if obj is None:
            raise ObjectNotFound(f"s3://{bucket}/{key}: no such key", code="NoSuchKey")
        return obj

    # -- ObjectStore --------------------------------------------------------------------
    def get(self, bucket: str, key: str) -> bytes:
        return self.get_object(bucket, key)[1]

    def get_object(self, bucket: str, key: str) -> tuple[ObjectInfo, bytes]:
        self._enter("get", f"GET s3://{bucket}/{key}")
        with self._lock:
            obj = self._object(bucket, key)
            return ObjectInfo(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata)), obj.data

    def get_range(
        self, bucket: str, key: str, start: int, end_exclusive: int, etag: str | None = None
    ) -> bytes:
        self._enter("get_range", f"GET s3://{bucket}/{key}")
        with self._lock:
            obj = self._object(bucket, key)
            if etag is not None and etag != obj.etag:
                raise store_error("PreconditionFailed", f"GET s3://{bucket}/{key}: changed")
            if start >= len(obj.data) and len(obj.data) > 0:
                raise store_error("InvalidRange", f"GET s3://{bucket}/{key}: bad range")
            return obj.data[start:end_exclusive]

    def put(
        self, bucket: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        self._enter("put", f"PUT s3://{bucket}/{key}")
        blob = bytes(data)
        obj = _Object(blob, dict(metadata or {}), hashlib.md5(blob).hexdigest(), time.time())  # noqa: S324
        with self._lock:
            self._bucket(bucket)[key] = obj
        return obj.etag

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self._enter("head", f"HEAD s3://{bucket}/{key}")
        with self._lock:
            obj = self._bucket(bucket).get(key)
            if obj is None:
                return None
            return ObjectInfo(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))

    def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        max_keys: int | None = None,
    ) -> Iterator[ObjectInfo | CommonPrefix]:
        self._enter("list", f"LIST s3://{bucket}/{prefix}")
        with self._lock:
            items = sorted((k, o) for k, o in self._bucket(bucket).items() if k.startswith(prefix))
        emitted = 0
        last_prefix = None
        for key, obj in items:
            if start_after is not None and key <= start_after:
                continue
            if max_keys is not None and emitted >= max_keys:
                return
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    if common != last_prefix:
                        last_prefix = common
                        emitted += 1
                        yield CommonPrefix(common)
                    continue
            emitted += 1
            yield ObjectInfo(key, len(obj.data), obj.etag, obj.mtime)

    def delete(self, bucket: str, key: str) -> None:
        self._enter("delete", f"DELETE s3://{bucket}/{key}")
        with self._lock:
            self._bucket(bucket).pop(key, None)

    def copy(self, bucket: str, src_key: str, dst_key: str) -> None:
        self._enter("copy", f"COPY s3://{bucket}/{src_key}")
        with self._lock:
            src = self._object(bucket, src_key)
            self._bucket(bucket)[dst_key] = _Object(
                src.data, dict(src.metadata), src.etag, time.time()
            )

    def upload_file(self, path: str | os.PathLike[str], bucket: str, key: str) -> None:
        with open(path, "rb") as fh:
            self.put(bucket, key, fh.read())

    def download_file(self, bucket: str, key: str, path: str | os.PathLike[str]) -> None:
        data = self.get(bucket, key)
        tmp = f"{os.fspath(path)}.fusion-part"
        with open(tmp, "wb") as fh:
            fh.write(data)
        shutil.move(tmp, path)

    def ensure_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.setdefault(bucket, {})

    def bucket_exists(self, bucket: str) -> bool:
        with self._lock:
            return bucket in self._buckets

    def list_buckets(self) -> builtins.list[str]:
        with self._lock:
            return sorted(self._buckets)

    def create_multipart(
        self, bucket: str, key: str, metadata: Mapping[str, str] | None = None
    ) -> str:
        self._enter("create_multipart", f"CREATE-MULTIPART s3://{bucket}/{key}")
        with self._lock:
            self._bucket(bucket)
            upload_id = f"upload-{next(self._ids)}"
            self._uploads[upload_id] = _Upload(bucket, key, dict(metadata or {}), {})
            return upload_id

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes | memoryview
    ) -> UploadedPart:
        self._enter("upload_part", f"UPLOAD-PART s3://{bucket}/{key}#{number}")
        blob = bytes(data)
        etag = hashlib.md5(blob).hexdigest()  # noqa: S324
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is None:
                raise store_error("NoSuchUpload", f"upload {upload_id} not found")
            upload.parts[number] = (blob, etag)
        return UploadedPart(number, etag)

    def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: builtins.list[UploadedPart]
    ) -> str:
        self._enter("complete_multipart", f"COMPLETE-MULTIPART s3://{bucket}/{key}")
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is None:
                raise store_error("NoSuchUpload", f"upload {upload_id} not found")
            chunks: builtins.list[bytes] = []
            for i, part in enumerate(parts):
                blob, etag = upload.parts.get(part.number, (b"", ""))
                if etag != part.etag:
                    raise UploadFailed(f"part {part.number} missing", code="InvalidPart")
                if i < len(parts) - 1 and len(blob) < MIN_PART_SIZE:
                    raise UploadFailed(f"part {part.number} too small", code="EntityTooSmall")
                chunks.append(blob)
            data = b"".join(chunks)
            etag = hashlib.md5(data).hexdigest() + f"-{len(parts)}"  # noqa: S324
            self._bucket(bucket)[key] = _Object(data, upload.metadata, etag, time.time())
            del self._uploads[upload_id]
            return etag

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        with self._lock:
            self._uploads.pop(upload_id, None)

    @property
    def open_uploads(self) -> int:
        """Multipart uploads neither completed nor aborted (for leak checks)."""
        with self._lock:
            return len(self._uploads)
