"""Folder listings answering lookups, on the in-memory store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fusion.folders import FolderIndex
from fusion.inodes import Kind
from fusion.memory_store import MemoryObjectStore
from fusion.meta_cache import MetaCache

TTL = 0.2


class SlowListing(MemoryObjectStore):
    """The in-memory store, with each LIST taking longer than the metadata TTL (what a
    loaded node or a far-away endpoint does)."""

    def list(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        time.sleep(TTL * 2)
        return super().list(*args, **kwargs)


def test_a_listing_slower_than_the_ttl_still_answers_the_lookup_that_waited() -> None:
    store = SlowListing()
    store.ensure_bucket("bk")
    for i in range(5):
        store.put("bk", f"d/f{i}", b"x" * 5000)
    index = FolderIndex(store, MetaCache(TTL), TTL)
    found = index.lookup("bk", "d/", "f3")
    assert found is not None and found.kind is Kind.FILE and found.info is not None
    assert found.info.size == 5000
    absent = index.lookup("bk", "d/", "nope")
    assert absent is not None and not absent.exists  # answered: there is no such name
    # One LIST per lookup: each waited for its own, none gave up and asked again.
    assert index.lists == 2
    assert store.calls.get("head", 0) == 0
