"""Small files read one after another: fetch the ones that follow, in parallel.

A workflow often reads a directory of small files in name order - ``cat shard-*``, a
loader walking ``sample_0001.json`` onwards. Each read is cheap, but each costs a round
trip or two (lookup, then GET): at ~20 ms to first byte that is ~23 files/s, whatever
the bandwidth. The file system cannot make a round trip shorter, but it can make them
overlap: when a small file is opened, the next ``ahead`` small objects of the same
directory, in key order, are fetched at once - whole, one GET each, in parallel - so by
the time the reader opens them the bytes and their metadata are here.

Where the names come from: the directory listing the reader already caused (``ls``, a
glob) is kept as a hint; without one, a single LIST starting after the opened key gives
the next thousand names. A GET returns the object's ETag, size, mtime and metadata, so a
prefetched object also answers the ``lookup`` that precedes its ``open``, with the
freshness of the GET. Lookups of a name whose GET is still in flight wait for it rather
than sending a HEAD of their own.

Bounded: objects of at most ``threshold`` bytes, ``ahead`` in flight, and at most
``max_bytes`` of fetched objects kept (least recently used dropped first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from fusion.inodes import Kind
from fusion.meta_cache import MetaCache, Resolution
from fusion.objects import CommonPrefix, ObjectInfo
from fusion.store import ObjectStore
from fusion.symlinks import is_symlink

__all__ = ["SmallObjects"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Fetched:
    info: ObjectInfo
    data: bytes
    at: float


class SmallObjects:
    """Whole small objects fetched ahead of the reader; thread-safe."""

    def __init__(
        self,
        store: ObjectStore,
        pool: Executor,
        meta: MetaCache,
        threshold: int = 1024 * 1024,
        ahead: int = 64,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.pool = pool
        self.meta = meta
        self.threshold = threshold
        self.ahead = ahead
        self.max_bytes = max_bytes
        self.clock = clock
        # Re-entrant: a fetch that fails at once runs its done-callback inside _start,
        # which holds the lock already.
        self._lock = threading.RLock()
        self._done: OrderedDict[tuple[str, str], _Fetched] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[tuple[str, str], Future[_Fetched]] = {}
        self._listing_inflight: set[tuple[str, str]] = set()
        self.fetches = 0

    @property
    def enabled(self) -> bool:
        return self.ahead > 0 and self.threshold > 0

    # -- fetching ---------------------------------------------------------------------------
    def _fetch(self, bucket: str, key: str) -> _Fetched:
        try:
            info, data = self.store.get_object(bucket, key)
        except FileNotFoundError:
            self.meta.put(bucket, key, Resolution(None))
            raise
        fetched = _Fetched(info, data, self.clock())
        if is_symlink(info.metadata):
            res = Resolution(Kind.SYMLINK, info, data.decode(errors="surrogateescape"))
        else:
            res = Resolution(Kind.FILE, info)
        self.meta.put(bucket, key, res, at=fetched.at - 0.0)
        with self._lock:
            self.fetches += 1
            old = self._done.pop((bucket, key), None)
            if old is not None:
                self._bytes -= len(old.data)
            self._done[(bucket, key)] = fetched
            self._bytes += len(data)
            while self._bytes > self.max_bytes and self._done:
                _, victim = self._done.popitem(last=False)
                self._bytes -= len(victim.data)
            self._inflight.pop((bucket, key), None)
        return fetched

    def _start(self, bucket: str, key: str, etag: str | None) -> Future[_Fetched] | None:
        """Start fetching unless held (same ETag as listed) or in flight (lock held).

        A held object is never fetched again just because it is older than the TTL:
        readers check the ETag they were given on open against it (:meth:`get`), so a
        changed object is fetched then - and only then.
        """
        k = (bucket, key)
        if k in self._inflight:
            return self._inflight[k]
        done = self._done.get(k)
        if done is not None and (not etag or done.info.etag == etag):
            return None
        fut = self.pool.submit(self._fetch, bucket, key)
        self._inflight[k] = fut
        fut.add_done_callback(self._forget_inflight_cb(k))
        return fut

    def _forget_inflight_cb(self, k: tuple[str, str]) -> Callable[[Future[_Fetched]], None]:
        def forget(_fut: Future[_Fetched]) -> None:
            with self._lock:
                fut = self._inflight.get(k)
                if fut is not None and fut.done():
                    del self._inflight[k]

        return forget

    def get(self, bucket: str, key: str, etag: str | None, size: int) -> bytes:
        """The whole object: prefetched, in flight, or fetched now in one GET."""
        with self._lock:
            done = self._done.get((bucket, key))
            if done is not None and (etag is None or done.info.etag == etag):
                self._done.move_to_end((bucket, key))
                return done.data
            fut = self._inflight.get((bucket, key))
        if fut is not None:
            try:
                got = fut.result()
                if etag is None or got.info.etag == etag:
                    return got.data
            except Exception:  # noqa: S110 - fall through to a fetch of our own
                pass
        fetched = self._fetch(bucket, key)
        return fetched.data

    def held(self, bucket: str, key: str, etag: str | None) -> bytes | None:
        """The object if it is already here (never waits, never fetches)."""
        with self._lock:
            done = self._done.get((bucket, key))
            if done is not None and (etag is None or done.info.etag == etag):
                self._done.move_to_end((bucket, key))
                return done.data
        return None

    def pending(self, bucket: str, key: str) -> Resolution | None:
        """The metadata of an in-flight prefetch of ``key`` (waits for it), if any."""
        with self._lock:
            fut = self._inflight.get((bucket, key))
        if fut is None:
            return None
        try:
            fut.result()
        except Exception:
            return None
        return self.meta.get(bucket, key)

    # -- the trigger ------------------------------------------------------------------------
    def opened(self, bucket: str, prefix: str, key: str) -> None:
        """A small file ``key`` in directory ``prefix`` was opened: fetch what follows."""
        if not self.enabled:
            return
        name = key[len(prefix) :]
        listing = self.meta.listing(bucket, prefix)
        following = listing.after(name, self.ahead) if listing is not None else []
        exhausted = listing is not None and len(following) < self.ahead and not listing.complete
        if listing is None or exhausted:
            self._list_then_fetch(bucket, prefix, key)
        self._fetch_following(bucket, following)

    def _fetch_following(self, bucket: str, following: list[ObjectInfo]) -> None:
        with self._lock:
            for info in following:
                if info.size <= self.threshold:
                    self._start(bucket, info.key, info.etag)

    def _list_then_fetch(self, bucket: str, prefix: str, key: str) -> None:
        with self._lock:
            if (bucket, prefix) in self._listing_inflight:
                return
            self._listing_inflight.add((bucket, prefix))

        def run() -> None:
            try:
                entries: list[tuple[str, ObjectInfo | None]] = []
                for entry in self.store.list(
                    bucket, prefix=prefix, delimiter="/", start_after=key, max_keys=1000
                ):
                    if isinstance(entry, CommonPrefix):
                        entries.append((entry.prefix[len(prefix) : -1], None))
                    else:
                        entries.append((entry.key[len(prefix) :], entry))
                old = self.meta.listing(bucket, prefix)
                if old is not None:
                    merged = dict(zip(old.names, old.infos, strict=True))
                    merged.update(entries)
                    entries = list(merged.items())
                self.meta.put_listing(bucket, prefix, entries, complete=False)
                listing = self.meta.listing(bucket, prefix)
                if listing is not None:
                    self._fetch_following(bucket, listing.after(key[len(prefix) :], self.ahead))
            except Exception as err:
                log.debug("listing s3://%s/%s for prefetch failed: %s", bucket, prefix, err)
            finally:
                with self._lock:
                    self._listing_inflight.discard((bucket, prefix))

        self.pool.submit(run)

    def invalidate(self, bucket: str, key: str) -> None:
        with self._lock:
            done = self._done.pop((bucket, key), None)
            if done is not None:
                self._bytes -= len(done.data)

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return self._bytes
