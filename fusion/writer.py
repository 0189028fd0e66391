"""Writes: a local spool per file, uploaded as parallel multipart parts while it grows.

Rules (also in SEMANTICS.md):

* Every byte written goes to a spool file on local disk first (``<cache>/spool``). The
  spool is the truth for readers of the file on this node until it is released.
* While a file is written *sequentially* (each write starts where the file ends), every
  ``part_size`` bytes that are complete are uploaded at once as a multipart part, on the
  shared upload pool, while the writer goes on writing. Closing a 10 GiB file then only
  waits for the last part(s) and CompleteMultipartUpload, not for 10 GiB of upload.
* A write anywhere else (a seek back, a hole, an overwrite) is allowed within the spool.
  It turns early uploads off for this file; parts already uploaded whose bytes changed
  are re-uploaded at commit (re-uploading a part number replaces it in S3). Which part
  is stale is tracked with a generation counter per part, so a part read for upload
  while being overwritten is never mistaken for current.
* ``commit`` (called on close/flush and fsync) uploads what is missing and completes the
  upload; a file smaller than one part is a single PUT instead. Only then is the object
  visible, all at once: no reader anywhere sees a half-written object. If anything fails,
  the multipart upload is aborted, the spool is kept (so a later flush retries) and
  :class:`~fusion.errors.UploadFailed` is raised - close(2) returns EIO: never a silent
  loss.
* After a commit the file may be written again; the next commit rewrites the whole
  object from the spool (S3 objects cannot be appended to).
* A file can have at most 10,000 parts: ``part_size`` x 10,000 (78 GiB at 8 MiB) is the
  largest file Fusion writes; a write beyond fails with EFBIG.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future

from fusion.errors import StoreError, UploadFailed
from fusion.objects import MAX_PARTS, MIN_PART_SIZE, UploadedPart
from fusion.store import ObjectStore

__all__ = ["WriteSession"]

log = logging.getLogger(__name__)


class WriteSession:
    """The spool and upload of one file being written; thread-safe."""

    def __init__(
        self,
        store: ObjectStore,
        pool: Executor,
        bucket: str,
        key: str,
        spool_dir: str,
        part_size: int = 8 * 1024 * 1024,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.store = store
        self.pool = pool
        self.bucket = bucket
        self.key = key
        self.part_size = part_size
        self.metadata = dict(metadata or {})
        os.makedirs(spool_dir, exist_ok=True)
        fd, self.spool_path = tempfile.mkstemp(prefix="spool-", dir=spool_dir)
        self._fd = fd
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._size = 0
        self._sequential = True
        self._dirty = True
        self._upload_id: str | None = None
        self._parts: dict[int, Future[UploadedPart]] = {}
        self._part_gen: dict[int, int] = {}
        self._gen: dict[int, int] = {}
        self._closed = False
        self.etag: str | None = None
        #: Set when the last commit failed (and reported); cleared by the next write.
        self.failed = False
        self.parts_uploaded_early = 0

    # -- state ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    @property
    def dirty(self) -> bool:
        with self._lock:
            return self._dirty

    def load(self, fill: Callable[[str], None], size: int) -> None:
        """Fill the spool with the current object (``fill(path)`` downloads it)."""
        fill(self.spool_path)
        # The filler may have replaced the file (download to a temporary, then rename).
        fd = os.open(self.spool_path, os.O_RDWR)
        old, self._fd = self._fd, fd
        os.close(old)
        with self._lock:
            self._size = os.path.getsize(self.spool_path)
            if self._size != size:
                raise StoreError(
                    f"s3://{self.bucket}/{self.key}: changed while loading", err=errno.ESTALE
                )
            self._sequential = False
            self._dirty = False

    # -- file operations --------------------------------------------------------------------
    def write(self, offset: int, data: bytes | memoryview) -> int:
        n = len(data)
        if n == 0:
            return 0
        end = offset + n
        if end > self.part_size * MAX_PARTS:
            raise OSError(errno.EFBIG, f"files larger than {self.part_size * MAX_PARTS} bytes")
        written = os.pwrite(self._fd, data, offset)
        with self._lock:
            self.failed = False
            if offset != self._size and self._sequential:
                log.debug(
                    "s3://%s/%s: write at %d of %d: random",
                    self.bucket,
                    self.key,
                    offset,
                    self._size,
                )
                self._sequential = False
            self._size = max(self._size, offset + written)
            self._dirty = True
            ps = self.part_size
            for part in range(offset // ps, (offset + written - 1) // ps + 1):
                self._gen[part] = self._gen.get(part, 0) + 1
            if self._sequential:
                self._upload_complete_parts()
        return written

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            length = max(0, min(length, self._size - offset))
        return os.pread(self._fd, length, offset) if length else b""

    def truncate(self, size: int) -> None:
        with self._lock:
            if size == self._size and (size > 0 or not self._parts):
                # A no-op (dd and many tools ftruncate a fresh file to 0): keep the file
                # sequential, so its parts still upload while it is written.
                self._dirty = self._dirty or self.etag is None
                return
        os.ftruncate(self._fd, size)
        with self._lock:
            self.failed = False
            ps = self.part_size
            first = min(size, self._size) // ps
            last = max(size, self._size) // ps
            for part in range(first, last + 1):
                self._gen[part] = self._gen.get(part, 0) + 1
            self._size = size
            self._sequential = False
            self._dirty = True

    # -- uploads ----------------------------------------------------------------------------
    def _upload_complete_parts(self) -> None:
        """Start uploads of whole parts not yet uploaded (lock held)."""
        ps = self.part_size
        complete = self._size // ps
        for part in range(complete):
            if part not in self._parts:
                self._start_part(part)
                self.parts_uploaded_early += 1

    def _start_part(self, part: int) -> None:
        self._parts[part] = self.pool.submit(self._upload_part, part)

    def _ensure_upload_id(self) -> str:
        # One creator at a time: racing CreateMultipartUpload calls would leave orphans.
        with self._create_lock:
            with self._lock:
                if self._upload_id is not None:
                    return self._upload_id
            upload_id = self.store.create_multipart(self.bucket, self.key, self.metadata)
            with self._lock:
                self._upload_id = upload_id
            return upload_id

    def _part_result(self, part: int, fut: Future[UploadedPart]) -> UploadedPart:
        """The upload of a part that was in flight when the commit began; if it fails,
        the part is sent once more, as one that had failed before the commit is (a
        second failure is the commit's)."""
        try:
            return fut.result()
        except Exception:
            with self._lock:
                if self._parts.get(part) is fut:
                    self._start_part(part)
                retry = self._parts[part]
            return retry.result()

    def _upload_part(self, part: int) -> UploadedPart:
        upload_id = self._ensure_upload_id()
        with self._lock:
            gen = self._gen.get(part, 0)
            start = part * self.part_size
            length = max(0, min(self.part_size, self._size - start))
        data = os.pread(self._fd, length, start)
        uploaded = self.store.upload_part(self.bucket, self.key, upload_id, part + 1, data)
        with self._lock:
            self._part_gen[part] = gen
        return uploaded

    def commit(self) -> str:
        """Upload everything and make the object visible; returns its ETag.

        Raises :class:`UploadFailed` (errno EIO or the store's) if the object could not
        be written; the spool is kept and a later commit retries.
        """
        try:
            return self._commit()
        except BaseException:
            with self._lock:
                self.failed = True
            raise

    def _commit(self) -> str:
        with self._lock:
            if not self._dirty and self.etag is not None:
                return self.etag
            size = self._size
            ps = self.part_size
            multipart = self._upload_id is not None or self._parts
        if size < ps and not multipart:
            data = os.pread(self._fd, size, 0)
            etag = self.store.put(self.bucket, self.key, data, self.metadata)
            return self._committed(etag)
        if size < MIN_PART_SIZE:
            # Was multipart, then truncated below the smallest part: one PUT instead.
            self._abort()
            data = os.pread(self._fd, size, 0)
            etag = self.store.put(self.bucket, self.key, data, self.metadata)
            return self._committed(etag)
        nparts = max(1, -(-size // ps))
        try:
            with self._lock:
                started: set[int] = set()
                for part in range(nparts):
                    fut = self._parts.get(part)
                    stale = (
                        fut is not None
                        and fut.done()
                        and (
                            fut.exception() is not None
                            or self._part_gen.get(part, -1) != self._gen.get(part, 0)
                        )
                    )
                    # A part that is the last one now but was uploaded when shorter or longer
                    # is stale too: its generation changed with the write that moved the end.
                    if fut is None or stale:
                        self._start_part(part)
                        started.add(part)
                futures = [self._parts[p] for p in range(nparts)]
            uploaded = [
                f.result() if p in started else self._part_result(p, f)
                for p, f in enumerate(futures)
            ]
            # Parts still in flight when we sampled may have read older bytes: re-check.
            with self._lock:
                again = [
                    p for p in range(nparts) if self._part_gen.get(p, -1) != self._gen.get(p, 0)
                ]
                for p in again:
                    self._start_part(p)
                refut = {p: self._parts[p] for p in again}
            for p, f in refut.items():
                uploaded[p] = f.result()
            upload_id = self._ensure_upload_id()
            etag = self.store.complete_multipart(self.bucket, self.key, upload_id, uploaded)
        except StoreError as err:
            self._abort()
            if isinstance(err, UploadFailed):
                raise
            raise UploadFailed(str(err), code=err.code, err=err.errno) from err
        except Exception as err:
            self._abort()
            raise UploadFailed(
                f"s3://{self.bucket}/{self.key}: upload failed: {err}", err=errno.EIO
            ) from err
        with self._lock:
            self._upload_id = None
            self._parts = {}
            self._part_gen = {}
        return self._committed(etag)

    def _committed(self, etag: str) -> str:
        # Sequential stays as it was: dd, for one, closes a duplicate descriptor (a
        # flush, so a commit) before it writes anything, and then writes in order.
        with self._lock:
            self._dirty = False
            self.etag = etag
            return etag

    def _abort(self) -> None:
        with self._lock:
            parts, self._parts = self._parts, {}
            self._part_gen = {}
        for fut in parts.values():
            fut.cancel()
        for fut in parts.values():
            if not fut.cancelled():
                # The upload is being aborted: a part's own failure no longer matters.
                with contextlib.suppress(Exception):
                    fut.result()
        # Only now: a part that was running may have created the upload meanwhile.
        with self._lock:
            upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            # An orphaned upload is reclaimed by the bucket's lifecycle rules.
            with contextlib.suppress(StoreError):
                self.store.abort_multipart(self.bucket, self.key, upload_id)

    def discard(self) -> None:
        """Drop the spool and any unfinished upload (the object is left as it was)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._abort()
        os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spool_path)
