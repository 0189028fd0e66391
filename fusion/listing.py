"""One open directory: a paginated LIST streamed into stable positions for readdir.

FUSE reads a directory in small pieces (a few dozen entries per request) and may come
back to any position it was given; S3 lists 1,000 keys per request with an opaque
continuation token. :class:`DirListing` sits between the two: it pulls one LIST page
at a time, only when the kernel has read past what is known, and keeps the entries in
order so that position ``n`` always means the same entry for this open directory.

Per page it also:

* folds common prefixes in as directories, skips the directory's own marker object and
  keys that cannot be file names;
* applies "the directory wins" when both ``a`` and ``a/...`` exist (an entry not yet
  handed to the kernel is replaced; one already handed out stays, and lookups resolve
  the name as the directory);
* sends, in parallel and ahead of the reader, a HEAD for objects small enough to be
  symlinks (a listing carries no metadata) - at most ``heads`` per directory, after
  which small objects are listed as files until a lookup resolves them;
* records every answer in the metadata cache, so the ``stat`` that usually follows a
  listing costs no request, and, once the listing is complete, the names as a hint for
  the small-file prefetcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future

from fusion.errors import StoreError
from fusion.inodes import Inode, Kind
from fusion.meta_cache import MetaCache, Resolution
from fusion.objects import CommonPrefix, ObjectInfo
from fusion.store import ObjectStore
from fusion.symlinks import MAX_TARGET, is_symlink

__all__ = ["NAME_MAX", "DirListing", "Entry", "kind_of", "valid_name"]

NAME_MAX = 255
_LIST_PAGE = 1000

Entry = tuple[str, Kind, ObjectInfo | None]


def valid_name(name: str) -> bool:
    """Whether a key component can be a file name here."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and len(name.encode(errors="surrogateescape")) <= NAME_MAX
    )


def kind_of(info: ObjectInfo) -> Kind:
    """File or symlink, from an object's metadata (HEAD or GET, not LIST)."""
    return Kind.SYMLINK if is_symlink(info.metadata) else Kind.FILE


class DirListing:
    """The entries of one open directory; methods are called with :attr:`lock` held."""

    def __init__(
        self,
        node: Inode,
        store: ObjectStore,
        pool: Executor,
        meta: MetaCache,
        heads: int,
        fixed: list[Entry] | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.pool = pool
        self.meta = meta
        self.heads_left = heads
        self.entries: list[Entry] = list(fixed or [])
        self.index: dict[str, int] = {name: i for i, (name, _, _) in enumerate(self.entries)}
        self.pending: dict[str, Future[ObjectInfo | None]] = {}
        self.reported = 0
        self.lock = threading.Lock()
        self._local_added = False
        self._source: Iterator[ObjectInfo | CommonPrefix] | None = None
        self.done = fixed is not None
        if fixed is None:
            self._source = store.list(node.bucket, prefix=node.key, delimiter="/")

    def fill(self, want: int, local_children: Callable[[], list[Inode]]) -> None:
        """Pull LIST pages until ``want`` entries are known or the listing ends."""
        prefix = self.node.key
        while not self.done and len(self.entries) < want:
            assert self._source is not None
            batch: list[Entry] = []
            for entry in self._source:
                if isinstance(entry, CommonPrefix):
                    name = entry.prefix[len(prefix) : -1]
                    if valid_name(name):
                        batch.append((name, Kind.DIR, None))
                else:
                    name = entry.key[len(prefix) :]
                    if valid_name(name):  # not the marker "prefix/" itself
                        batch.append((name, Kind.FILE, entry))
                if len(batch) >= _LIST_PAGE:
                    break
            else:
                self.done = True
            self._add(batch)
        if self.done and not self._local_added and self._source is not None:
            self._local_added = True
            # Files created here and not yet uploaded are listed too.
            for child in local_children():
                local = child.session is not None and not child.unlinked
                if local and child.name not in self.index:
                    self.index[child.name] = len(self.entries)
                    self.entries.append((child.name, child.kind, child.info))
            hint = [(n, i if k is Kind.FILE else None) for n, k, i in self.entries]
            self.meta.put_listing(self.node.bucket, prefix, hint)

    def _known_kind(self, key: str) -> Kind | None:
        res = self.meta.get(self.node.bucket, key)
        return res.kind if res is not None else None

    def _add(self, batch: list[Entry]) -> None:
        node = self.node
        resolutions: list[tuple[str, Resolution]] = []
        for name, kind, info in batch:
            key = node.child_key(name)
            known = self._known_kind(key)
            if kind is Kind.FILE and known is Kind.SYMLINK:
                kind = Kind.SYMLINK
            pos = self.index.get(name)
            if pos is not None:
                if kind is Kind.DIR and pos >= self.reported:
                    self.entries[pos] = (name, Kind.DIR, None)
                    self.pending.pop(name, None)
                continue
            tiny = kind is Kind.FILE and info is not None and info.size <= MAX_TARGET
            if tiny and known is None and self.heads_left > 0:
                self.heads_left -= 1
                self.pending[name] = self.pool.submit(self.store.head, node.bucket, key)
            self.index[name] = len(self.entries)
            self.entries.append((name, kind, info))
            if name not in self.pending:
                resolutions.append((key, Resolution(kind, info)))
        self.meta.put_many(node.bucket, resolutions)

    def settle(self, pos: int) -> Entry:
        """Entry ``pos``, after its HEAD (if one was sent) has answered."""
        name, kind, info = self.entries[pos]
        fut = self.pending.pop(name, None)
        if fut is None:
            return name, kind, info
        try:
            got = fut.result()
        except StoreError:
            return name, kind, info
        if got is not None:
            kind, info = kind_of(got), got
            self.entries[pos] = (name, kind, info)
            self.meta.put(self.node.bucket, got.key, Resolution(kind, info))
        return name, kind, info
