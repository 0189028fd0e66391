"""Writing cache blocks to local disk without copying them through the page cache.

A buffered ``write(2)`` of 1 MiB copies it into page-cache pages that the kernel later
writes back: on the nodes measured (ext4 on a virtual disk) 1.2 s of CPU per GiB,
against 0.08 s for the same bytes written with ``O_DIRECT``, where the disk reads them
straight from the writer's memory. A mount that fills its block cache while it streams
from S3 spends that CPU on the very cores its readers need, so whole blocks are written
direct where the file system allows it.

``O_DIRECT`` needs the buffer's address, the length and the file offset aligned to the
device's logical block size: a block is copied into one of a few page-aligned buffers
(an anonymous ``mmap``, reused: a memory copy costs a fraction of a page-cache write)
and written from there. A length that is not a multiple of ``ALIGN`` (an object's last
block) is written buffered. A file system that refuses ``O_DIRECT`` (ramfs, tmpfs before
Linux 6.6, some network file systems: ``EINVAL`` at open or at the write) turns direct
writes off for the writer's lifetime; a full disk does not.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue

__all__ = ["ALIGN", "BlockWriter"]

#: Alignment of direct writes: a page covers every common logical block size.
ALIGN = 4096
#: Errors of a full disk or quota: the same for a buffered write, so not a reason to stop
#: writing direct.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class BlockWriter:
    """Writes whole files of block bytes; thread-safe."""

    def __init__(self, block_size: int, buffers: int = 4, direct: bool = True) -> None:
        self.block_size = block_size
        self.direct = direct and hasattr(os, "O_DIRECT")
        # Anonymous maps: page aligned, and no memory is used until a write touches them.
        self._buffers: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(max(1, buffers)):
            self._buffers.put(mmap.mmap(-1, block_size))
        self.direct_writes = 0
        self.buffered_writes = 0

    def write(self, path: str, data: bytes | memoryview, buffered: bool = False) -> None:
        """Create ``path`` holding ``data`` (``OSError`` on failure); ``buffered``
        writes through the page cache even where direct writes work."""
        n = len(data)
        if self.direct and not buffered and n % ALIGN == 0 and n <= self.block_size:
            try:
                self._write_direct(path, data)
                self.direct_writes += 1
                return
            except OSError as err:
                if err.errno in _FULL:
                    raise
                # EINVAL at open, an alignment the device wants larger, EOPNOTSUPP...:
                # this file system does not take our direct writes; a disk error
                # shows again in the buffered write below.
                self.direct = False
        with open(path, "wb") as fh:
            fh.write(data)
        self.buffered_writes += 1

    def _write_direct(self, path: str, data: bytes | memoryview) -> None:
        n = len(data)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
        try:
            buf = self._buffers.get()  # waits while every buffer is in use
            try:
                view = memoryview(buf)[:n]
                view[:] = data
                done = 0
                while done < n:
                    done += os.write(fd, view[done:])
            finally:
                self._buffers.put(buf)
        finally:
            os.close(fd)
