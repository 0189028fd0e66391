"""What Fusion knows about names, for how long: the metadata cache.

Each entry answers "what is ``bucket/path``?" - a file (with size, ETag, mtime), a
symlink, a directory, or nothing - and is trusted for ``ttl`` seconds (default 1 s,
like mountpoint-s3: long enough that ``ls -l`` or a build's thousand ``stat`` calls cost
one request per name, short enough that an object written on another node shows up
almost at once). Entries come from HEAD and LIST responses, from whole small-object GETs,
and from this node's own writes and deletes. Negative answers are cached too, so a
program probing for optional files (an interpreter's import path) does not hammer S3.

Directory *listings* are kept separately, longer, as hints: the names that follow a
file in a directory are what the small-file prefetcher reads next. A hint is never
used to answer a lookup after its TTL; a stale hint only costs a wasted GET.

Bounded: at most ``max_entries`` names (oldest dropped first) and ``max_listings``
directories.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fusion.inodes import Kind
from fusion.objects import ObjectInfo

__all__ = ["Listing", "MetaCache", "Resolution"]


@dataclass(frozen=True)
class Resolution:
    """What a name is. ``kind is None`` means it does not exist."""

    kind: Kind | None
    info: ObjectInfo | None = None
    target: str | None = None

    @property
    def exists(self) -> bool:
        return self.kind is not None


MISSING = Resolution(None)
_STICKY = (Kind.SYMLINK, Kind.DIR)


@dataclass(frozen=True)
class Listing:
    """A directory's objects in key order (names relative to the prefix), with its time."""

    names: Sequence[str]
    infos: Sequence[ObjectInfo | None]
    at: float
    complete: bool = True

    def after(self, name: str, count: int) -> list[ObjectInfo]:
        """Up to ``count`` objects listed after ``name`` (not directories)."""
        i = bisect.bisect_right(self.names, name)
        out: list[ObjectInfo] = []
        while i < len(self.names) and len(out) < count:
            info = self.infos[i]
            if info is not None:
                out.append(info)
            i += 1
        return out


class MetaCache:
    def __init__(
        self,
        ttl: float,
        max_entries: int = 500_000,
        max_listings: int = 256,
        listing_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.listing_ttl = listing_ttl
        self.max_entries = max_entries
        self.max_listings = max_listings
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[Resolution, float]] = OrderedDict()
        self._listings: OrderedDict[tuple[str, str], Listing] = OrderedDict()

    def get(self, bucket: str, path: str) -> Resolution | None:
        """The cached answer for ``bucket/path`` if still fresh."""
        with self._lock:
            hit = self._entries.get((bucket, path))
            if hit is None:
                return None
            res, expires = hit
            if self.clock() >= expires:
                del self._entries[(bucket, path)]
                return None
            return res

    def put(self, bucket: str, path: str, res: Resolution, at: float | None = None) -> None:
        expires = (self.clock() if at is None else at) + self.ttl
        with self._lock:
            self._entries[(bucket, path)] = (res, expires)
            self._entries.move_to_end((bucket, path))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def put_many(self, bucket: str, items: Sequence[tuple[str, Resolution]]) -> None:
        now = self.clock()
        expires = now + self.ttl
        with self._lock:
            for path, res in items:
                old = self._entries.get((bucket, path))
                # A listing's "file" must not overwrite a fresh "symlink"/"dir" answer.
                sticky = old is not None and old[1] > now and old[0].kind in _STICKY
                if sticky and res.kind is Kind.FILE:
                    continue
                self._entries[(bucket, path)] = (res, expires)
                self._entries.move_to_end((bucket, path))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, bucket: str, path: str) -> None:
        with self._lock:
            self._entries.pop((bucket, path), None)

    # -- listing hints --------------------------------------------------------------------
    def put_listing(
        self,
        bucket: str,
        prefix: str,
        entries: Sequence[tuple[str, ObjectInfo | None]],
        complete: bool = True,
    ) -> None:
        """Keep a directory's names; ``complete=False`` for a partial (start-after) page."""
        ordered = sorted(entries, key=lambda e: e[0])
        listing = Listing([n for n, _ in ordered], [i for _, i in ordered], self.clock(), complete)
        with self._lock:
            self._listings[(bucket, prefix)] = listing
            self._listings.move_to_end((bucket, prefix))
            while len(self._listings) > self.max_listings:
                self._listings.popitem(last=False)

    def listing(self, bucket: str, prefix: str) -> Listing | None:
        with self._lock:
            listing = self._listings.get((bucket, prefix))
            if listing is None:
                return None
            if self.clock() - listing.at > self.listing_ttl:
                del self._listings[(bucket, prefix)]
                return None
            return listing

    def drop_listing(self, bucket: str, prefix: str) -> None:
        with self._lock:
            self._listings.pop((bucket, prefix), None)
