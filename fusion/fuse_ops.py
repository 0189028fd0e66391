"""The pyfuse3 adapter: kernel requests in, :class:`~fusion.fs.FusionFS` calls out.

Thin on purpose. Each handler converts arguments (bytes names to ``str`` with
``surrogateescape``, so any byte string round-trips), runs the file-system method in a
worker thread (``trio.to_thread``: the methods block on S3, and many requests must be in
flight at once - pyfuse3 only overlaps handlers while they ``await``), and converts the
result to pyfuse3 types. Errors: any ``OSError`` becomes ``FUSEError(err.errno)`` - the
errno already chosen by the one S3 table or by the file system - and anything else is
logged and becomes EIO.

Kernel caching: entries and attributes are cached for the metadata TTL; a lookup of a
missing name returns a negative entry cached as long. ``open`` keeps the kernel's page
cache only when it holds the same object version (ETag) - see :meth:`FusionFS.open`.
Requests are up to 1 MiB (``max_read``) and the mount's read-ahead is raised to match
so the kernel does not chop large reads into 128 KiB pieces.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import stat
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyfuse3
import trio

from fusion.fs import Attr, FsConfig, FusionFS
from fusion.io_stats import write_stats_file
from fusion.objects import StoreConfig

__all__ = ["FusionOperations", "serve"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REQUEST = 1024 * 1024
#: Kernel read-ahead for the mount, KiB: two full requests ahead of the reader.
READ_AHEAD_KB = int(os.environ.get("FUSION_READ_AHEAD_KB") or 4096)


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class FusionOperations(pyfuse3.Operations):
    """pyfuse3 handlers delegating to :class:`FusionFS`."""

    enable_writeback_cache = False

    def __init__(self, fs: FusionFS, max_threads: int = 64) -> None:
        super().__init__()
        self.fs = fs
        self.ttl = fs.config.metadata_ttl
        self._limiter = trio.CapacityLimiter(max_threads)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(
                functools.partial(fn, *args), limiter=self._limiter
            )
        except pyfuse3.FUSEError:
            raise
        except OSError as err:
            number = err.errno or errno.EIO
            if number not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                log.info("%s: %s", getattr(fn, "__name__", fn), err)
            raise pyfuse3.FUSEError(number) from err
        except Exception as err:
            log.exception("%s failed", getattr(fn, "__name__", fn))
            raise pyfuse3.FUSEError(errno.EIO) from err

    def _nowait(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a handler's no-wait variant on the event loop: its answer, or ``None``
        when it needs the network (then the caller hops to a worker thread)."""
        try:
            return fn(*args)
        except OSError as err:
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from err

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = pyfuse3.InodeT(attr.ino)
        entry.generation = 0
        entry.entry_timeout = self.ttl
        entry.attr_timeout = self.ttl
        entry.st_mode = pyfuse3.ModeT(attr.mode)
        entry.st_nlink = attr.nlink
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_rdev = 0
        entry.st_size = attr.size
        entry.st_blksize = attr.blksize
        entry.st_blocks = (attr.size + 511) // 512
        ns = int(attr.mtime * 1e9)
        entry.st_atime_ns = ns
        entry.st_mtime_ns = ns
        entry.st_ctime_ns = ns
        return entry

    # -- names ------------------------------------------------------------------------------
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            # Names a fresh listing or cache entry answers: no hop to a worker thread.
            attr = self._nowait(self.fs.lookup_nowait, parent_inode, _name(name))
            if attr is None:
                attr = await self._call(self.fs.lookup, parent_inode, _name(name))
        except pyfuse3.FUSEError as err:
            if err.errno != errno.ENOENT:
                raise
            negative = pyfuse3.EntryAttributes()
            negative.st_ino = pyfuse3.InodeT(0)
            negative.entry_timeout = self.ttl
            return negative
        return self._entry(attr)

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        try:
            self.fs.forget([(int(i), int(n)) for i, n in inode_list])
        except Exception:
            log.exception("forget failed")

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return self._entry(await self._call(self.fs.getattr, inode))

    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        result = await self._call(
            self.fs.setattr,
            inode,
            attr.st_size if fields.update_size else None,
            attr.st_mode if fields.update_mode else None,
            attr.st_uid if fields.update_uid else None,
            attr.st_gid if fields.update_gid else None,
            attr.st_mtime_ns / 1e9 if fields.update_mtime else None,
            fh,
        )
        return self._entry(result)

    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self._call(self.fs.readlink, inode))

    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        target: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        attr = await self._call(self.fs.symlink, parent_inode, _name(name), os.fsdecode(target))
        return self._entry(attr)

    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # no hard links in object storage

    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        mode: int,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # only regular files, directories, symlinks

    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        await self._call(self.fs.unlink, parent_inode, _name(name))

    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: bytes,
        parent_inode_new: pyfuse3.InodeT,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self._call(
            self.fs.rename,
            parent_inode_old,
            _name(name_old),
            parent_inode_new,
            _name(name_new),
            flags,
        )

    # -- directories ------------------------------------------------------------------------
    async def mkdir(
        self, parent_inode: pyfuse3.InodeT, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(await self._call(self.fs.mkdir, parent_inode, _name(name)))

    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        await self._call(self.fs.rmdir, parent_inode, _name(name))

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        return pyfuse3.FileHandleT(await self._call(self.fs.opendir, inode))

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        def collect() -> list[tuple[str, Attr, int]]:
            # One kernel buffer holds a few dozen entries; produce about that many.
            out = []
            for item in self.fs.readdir(fh, start_id):
                out.append(item)
                if len(out) >= 64:
                    break
            return out

        entries = await self._call(collect)
        for i, (name, attr, next_id) in enumerate(entries):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(attr), next_id):
                for _, left, _ in entries[i:]:
                    self.fs.readdir_unreported(left.ino)
                return
            self.fs.readdir_reported(attr.ino)

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self.fs.releasedir(fh)

    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        return None

    # -- files ------------------------------------------------------------------------------
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        opened = self._nowait(self.fs.open_nowait, inode, flags)
        if opened is None:
            opened = await self._call(self.fs.open, inode, flags)
        fh, keep = opened
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=keep)

    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if not stat.S_ISREG(mode) and stat.S_IFMT(mode) != 0:
            raise pyfuse3.FUSEError(errno.EPERM)
        fh, attr = await self._call(self.fs.create, parent_inode, _name(name), flags)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh)), self._entry(attr)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        # Prefetched bytes are answered here, without a hop to a worker thread.
        try:
            data: Any = self.fs.read_nowait(fh, off, size)
        except OSError as err:
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from err
        if data is None:
            data = await self._call(self.fs.read, fh, off, size)
        return data  # bytes or memoryview: pyfuse3 takes any contiguous buffer

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        # Writing to the local spool does not wait on the network: no thread hop needed.
        try:
            return self.fs.write(fh, off, buf)
        except OSError as err:
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from err

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        if self.fs.read_only_handle(fh):
            return  # nothing to publish: answered here, no thread hop
        await self._call(self.fs.flush, fh)

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self._call(self.fs.fsync, fh)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        if self.fs.read_only_handle(fh):
            try:
                self.fs.release(fh)  # drops buffers only: no network, no waiting
            except Exception:
                log.exception("release failed")
            return
        await self._call(self.fs.release, fh)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = s.bsize
        out.f_frsize = s.frsize
        out.f_blocks = s.blocks
        out.f_bfree = s.bfree
        out.f_bavail = s.bavail
        out.f_files = s.files
        out.f_ffree = s.ffree
        out.f_favail = s.ffree
        out.f_namemax = s.namemax
        return out

    # -- extended attributes: none are stored ------------------------------------------------
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> bytes:
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def listxattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return []

    async def setxattr(
        self, inode: pyfuse3.InodeT, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    async def removexattr(
        self, inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise pyfuse3.FUSEError(errno.ENODATA)


def _mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of the mount at ``mountpoint``, from /proc/self/mountinfo.

    Never ``stat`` our own mount from the thread that has to answer the kernel.
    """
    target = os.path.abspath(mountpoint)
    try:
        with open("/proc/self/mountinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == target:
            found = fields[2]
    return found


def _raise_read_ahead(mountpoint: str) -> bool:
    """Let the kernel read ahead in 1 MiB requests (needs root; best effort).

    Returns whether the setting is in place (``True`` also when it cannot be changed,
    so the caller stops trying).
    """
    dev = _mount_device(mountpoint)
    if dev is None:
        return False
    path = f"/sys/class/bdi/{dev}/read_ahead_kb"
    try:
        with open(path, "w") as fh:
            fh.write(str(READ_AHEAD_KB))
        with open(path) as fh:
            return int(fh.read().strip() or 0) >= READ_AHEAD_KB
    except OSError as err:
        log.info("read-ahead stays at the kernel's default (%s: %s)", path, err)
        return True


async def _serve_until_signal(mountpoint: str, ready_file: str | None) -> None:
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                async for signum in sigs:
                    log.info("signal %d: unmounting", signum)
                    pyfuse3.terminate()
                    return

        async def tune_then_ready() -> None:
            # The kernel caps read-ahead when it processes the INIT reply, which happens
            # once the loop below runs: raise it after that, then report ready.
            for _ in range(50):
                await trio.sleep(0.02)
                if await trio.to_thread.run_sync(_raise_read_ahead, mountpoint):
                    break
            if ready_file:
                with open(ready_file, "w") as fh:
                    fh.write(str(os.getpid()))
            log.info("fusion mounted at %s", mountpoint)

        nursery.start_soon(watch)
        nursery.start_soon(tune_then_ready)
        await pyfuse3.main(min_tasks=4, max_tasks=128)
        nursery.cancel_scope.cancel()


def serve(
    mountpoint: str,
    store_config: StoreConfig,
    config: FsConfig,
    allow_other: bool = False,
    debug: bool = False,
    ready_file: str | None = None,
    stats_file: str | None = None,
) -> None:
    """Mount and serve in the foreground until SIGTERM/SIGINT, then unmount cleanly.

    ``ready_file`` is written once the mount is tuned and serving; ``stats_file``, once
    it has ended, with what it did (:mod:`fusion.io_stats`).
    """
    from fusion.store import S3ObjectStore

    store = S3ObjectStore(store_config)
    fs = FusionFS(store, config)
    ops = FusionOperations(fs)
    options = set(pyfuse3.default_options)
    # Request size: libfuse negotiates max_pages from its 1 MiB buffer, so reads and
    # writes of up to 1 MiB arrive whole. (pyfuse3 cannot pass a max_read option: libfuse
    # insists that init() sets the same value, and pyfuse3's init() does not.)
    options |= {"fsname=fusion", "subtype=fusion"}
    options.discard("default_permissions")
    options.add("default_permissions")
    if config.read_only:
        options.add("ro")
    if allow_other:
        options.add("allow_other")
    if debug:
        options.add("debug")
    if ready_file and os.path.exists(ready_file):
        os.unlink(ready_file)
    pyfuse3.init(ops, mountpoint, options)
    try:
        trio.run(_serve_until_signal, mountpoint, ready_file)
    finally:
        pyfuse3.close(unmount=True)
        fs.shutdown()
        if stats_file:
            try:
                write_stats_file(stats_file, fs.io_stats())
            except OSError as err:
                log.warning("could not write the mount's figures to %s: %s", stats_file, err)
        log.info("fusion unmounted from %s", mountpoint)
