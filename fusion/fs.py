"""The file system, without FUSE: names, attributes, handles, reads and writes over S3.

Every method is synchronous and thread-safe; :mod:`fusion.fuse_ops` calls them from
worker threads and only translates types. That keeps this module testable with a
:class:`~fusion.store.MemoryObjectStore` and no kernel, and keeps FUSE's concurrency
(many requests in flight) a matter of threads blocking on I/O, never of shared state
changing between two ``await``\\ s.

The tree::

    <mountpoint>/            ROOT
      s3/                    SCHEME   (buckets: the configured ones, else ListBuckets)
        <bucket>/            BUCKET   (HeadBucket on lookup)
          a/                 DIR      (a key prefix "a/", or a marker object "a/")
            b.txt            FILE     (the object "a/b.txt")
            link             SYMLINK  (an object marked as a link, see symlinks.py)

Names: a key prefix is a directory; if both ``a`` and ``a/...`` exist, the directory
wins and the object is hidden. Keys that are not valid file names (empty path
components, ``.``, ``..``, longer than 255 bytes) are not shown.

How each operation maps to S3 is in ``SEMANTICS.md``; directory listings are in
:mod:`fusion.listing`, the read path in :mod:`fusion.prefetch` and
:mod:`fusion.small_files`, the write path in :mod:`fusion.writer`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from fusion.chunk_cache import ChunkCache
from fusion.errors import (
    FusionError,
    UnsupportedOperation,
    UploadFailed,
)
from fusion.folders import FolderIndex
from fusion.inodes import ROOT_INO, Inode, InodeTable, Kind
from fusion.io_stats import IoStats
from fusion.listing import NAME_MAX, DirListing, Entry, kind_of, valid_name
from fusion.meta_cache import MISSING, MetaCache, Resolution
from fusion.object_source import ObjectSource
from fusion.objects import CommonPrefix, ObjectInfo
from fusion.prefetch import Prefetcher, ReadBudget
from fusion.small_files import SmallObjects
from fusion.store import ObjectStore
from fusion.symlinks import MAX_TARGET, SYMLINK_METADATA
from fusion.writer import WriteSession

__all__ = ["Attr", "FsConfig", "FusionFS", "StatFs"]

log = logging.getLogger(__name__)

SCHEME = "s3"
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
#: How long a bucket's existence (HeadBucket) is trusted, seconds.
BUCKET_TTL = 60.0


@dataclass(frozen=True)
class FsConfig:
    """Settings of one mount. Sizes in bytes, times in seconds."""

    cache_dir: str
    cache_bytes: int = 2 * 1024**3
    read_only: bool = False
    metadata_ttl: float = 1.0
    #: Size of the parts a written file is uploaded in.
    part_size: int = 8 * 1024 * 1024
    #: Largest ranged GET of a sequential read (see fusion.prefetch).
    read_part_size: int = 16 * 1024 * 1024
    max_window: int = 128 * 1024 * 1024
    #: Most bytes fetched around a read at a random offset (see fusion.random_reads).
    random_span: int = 16 * 1024 * 1024
    buckets: tuple[str, ...] = ()
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    fetch_threads: int = 32
    upload_threads: int = 16
    small_threshold: int = 1024 * 1024
    small_ahead: int = 64
    small_bytes: int = 64 * 1024 * 1024
    #: Per directory listing, how many objects small enough to be symlinks get a HEAD.
    listing_heads: int = 1000


@dataclass(frozen=True)
class Attr:
    """What ``stat`` shows for an inode."""

    ino: int
    mode: int
    size: int
    mtime: float
    nlink: int
    uid: int
    gid: int
    blksize: int = 1024 * 1024

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class StatFs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namemax: int


@dataclass
class _FileHandle:
    fh: int
    node: Inode
    flags: int
    writable: bool
    prefetcher: Prefetcher | None = None
    source: ObjectSource | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _err(number: int, message: str) -> OSError:
    return OSError(number, f"{os.strerror(number)}: {message}")


class FusionFS:
    """File-system operations over an :class:`~fusion.store.ObjectStore`."""

    def __init__(self, store: ObjectStore, config: FsConfig) -> None:
        self.store = store
        self.config = config
        self.started = time.time()
        self.inodes = InodeTable()
        self.meta = MetaCache(config.metadata_ttl)
        # Buckets are created and deleted rarely, and never through the mount.
        self._buckets: dict[str, tuple[bool, float]] = {}
        self.cache = ChunkCache(os.path.join(config.cache_dir, "blocks"), config.cache_bytes)
        self.spool_dir = os.path.join(config.cache_dir, "spool")
        os.makedirs(self.spool_dir, exist_ok=True)
        self.fetch_pool = ThreadPoolExecutor(config.fetch_threads, "fusion-get")
        self.folders = FolderIndex(store, self.meta, config.metadata_ttl, pool=self.fetch_pool)
        self.upload_pool = ThreadPoolExecutor(config.upload_threads, "fusion-put")
        self.read_budget = ReadBudget(2 * config.max_window)
        self.small = SmallObjects(
            store,
            self.fetch_pool,
            self.meta,
            threshold=config.small_threshold,
            ahead=config.small_ahead,
            max_bytes=config.small_bytes,
        )
        self._lock = threading.Lock()
        self.stats = IoStats()
        self._next_fh = 1
        self._files: dict[int, _FileHandle] = {}
        self._dirs: dict[int, DirListing] = {}
        root = self.inodes.get(ROOT_INO)
        assert root is not None
        self.root = root
        self.scheme = self.inodes.ensure(root, SCHEME, Kind.SCHEME, "", "")
        self.inodes.add_lookup(self.scheme)  # never forgotten

    # -- helpers ----------------------------------------------------------------------------
    def _node(self, ino: int) -> Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise _err(errno.ESTALE, f"inode {ino}")
        return node

    def _fh(self) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            return fh

    def _check_writable(self) -> None:
        if self.config.read_only:
            raise UnsupportedOperation(errno.EROFS, "mounted read-only")

    def _dir_parent(self, ino: int) -> Inode:
        """A directory that can hold objects (a bucket or a prefix)."""
        node = self._node(ino)
        if node.kind in (Kind.BUCKET, Kind.DIR):
            return node
        if node.kind.is_dir:
            raise UnsupportedOperation(errno.EPERM, "only objects live inside buckets")
        raise _err(errno.ENOTDIR, node.name)

    def attr(self, node: Inode) -> Attr:
        cfg = self.config
        if node.kind.is_dir:
            return Attr(node.ino, node.kind.mode_bits, 0, self.started, 2, cfg.uid, cfg.gid)
        mtime = node.info.mtime if node.info is not None else time.time()
        if node.session is not None and node.session.dirty:
            mtime = node.extra.get("wmtime", mtime)  # type: ignore[assignment]
        return Attr(node.ino, node.kind.mode_bits, node.size, mtime, 1, cfg.uid, cfg.gid)

    def _folder_changed(self, bucket: str, prefix: str) -> None:
        self.meta.drop_listing(bucket, prefix)
        self.folders.changed(bucket, prefix)

    def _kind_of(self, info: ObjectInfo) -> Kind:
        return kind_of(info)

    # -- name resolution ----------------------------------------------------------------
    def _resolve(self, bucket: str, key: str) -> Resolution:
        """What ``key`` is in S3: HEAD key and LIST key/ at once, one round trip."""
        head: Future[ObjectInfo | None] = self.fetch_pool.submit(self.store.head, bucket, key)
        listed: Future[list[ObjectInfo | CommonPrefix]] = self.fetch_pool.submit(
            lambda: list(self.store.list(bucket, prefix=key + "/", max_keys=1))
        )
        is_dir = bool(listed.result())
        info = head.result()
        if is_dir:
            res = Resolution(Kind.DIR)
        elif info is not None:
            res = Resolution(self._kind_of(info), info)
        else:
            res = MISSING
        self.meta.put(bucket, key, res)
        return res

    def _lookup_res(self, parent: Inode, name: str) -> Resolution:
        if parent.kind is Kind.ROOT:
            return Resolution(Kind.SCHEME) if name == SCHEME else MISSING
        if parent.kind is Kind.SCHEME:
            if self.config.buckets and name not in self.config.buckets:
                return MISSING
            known = self._buckets.get(name)
            if known is None or time.monotonic() - known[1] > BUCKET_TTL:
                known = (self.store.bucket_exists(name), time.monotonic())
                self._buckets[name] = known
            return Resolution(Kind.BUCKET) if known[0] else MISSING
        key = parent.child_key(name)
        local = self.inodes.child(parent.ino, name)
        if local is not None and local.session is not None and not local.unlinked:
            return Resolution(local.kind, local.info)
        found = self.meta.get(parent.bucket, key) or self.small.pending(parent.bucket, key)
        if found is None:
            found = self.folders.lookup(parent.bucket, parent.key, name)
        return found if found is not None else self._resolve(parent.bucket, key)

    def _known(self, bucket: str, key: str) -> Resolution | None:
        """A fresh answer for ``key`` without a request of its own (a shared LIST at most)."""
        res = self.meta.get(bucket, key)
        if res is None:
            cut = key.rfind("/") + 1
            res = self.folders.lookup(bucket, key[:cut], key[cut:])
        return res

    def _materialize(self, parent: Inode, name: str, res: Resolution) -> Inode:
        assert res.kind is not None
        if res.kind is Kind.SCHEME:
            return self.scheme
        if res.kind is Kind.BUCKET:
            return self.inodes.ensure(parent, name, Kind.BUCKET, name, "")
        key = parent.child_key(name)
        if res.kind is Kind.DIR:
            return self.inodes.ensure(parent, name, Kind.DIR, parent.bucket, key + "/")
        node = self.inodes.ensure(parent, name, res.kind, parent.bucket, key, res.info)
        if node.session is None and res.info is not None:
            node.info = res.info
        if res.target is not None:
            node.target = res.target
        node.validated = time.monotonic()
        return node

    def lookup(self, parent_ino: int, name: str) -> Attr:
        """Resolve ``name`` in a directory; counts one kernel reference on success."""
        parent = self._node(parent_ino)
        if name == ".":
            self.inodes.add_lookup(parent)
            return self.attr(parent)
        if name == "..":
            up = self._node(parent.parent)
            self.inodes.add_lookup(up)
            return self.attr(up)
        if not parent.kind.is_dir:
            raise _err(errno.ENOTDIR, parent.name)
        if not valid_name(name):
            raise _err(errno.ENAMETOOLONG if len(name) > NAME_MAX else errno.ENOENT, name)
        res = self._lookup_res(parent, name)
        if not res.exists:
            raise _err(errno.ENOENT, name)
        node = self._materialize(parent, name, res)
        self.inodes.add_lookup(node)
        return self.attr(node)

    def lookup_nowait(self, parent_ino: int, name: str) -> Attr | None:
        """Like :meth:`lookup` when the answer is already here - a fresh entry of the
        metadata cache or of a folder's listing page - else ``None`` (nothing is sent,
        nothing waited for). Lets the FUSE adapter answer it without a worker thread:
        readers of many small files in one folder look up names the first LIST told."""
        parent = self.inodes.get(parent_ino)
        if parent is None or parent.kind not in (Kind.BUCKET, Kind.DIR) or not valid_name(name):
            return None
        local = self.inodes.child(parent.ino, name)
        if local is not None and (local.session is not None or local.unlinked):
            return None
        key = parent.child_key(name)
        res = self.meta.get(parent.bucket, key)
        if res is None:
            res = self.folders.known(parent.bucket, parent.key, name)
        if res is None:
            return None
        if not res.exists:
            raise _err(errno.ENOENT, name)
        node = self._materialize(parent, name, res)
        self.inodes.add_lookup(node)
        return self.attr(node)

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

    def _revalidate(self, node: Inode) -> None:
        """Refresh a file's info from S3 if older than the TTL (no-op while written here)."""
        if node.kind not in (Kind.FILE, Kind.SYMLINK) or node.session is not None:
            return
        if node.unlinked or time.monotonic() - node.validated < self.config.metadata_ttl:
            return
        res = self._known(node.bucket, node.key)
        if res is None:
            info = self.store.head(node.bucket, node.key)
            res = Resolution(self._kind_of(info), info) if info is not None else MISSING
            self.meta.put(node.bucket, node.key, res)
        if res.kind in (Kind.FILE, Kind.SYMLINK) and res.info is not None:
            node.info = res.info
            node.validated = time.monotonic()

    def getattr(self, ino: int) -> Attr:
        node = self._node(ino)
        self._revalidate(node)
        return self.attr(node)

    def setattr(
        self,
        ino: int,
        size: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        fh: int | None = None,
    ) -> Attr:
        node = self._node(ino)
        cfg = self.config
        if mode is not None and stat.S_IMODE(mode) != stat.S_IMODE(node.kind.mode_bits):
            raise UnsupportedOperation(errno.EPERM, "permissions are fixed (see SEMANTICS.md)")
        if (uid is not None and uid != cfg.uid) or (gid is not None and gid != cfg.gid):
            raise UnsupportedOperation(errno.EPERM, "ownership is fixed (see SEMANTICS.md)")
        if size is not None:
            if node.kind.is_dir:
                raise _err(errno.EISDIR, node.name)
            if node.kind is not Kind.FILE:
                raise _err(errno.EINVAL, node.name)
            self._check_writable()
            session = self._session(node, load=size > 0)
            session.truncate(size)
            node.extra["wmtime"] = time.time()
            if fh is None and node.opens == 0:
                self._commit(node)
        # mtime/atime: accepted and ignored - an object's time is when it was written.
        return self.attr(node)

    # -- directories ------------------------------------------------------------------------
    def opendir(self, ino: int) -> int:
        node = self._node(ino)
        if not node.kind.is_dir:
            raise _err(errno.ENOTDIR, node.name)
        fixed: list[Entry] | None = None
        if node.kind is Kind.ROOT:
            fixed = [(SCHEME, Kind.SCHEME, None)]
        elif node.kind is Kind.SCHEME:
            names = list(self.config.buckets) or self.store.list_buckets()
            fixed = [(b, Kind.BUCKET, None) for b in names if valid_name(b)]
        listing = DirListing(
            node, self.store, self.fetch_pool, self.meta, self.config.listing_heads, fixed
        )
        fh = self._fh()
        with self._lock:
            self._dirs[fh] = listing
        return fh

    def readdir(self, fh: int, start: int) -> Iterator[tuple[str, Attr, int]]:
        """Entries from position ``start``: ``(name, attr, next_position)``.

        The caller must :meth:`readdir_reported` each entry the kernel accepted, which
        counts a lookup on its inode (FUSE readdirplus semantics).
        """
        with self._lock:
            handle = self._dirs.get(fh)
        if handle is None:
            raise _err(errno.EBADF, f"directory handle {fh}")
        with handle.lock:
            pos = start
            while True:
                if pos >= len(handle.entries):
                    handle.fill(pos + 1, lambda: self.inodes.children_of(handle.node.ino))
                    if pos >= len(handle.entries):
                        return
                name, kind, info = handle.settle(pos)
                node = self._materialize(handle.node, name, Resolution(kind, info))
                handle.reported = max(handle.reported, pos + 1)
                yield name, self.attr(node), pos + 1
                pos += 1

    def readdir_reported(self, ino: int) -> None:
        node = self.inodes.get(ino)
        if node is not None:
            self.inodes.add_lookup(node)

    def readdir_unreported(self, ino: int) -> None:
        self.inodes.forget(ino, 0)

    def releasedir(self, fh: int) -> None:
        with self._lock:
            self._dirs.pop(fh, None)

    def mkdir(self, parent_ino: int, name: str) -> Attr:
        self._check_writable()
        parent = self._dir_parent(parent_ino)
        if not valid_name(name):
            raise _err(errno.EINVAL, name)
        key = parent.child_key(name)
        if self._lookup_res(parent, name).exists:
            raise _err(errno.EEXIST, name)
        self.store.put(parent.bucket, key + "/", b"")
        self.meta.put(parent.bucket, key, Resolution(Kind.DIR))
        self._folder_changed(parent.bucket, parent.key)
        node = self._materialize(parent, name, Resolution(Kind.DIR))
        self.inodes.add_lookup(node)
        return self.attr(node)

    def rmdir(self, parent_ino: int, name: str) -> None:
        self._check_writable()
        parent = self._dir_parent(parent_ino)
        res = self._lookup_res(parent, name)
        if not res.exists:
            raise _err(errno.ENOENT, name)
        if res.kind is not Kind.DIR:
            raise _err(errno.ENOTDIR, name)
        prefix = parent.child_key(name) + "/"
        for entry in self.store.list(parent.bucket, prefix=prefix, max_keys=2):
            if isinstance(entry, CommonPrefix) or entry.key != prefix:
                raise _err(errno.ENOTEMPTY, name)
        node = self.inodes.child(parent.ino, name)
        if node is not None and any(
            c.session is not None and not c.unlinked for c in self.inodes.children_of(node.ino)
        ):
            raise _err(errno.ENOTEMPTY, name)
        self.store.delete(parent.bucket, prefix)
        self.meta.put(parent.bucket, parent.child_key(name), MISSING)
        self._folder_changed(parent.bucket, parent.key)
        self.inodes.detach_name(parent.ino, name)

    # -- files ------------------------------------------------------------------------------
    def _session(self, node: Inode, load: bool) -> WriteSession:
        """The inode's write session, created (and filled with the object) if needed."""
        with self._lock:
            session = node.session
            if session is None:
                metadata = dict(node.info.metadata) if node.info is not None else {}
                session = WriteSession(
                    self.store,
                    self.upload_pool,
                    node.bucket,
                    node.key,
                    self.spool_dir,
                    part_size=self.config.part_size,
                    metadata=metadata,
                )
                node.session = session
                fresh = True
            else:
                fresh = False
        if fresh and load and node.info is not None and node.info.size > 0:
            info = node.info
            try:
                session.load(
                    lambda path: self.store.download_file(node.bucket, node.key, path), info.size
                )
            except BaseException:
                with self._lock:
                    node.session = None
                session.discard()
                raise
        return session

    def open_nowait(self, ino: int, flags: int) -> tuple[int, bool] | None:
        """Like :meth:`open` for a read-only open of a file whose metadata is fresh (no
        request needed), else ``None``."""
        node = self.inodes.get(ino)
        if node is None or node.kind is not Kind.FILE or node.session is not None:
            return None
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            return None
        if node.unlinked or time.monotonic() - node.validated >= self.config.metadata_ttl:
            return None
        return self.open(ino, flags)

    def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Open a file; returns ``(fh, keep_kernel_cache)``."""
        node = self._node(ino)
        if node.kind.is_dir:
            raise _err(errno.EISDIR, node.name)
        if node.kind is Kind.SYMLINK:
            raise _err(errno.ELOOP, node.name)
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self._check_writable()
        self._revalidate(node)
        if writable and flags & os.O_TRUNC:
            self._session(node, load=False).truncate(0)
            node.extra["wmtime"] = time.time()
        fh = self._fh()
        handle = _FileHandle(fh, node, flags, writable)
        self.inodes.opened(node)
        with self._lock:
            self._files[fh] = handle
        # Keep the kernel's page cache if it holds this very version of the object.
        etag = node.info.etag if node.info is not None else None
        keep = node.session is None and etag is not None and node.extra.get("kernel_etag") == etag
        if node.session is None:
            node.extra["kernel_etag"] = etag
        else:
            node.extra.pop("kernel_etag", None)
        small = node.info is not None and 0 < node.info.size <= self.small.threshold
        if small and node.session is None and not writable:
            prefix = node.key[: node.key.rfind("/") + 1]
            self.small.opened(node.bucket, prefix, node.key)
        return fh, keep

    def _handle(self, fh: int) -> _FileHandle:
        with self._lock:
            handle = self._files.get(fh)
        if handle is None:
            raise _err(errno.EBADF, f"file handle {fh}")
        return handle

    def create(self, parent_ino: int, name: str, flags: int) -> tuple[int, Attr]:
        """Create (or truncate) a file and open it; it appears in S3 on close."""
        self._check_writable()
        parent = self._dir_parent(parent_ino)
        if not valid_name(name):
            raise _err(errno.ENAMETOOLONG if len(name) > NAME_MAX else errno.EINVAL, name)
        key = parent.child_key(name)
        node = self.inodes.ensure(parent, name, Kind.FILE, parent.bucket, key)
        node.unlinked = False
        if node.session is None:
            node.info = None
        self._session(node, load=False).truncate(0)
        node.extra["wmtime"] = time.time()
        node.validated = time.monotonic()
        self.meta.invalidate(parent.bucket, key)
        self.inodes.add_lookup(node)
        fh = self._fh()
        handle = _FileHandle(fh, node, flags, True)
        self.inodes.opened(node)
        with self._lock:
            self._files[fh] = handle
        return fh, self.attr(node)

    def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        got = self._read(fh, offset, length, block=True)
        assert got is not None
        self.stats.add(reads=1, bytes_read=len(got))
        return got

    def read_nowait(self, fh: int, offset: int, length: int) -> bytes | memoryview | None:
        """Like :meth:`read` when the bytes are already here, else ``None`` (no waiting).

        Lets the FUSE adapter answer prefetched reads without a hop to a worker thread.
        """
        got = self._read(fh, offset, length, block=False)
        if got is not None:
            self.stats.add(reads=1, bytes_read=len(got))
        return got

    def _read(self, fh: int, offset: int, length: int, block: bool) -> bytes | memoryview | None:
        handle = self._handle(fh)
        node = handle.node
        session = node.session
        if session is not None:
            return session.read(offset, length)
        info = node.info
        if info is None or offset >= info.size:
            return b""
        if info.size <= self.small.threshold:
            if not block:
                held = self.small.held(node.bucket, node.key, info.etag or None)
                return memoryview(held)[offset : offset + length] if held is not None else None
            data = self.small.get(node.bucket, node.key, info.etag or None, info.size)
            return memoryview(data)[offset : offset + length]
        with handle.lock:
            if handle.prefetcher is None or (
                handle.source is not None and handle.source.etag != info.etag
            ):
                if handle.prefetcher is not None:
                    handle.prefetcher.close()
                handle.source = ObjectSource(
                    self.store, self.cache, node.bucket, node.key, info.etag, info.size
                )
                handle.prefetcher = Prefetcher(
                    handle.source,
                    self.fetch_pool,
                    part_size=self.config.read_part_size,
                    max_window=self.config.max_window,
                    random_span=self.config.random_span,
                    budget=self.read_budget,
                )
            prefetcher = handle.prefetcher
        return prefetcher.read(offset, length, block=block)

    def write(self, fh: int, offset: int, data: bytes | memoryview) -> int:
        self.stats.add(writes=1, bytes_written=len(data))
        handle = self._handle(fh)
        if not handle.writable:
            raise _err(errno.EBADF, "not open for writing")
        node = handle.node
        session = node.session or self._session(node, load=True)
        if handle.prefetcher is not None:
            handle.prefetcher.close()
            handle.prefetcher = None
        node.extra["wmtime"] = time.time()
        return session.write(offset, data)

    def _commit(self, node: Inode) -> None:
        session = node.session
        if session is None or not session.dirty:
            return
        if node.unlinked:
            return  # unlinked while open: nothing to publish
        started = time.monotonic()
        try:
            etag = session.commit()
        except UploadFailed:
            raise
        except FusionError as err:
            raise UploadFailed(str(err), err=getattr(err, "errno", errno.EIO)) from err
        log.debug(
            "published s3://%s/%s: %d bytes, %d parts uploaded while writing, close took %.2fs",
            node.bucket,
            node.key,
            session.size,
            session.parts_uploaded_early,
            time.monotonic() - started,
        )
        self.stats.add(objects_published=1, bytes_published=session.size)
        info = ObjectInfo(node.key, session.size, etag, time.time(), dict(session.metadata))
        node.info = info
        node.validated = time.monotonic()
        self.meta.put(node.bucket, node.key, Resolution(Kind.FILE, info))
        self.small.invalidate(node.bucket, node.key)
        parent = self.inodes.get(node.parent)
        if parent is not None:
            self._folder_changed(node.bucket, parent.key)

    def flush(self, fh: int) -> None:
        """close(2): publish the file if it was written. Errors reach the caller of close."""
        handle = self._handle(fh)
        if handle.writable:
            self._commit(handle.node)

    def read_only_handle(self, fh: int) -> bool:
        """Whether ``fh`` was opened read-only: its flush is a no-op and its release never
        waits on the network, so the adapter answers both without a thread hop."""
        with self._lock:
            handle = self._files.get(fh)
        return handle is not None and not handle.writable and handle.node.session is None

    def fsync(self, fh: int) -> None:
        self.flush(fh)

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._files.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        if handle.prefetcher is not None:
            handle.prefetcher.close()
        session = node.session
        if handle.writable and session is not None and session.dirty and not session.failed:
            # Written after the last flush (rare: writes through a dup'ed descriptor that
            # was never closed, or mmap). Nobody waits for release: log on failure. A
            # flush that failed was reported to close(2) and is not retried behind the
            # caller's back.
            try:
                self._commit(node)
            except (FusionError, OSError) as err:
                log.error("s3://%s/%s was not written: %s", node.bucket, node.key, err)
        self.inodes.released(node)
        with self._lock:
            session = node.session
            last = node.opens == 0 and session is not None
            if last:
                node.session = None
        if last and session is not None:
            session.discard()

    def unlink(self, parent_ino: int, name: str) -> None:
        self._check_writable()
        parent = self._dir_parent(parent_ino)
        res = self._lookup_res(parent, name)
        if not res.exists:
            raise _err(errno.ENOENT, name)
        if res.kind is Kind.DIR:
            raise _err(errno.EISDIR, name)
        key = parent.child_key(name)
        node = self.inodes.child(parent.ino, name)
        committed = res.info is not None and (node is None or node.info is not None)
        if committed:
            self.store.delete(parent.bucket, key)
        self.meta.put(parent.bucket, key, MISSING)
        self.small.invalidate(parent.bucket, key)
        self._folder_changed(parent.bucket, parent.key)
        if node is not None:
            self.inodes.detach(node)

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        self._check_writable()
        if flags & RENAME_EXCHANGE:
            raise UnsupportedOperation(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        src_dir = self._dir_parent(old_parent)
        dst_dir = self._dir_parent(new_parent)
        if not valid_name(new_name):
            raise _err(errno.EINVAL, new_name)
        res = self._lookup_res(src_dir, old_name)
        if not res.exists:
            raise _err(errno.ENOENT, old_name)
        if res.kind is Kind.DIR:
            raise UnsupportedOperation(
                errno.EXDEV, "directories cannot be renamed (mv copies them instead)"
            )
        if src_dir.bucket != dst_dir.bucket:
            raise UnsupportedOperation(errno.EXDEV, "rename across buckets")
        target = self._lookup_res(dst_dir, new_name)
        if target.exists:
            if flags & RENAME_NOREPLACE:
                raise _err(errno.EEXIST, new_name)
            if target.kind is Kind.DIR:
                raise _err(errno.EISDIR, new_name)
        src_key = src_dir.child_key(old_name)
        dst_key = dst_dir.child_key(new_name)
        if src_key == dst_key:
            return
        node = self._materialize(src_dir, old_name, res)
        if node.session is not None and node.session.dirty:
            # Written here and not yet published: publish under the new name instead.
            self._commit(node)
        self.store.copy(src_dir.bucket, src_key, dst_key)
        self.store.delete(src_dir.bucket, src_key)
        self.inodes.move(node, dst_dir, new_name, dst_key)
        if node.session is not None:
            node.session.key = dst_key
        if node.info is not None:
            node.info = ObjectInfo(
                dst_key, node.info.size, node.info.etag, node.info.mtime, node.info.metadata
            )
        self.meta.put(src_dir.bucket, src_key, MISSING)
        self.meta.put(dst_dir.bucket, dst_key, Resolution(node.kind, node.info, node.target))
        self.small.invalidate(src_dir.bucket, src_key)
        self.small.invalidate(dst_dir.bucket, dst_key)
        self._folder_changed(src_dir.bucket, src_dir.key)
        self._folder_changed(dst_dir.bucket, dst_dir.key)

    def symlink(self, parent_ino: int, name: str, target: str) -> Attr:
        self._check_writable()
        parent = self._dir_parent(parent_ino)
        if not valid_name(name):
            raise _err(errno.EINVAL, name)
        body = target.encode(errors="surrogateescape")
        if len(body) > MAX_TARGET:
            raise _err(errno.ENAMETOOLONG, "symlink target")
        if self._lookup_res(parent, name).exists:
            raise _err(errno.EEXIST, name)
        key = parent.child_key(name)
        etag = self.store.put(parent.bucket, key, body, SYMLINK_METADATA)
        info = ObjectInfo(key, len(body), etag, time.time(), dict(SYMLINK_METADATA))
        res = Resolution(Kind.SYMLINK, info, target)
        self.meta.put(parent.bucket, key, res)
        self._folder_changed(parent.bucket, parent.key)
        node = self._materialize(parent, name, res)
        self.inodes.add_lookup(node)
        return self.attr(node)

    def readlink(self, ino: int) -> str:
        node = self._node(ino)
        if node.kind is not Kind.SYMLINK:
            raise _err(errno.EINVAL, node.name)
        if node.target is None:
            node.target = self.store.get(node.bucket, node.key).decode(errors="surrogateescape")
        return node.target

    def statfs(self) -> StatFs:
        # Object storage has no fixed capacity; report a large, constant one.
        blocks = 1 << 40
        return StatFs(
            bsize=4096,
            frsize=4096,
            blocks=blocks,
            bfree=blocks,
            bavail=blocks,
            files=1 << 32,
            ffree=1 << 32,
            namemax=NAME_MAX,
        )

    def unsupported(self, what: str, number: int) -> OSError:
        """The error for an operation Fusion does not do (SEMANTICS.md lists them)."""
        return UnsupportedOperation(number, f"{what} is not supported")

    def io_stats(self) -> dict[str, int]:
        """What this mount did so far (see :mod:`fusion.io_stats`)."""
        counts = self.stats.snapshot()
        counts |= {"cache_hits": self.cache.hits, "cache_misses": self.cache.misses}
        fetched = getattr(self.store, "fetched", None)  # counted by the stores that can
        if isinstance(fetched, IoStats):
            store = fetched.snapshot()
            counts |= {"gets": store["gets"], "bytes_fetched": store["bytes_fetched"]}
        return counts

    def shutdown(self) -> None:
        """Drop spools of files never closed (they are not uploaded) and stop threads."""
        with self._lock:
            handles = list(self._files.values())
            self._files.clear()
        for handle in handles:
            session = handle.node.session
            if session is not None:
                if session.dirty:
                    log.warning(
                        "unmounting with s3://%s/%s open and not closed: not uploaded",
                        handle.node.bucket,
                        handle.node.key,
                    )
                session.discard()
                handle.node.session = None
        log.info("stats: %s", self.io_stats())
        self.fetch_pool.shutdown(wait=False, cancel_futures=True)
        self.upload_pool.shutdown(wait=False, cancel_futures=True)
