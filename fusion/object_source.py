"""Byte ranges of one object version, through the on-disk block cache.

:class:`ObjectSource` is what the prefetcher and random reads fetch from. A block-aligned
range is served from the :class:`~fusion.chunk_cache.ChunkCache` when every block is
there; otherwise it is one ranged GET (from the first missing block), and the whole
blocks it returned are added to the cache. An unaligned range (a random read) is served
from cache when its blocks are all there and otherwise fetched exactly - random reads
never pull in more than they asked for. Objects larger than the whole cache are not
cached at all: they would evict everything, themselves included, before a second read.

GETs carry ``If-Match: <etag>`` so that bytes of two versions are never stitched into
one read: a writer on another node replacing the object mid-read makes the read fail
with ``ESTALE`` (on servers that honour If-Match) instead of returning a mix.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from fusion.chunk_cache import CacheKey, ChunkCache
from fusion.progress import Progress
from fusion.store import ObjectStore

__all__ = ["ObjectSource"]


class ObjectSource:
    """A :class:`~fusion.prefetch.RangeSource` for ``s3://bucket/key`` at ``etag``."""

    def __init__(
        self,
        store: ObjectStore,
        cache: ChunkCache,
        bucket: str,
        key: str,
        etag: str,
        size: int,
    ) -> None:
        self.store = store
        self.cache = cache
        self.bucket = bucket
        self.key = key
        self.etag = etag
        self.size = size
        self.block_size = cache.block_size
        self.cache_key = CacheKey(bucket, key, etag)
        # An object larger than the whole cache would only evict everything, itself
        # included, before anyone read it again (LRU thrash): stream it uncached.
        self.cacheable = cache.enabled and size <= cache.capacity
        #: Whether the blocks of the current sequential pass go to the cache.
        self.streams_cached = self.cacheable
        self.bytes_fetched = 0

    def _block_end(self, block: int) -> int:
        return min(self.size, (block + 1) * self.block_size)

    def cached_block(self, block: int, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes ``[start, end)`` of block ``block`` (all of it by default) from the disk
        cache, if the block is there whole."""
        if not self.cache.enabled:
            return None
        length = self._block_end(block) - block * self.block_size
        end = length if end is None else min(end, length)
        data = self.cache.get(self.cache_key, block, start, end)
        if data is None or len(data) != end - start:
            return None
        return data

    @property
    def keeps_blocks(self) -> bool:
        return self.cache.enabled

    @property
    def cache_capacity(self) -> int:
        return self.cache.capacity if self.cache.enabled else 0

    def has_block(self, block: int) -> bool:
        return self.cache.enabled and self.cache.contains(self.cache_key, block)

    def fetch_exact(self, start: int, end: int) -> bytes:
        """One GET of exactly ``[start, end)``, nothing cached (see :meth:`keep`)."""
        return self._get(start, min(end, self.size))

    def fetch_into(self, start: int, progress: Progress) -> bytearray:
        """One GET of ``progress.size`` bytes from ``start``, readable as they arrive."""
        end = min(self.size, start + progress.size)
        try:
            into = getattr(self.store, "get_range_into", None)
            if into is not None:
                into(self.bucket, self.key, start, end, self.etag or None, progress)
            else:
                progress.fill(
                    self.store.get_range(self.bucket, self.key, start, end, self.etag or None)
                )
        except BaseException as err:
            progress.finished(err)
            raise
        progress.finished()
        self.bytes_fetched += progress.received
        return progress.buffer

    def fill_range(self, start: int, end: int, stop: Callable[[], bool] = lambda: False) -> None:
        """Fetch ``[start, end)`` (block aligned) into the cache, block by block as it
        arrives: one GET that holds one block of memory however long it is. Ends early,
        after a block, once ``stop()`` is true."""
        end = min(end, self.size)
        if not self.cache.enabled or end <= start:
            return
        blocks = getattr(self.store, "get_range_blocks", None)
        if blocks is None:
            self.keep(start, self._get(start, end))
            return

        writes: list[Future[None]] = []

        def deliver(offset: int, view: memoryview) -> bool:
            self.bytes_fetched += len(view)
            if len(view) == self.block_size or offset + len(view) == self.size:
                writes.append(self.cache.put_soon(self.cache_key, offset // self.block_size, view))
            return not stop()

        try:
            blocks(self.bucket, self.key, start, end, self.etag or None, self.block_size, deliver)
        finally:
            for written in writes:  # the blocks received are in the cache on return
                written.result()

    def keep(self, start: int, data: bytes | memoryview) -> None:
        """Put the whole blocks inside ``data`` (read from ``start``) in the cache.

        For reads at random offsets: what was fetched around one is likely read by the
        next, so it is kept even for objects too large to cache while streaming.
        """
        if not self.cache.enabled:
            return
        bs = self.block_size
        end = start + len(data)
        first = -(-start // bs) * bs
        last = end if end == self.size else end - end % bs
        if last > first:
            self.cache.put_range(
                self.cache_key, first, memoryview(data)[first - start : last - start]
            )

    def begin_stream(self) -> None:
        """A sequential pass starts: ask the cache whether to keep what it streams."""
        self.streams_cached = self.cacheable and self.cache.admit_stream(self.cache_key, self.size)

    def keep_streamed(self, start: int, data: bytes | memoryview) -> None:
        """:meth:`keep` for bytes read in order, when the cache admitted this pass."""
        if self.streams_cached:
            self.keep(start, data)

    def fetch(self, start: int, end: int, keep: bool = True) -> bytes:
        """Bytes ``[start, end)``, from the cache where every block is there.

        With ``keep=False`` nothing fetched is written to the cache here: the caller
        does that later with :meth:`keep_streamed`, off the reader's path."""
        end = min(end, self.size)
        if end <= start:
            return b""
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        cached: list[bytes] = []
        if self.cacheable:
            for block in range(first, last + 1):
                data = self.cache.get(self.cache_key, block)
                if data is None or len(data) != self._block_end(block) - block * bs:
                    break
                cached.append(data)
        if len(cached) == last - first + 1:
            joined = cached[0] if len(cached) == 1 else b"".join(cached)
            lo = start - first * bs
            return joined[lo : lo + (end - start)]
        aligned = start % bs == 0
        if not aligned:
            return self._get(start, end)
        # Keep the cached prefix, fetch from the first missing block to the end.
        got_from = start + len(cached) * bs
        fresh = self._get(got_from, end)
        tail_complete = end == self.size or end % bs == 0
        usable = len(fresh) if tail_complete else len(fresh) - len(fresh) % bs
        if usable > 0 and self.cacheable and keep:
            self.cache.put_range(self.cache_key, got_from, memoryview(fresh)[:usable])
        if not cached:
            return fresh
        return b"".join([*cached, fresh])

    def _get(self, start: int, end: int) -> bytes:
        data = self.store.get_range(self.bucket, self.key, start, end, etag=self.etag or None)
        self.bytes_fetched += len(data)
        return data
