"""Lookups answered by one shared listing of the folder: single-flight LIST pages.

Why. Sixteen tasks reading a folder's files at once send the kernel sixteen lookups at a
time, each for a name the mount has not seen yet. Resolving each name on its own costs
two requests (a HEAD for the object and a LIST for ``name/``, since either may exist),
and after the metadata TTL the same again for every ``open``. On a folder of a thousand
files that is thousands of requests competing with the reads themselves. One LIST page
answers up to a thousand names at once - which exist, as file or directory, with their
size and ETag - so the first lookup lists the folder and every concurrent lookup of the
same folder waits for that one LIST instead of sending its own (single flight).

What a page proves. A page of ``ListObjectsV2(prefix, delimiter="/", StartAfter=s)``
holds every key and sub-folder between ``s`` (exclusive) and its last entry
(inclusive), or to the end of the folder when it was not truncated. Within that range a
name absent from the page does not exist. A lookup of a key outside every fresh page
lists a page starting just before it (``StartAfter`` = the key minus its last
character; the first LIST of a folder starts at its beginning), so the page also covers
the names that follow - the ones parallel readers ask for next. A lookup waits for a
LIST in flight that started before its key rather than sending another.

What it does not prove. A listing carries no user metadata, so an object small enough
to be a symlink (see :mod:`fusion.symlinks`) still gets a HEAD to learn its type.

Freshness. A page is trusted for the metadata TTL from the moment its LIST was sent,
like any other answer (see :mod:`fusion.meta_cache`). A page still in use past half its
TTL is listed again in the background, so readers of a busy folder never wait for an
expired listing (one LIST per page per half TTL while the folder is being read). Changes made through this mount
drop the folder's pages (:meth:`FolderIndex.changed`), and a LIST that was in flight
during such a change is not kept.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from fusion.inodes import Kind
from fusion.listing import kind_of, valid_name
from fusion.meta_cache import MISSING, MetaCache, Resolution
from fusion.objects import CommonPrefix, ObjectInfo
from fusion.store import ObjectStore
from fusion.symlinks import MAX_TARGET

__all__ = ["FolderIndex"]

PAGE = 1000


@dataclass(frozen=True)
class _Page:
    """Entries of a folder with keys in ``(after, last]`` (``last=None``: to the end)."""

    after: str
    last: str | None
    entries: dict[str, tuple[Kind, ObjectInfo | None]]
    at: float

    def covers(self, key: str) -> bool:
        # Both "key" and "key/" must lie in the range: either may be what the name is.
        return key > self.after and (self.last is None or key + "/" <= self.last)


class FolderIndex:
    """Single-flight LIST pages per folder, answering lookups; thread-safe."""

    def __init__(
        self,
        store: ObjectStore,
        meta: MetaCache,
        ttl: float,
        max_pages: int = 8,
        clock: Callable[[], float] = time.monotonic,
        pool: Executor | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.meta = meta
        self.ttl = ttl
        self.max_pages = max_pages
        self.clock = clock
        self._lock = threading.Lock()
        self._pages: dict[tuple[str, str], list[_Page]] = {}
        #: folder -> {StartAfter of a LIST in flight: its completion}
        self._inflight: dict[tuple[str, str], dict[str, Future[None]]] = {}
        self._generation: dict[tuple[str, str], int] = {}
        self.lists = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def _fresh_page(
        self, folder: tuple[str, str], key: str, since: float | None = None
    ) -> _Page | None:
        """A fresh page covering ``key`` (lock held); drops expired pages.

        A page listed since ``since`` (when a lookup began) is fresh for that lookup
        whatever its age: on a loaded node a LIST can take longer than the TTL, and
        the lookup that waited for it can have no newer answer.
        """
        pages = self._pages.get(folder)
        if not pages:
            return None
        now = self.clock()
        alive = [p for p in pages if now - p.at < self.ttl]
        if since is not None:
            for page in reversed(pages):
                if page.at >= since and page.covers(key):
                    self._pages[folder] = alive
                    if not alive:
                        del self._pages[folder]
                    return page
        if len(alive) != len(pages):
            if alive:
                self._pages[folder] = alive
            else:
                del self._pages[folder]
        for page in reversed(alive):  # the newest first
            if page.covers(key):
                return page
        return None

    def _refresh_soon(self, folder: tuple[str, str], page: _Page) -> None:
        """Re-list a page in use that is past half its life, in the background (lock held).

        Lookups keep using the page - still within its TTL - while the new one is
        fetched, so a busy folder never stalls its readers on an expired listing.
        """
        if self.pool is None or self.clock() - page.at < self.ttl / 2:
            return
        running = self._inflight.setdefault(folder, {})
        if page.after in running:
            return
        fut: Future[None] = Future()
        running[page.after] = fut
        generation = self._generation.get(folder, 0)
        self.pool.submit(self._list, folder[0], folder[1], page.after, generation, fut)

    def lookup(self, bucket: str, prefix: str, name: str) -> Resolution | None:
        """What ``prefix + name`` is, from a listing of the folder; ``None`` if unknown."""
        if not self.enabled:
            return None
        folder = (bucket, prefix)
        key = prefix + name
        began = self.clock()
        for _ in range(4):
            with self._lock:
                page = self._fresh_page(folder, key, since=began)
                mine = False
                if page is None:
                    running = self._inflight.setdefault(folder, {})
                    # A LIST in flight from before this key will most likely cover it.
                    before = [a for a in running if a < key]
                    if before:
                        after = max(before)
                        fut = running[after]
                    else:
                        # The first LIST of a folder starts at its beginning: readers
                        # of one folder usually start near each other, in name order.
                        fresh = not self._pages.get(folder) and not running
                        after = prefix if fresh else key[:-1]
                        fut = Future()
                        running[after] = fut
                        mine = True
                        generation = self._generation.get(folder, 0)
            if page is not None:
                with self._lock:
                    self._refresh_soon(folder, page)
                return self._answer(bucket, key, page.entries.get(name))
            if mine:
                self._list(bucket, prefix, after, generation, fut)
            try:
                fut.result()
            except Exception:
                return None
        return None

    def known(self, bucket: str, prefix: str, name: str) -> Resolution | None:
        """What a fresh page already says of ``prefix + name``, never waiting, never
        listing; ``None`` when no page covers it or only a HEAD could tell (a file small
        enough to be a symlink, not yet resolved)."""
        if not self.enabled:
            return None
        folder = (bucket, prefix)
        key = prefix + name
        with self._lock:
            page = self._fresh_page(folder, key)
            if page is None:
                return None
            self._refresh_soon(folder, page)
            entry = page.entries.get(name)
        return self._answer(bucket, key, entry, head=False)

    def _answer(
        self,
        bucket: str,
        key: str,
        entry: tuple[Kind, ObjectInfo | None] | None,
        head: bool = True,
    ) -> Resolution | None:
        """What a page's entry says of ``key``. A file small enough to be a symlink is
        known only from its metadata: the cache's, else a HEAD (``None`` without
        ``head``)."""
        if entry is None:
            return MISSING
        kind, info = entry
        if kind is Kind.FILE and info is not None and info.size <= MAX_TARGET:
            cached = self.meta.get(bucket, key)
            if cached is not None or not head:
                return cached
            got = self.store.head(bucket, key)  # may be a symlink: only metadata says
            res = Resolution(kind_of(got), got) if got is not None else MISSING
            self.meta.put(bucket, key, res)
            return res
        return Resolution(kind, info)

    def _list(
        self, bucket: str, prefix: str, after: str, generation: int, fut: Future[None]
    ) -> None:
        folder = (bucket, prefix)
        started = self.clock()
        entries: dict[str, tuple[Kind, ObjectInfo | None]] = {}
        raw_last = ""
        count = 0
        try:
            source = self.store.list(bucket, prefix=prefix, delimiter="/", start_after=after)
            for item in itertools.islice(source, PAGE):
                count += 1
                if isinstance(item, CommonPrefix):
                    raw_last = item.prefix
                    name = item.prefix[len(prefix) : -1]
                    if valid_name(name):
                        entries[name] = (Kind.DIR, None)  # the directory wins
                else:
                    raw_last = item.key
                    name = item.key[len(prefix) :]
                    if valid_name(name) and name not in entries:
                        entries[name] = (Kind.FILE, item)
        except Exception as err:
            with self._lock:
                self._inflight.get(folder, {}).pop(after, None)
            fut.set_exception(err)
            return
        self.lists += 1
        page = _Page(after, raw_last if count >= PAGE else None, entries, started)
        with self._lock:
            if self._generation.get(folder, 0) == generation:
                pages = [p for p in self._pages.get(folder, []) if started - p.at < self.ttl]
                pages.append(page)
                self._pages[folder] = pages[-self.max_pages :]
            running = self._inflight.get(folder, {})
            running.pop(after, None)
            if not running:
                self._inflight.pop(folder, None)
        self._remember(bucket, prefix, entries, page)
        fut.set_result(None)

    def _remember(
        self,
        bucket: str,
        prefix: str,
        entries: dict[str, tuple[Kind, ObjectInfo | None]],
        page: _Page,
    ) -> None:
        """Answers for ``stat`` and names for the small-file prefetcher."""
        resolutions = [
            (prefix + name, Resolution(kind, info))
            for name, (kind, info) in entries.items()
            if kind is Kind.DIR or (info is not None and info.size > MAX_TARGET)
        ]
        self.meta.put_many(bucket, resolutions)
        files = [(n, i) for n, (k, i) in entries.items() if k is Kind.FILE]
        old = self.meta.listing(bucket, prefix)
        if old is not None:
            merged = dict(zip(old.names, old.infos, strict=True))
            merged.update(files)
            files = list(merged.items())
            complete = old.complete or page.last is None
        else:
            complete = page.last is None
        self.meta.put_listing(bucket, prefix, files, complete=complete)

    def changed(self, bucket: str, prefix: str) -> None:
        """Something in the folder changed through this mount: forget its pages."""
        with self._lock:
            folder = (bucket, prefix)
            self._pages.pop(folder, None)
            self._generation[folder] = self._generation.get(folder, 0) + 1
