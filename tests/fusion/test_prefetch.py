"""The read-ahead window, on a real ObjectSource over the in-memory store."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fusion import chunk_cache
from fusion.chunk_cache import ChunkCache
from fusion.errors import StoreError
from fusion.memory_store import MemoryObjectStore
from fusion.object_source import ObjectSource
from fusion.prefetch import INITIAL_WINDOW, RETAIN, Prefetcher
from fusion.random_reads import FILL_AFTER, MAX_PARTS, fill_piece_blocks

MiB = 1024 * 1024


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(8) as p:
        yield p  # type: ignore[misc]


def _source(
    tmp_path: Path, size: int, cache_bytes: int = 0
) -> tuple[MemoryObjectStore, ObjectSource, bytes]:
    store = MemoryObjectStore()
    store.ensure_bucket("b")
    data = random.Random(size).randbytes(size)
    etag = store.put("b", "k", data)
    cache = ChunkCache(str(tmp_path / "cache"), cache_bytes)
    return store, ObjectSource(store, cache, "b", "k", etag, size), data


def test_sequential_reads_grow_the_window(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    store, src, data = _source(tmp_path, 96 * MiB)
    pf = Prefetcher(src, pool, part_size=8 * MiB, max_window=32 * MiB)
    out = bytearray()
    windows = []
    for off in range(0, len(data), 128 * 1024):
        out += pf.read(off, 128 * 1024)
        windows.append(pf.window)
    assert bytes(out) == data
    assert windows[0] == INITIAL_WINDOW * 2 or windows[0] == INITIAL_WINDOW
    assert max(windows) == 32 * MiB
    assert windows == sorted(windows)  # never shrinks while reading in order
    assert pf.streams_started == 1 and pf.random_reads == 0
    # Few, large requests: far fewer GETs than reads, none of them redundant.
    assert store.calls["get_range"] < 40
    assert src.bytes_fetched == len(data)
    assert pf.buffered_bytes <= 32 * MiB + 16 * MiB


def test_random_reads_fetch_only_what_they_need(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    _, src, data = _source(tmp_path, 64 * MiB)
    pf = Prefetcher(src, pool)
    pf.read(0, 4096)  # the first read starts a stream with the small initial window
    fetched_after_first = src.bytes_fetched
    assert fetched_after_first <= 2 * INITIAL_WINDOW
    rng = random.Random(1)
    total = 0
    for _ in range(50):
        off = rng.randrange(0, len(data) - 8192)
        assert bytes(pf.read(off, 4096)) == data[off : off + 4096]
        total += 4096
    assert pf.random_reads >= 45
    assert src.bytes_fetched - fetched_after_first <= total + 4 * INITIAL_WINDOW


def test_out_of_order_requests_stay_in_the_stream(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    _, src, data = _source(tmp_path, 32 * MiB)
    pf = Prefetcher(src, pool)
    order = []
    for base in range(0, 32 * MiB, 4 * MiB):  # like the kernel: a batch, shuffled
        batch = list(range(base, base + 4 * MiB, MiB))
        random.Random(base).shuffle(batch)
        order += batch
    for off in order:
        assert bytes(pf.read(off, MiB)) == data[off : off + MiB]
    assert pf.streams_started == 1
    assert pf.random_reads == 0
    assert src.bytes_fetched <= len(data) + 4 * MiB


def test_cache_serves_a_second_reader(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    store, src, data = _source(tmp_path, 16 * MiB, cache_bytes=64 * MiB)
    first = Prefetcher(src, pool)
    assert b"".join(bytes(first.read(o, MiB)) for o in range(0, len(data), MiB)) == data
    # Blocks go to the cache after the reads that waited for them were answered.
    deadline = time.monotonic() + 30
    while not all(src.has_block(b) for b in range(16)) and time.monotonic() < deadline:
        time.sleep(0.01)
    gets = store.calls["get_range"]
    second_src = ObjectSource(store, src.cache, "b", "k", src.etag, src.size)
    second = Prefetcher(second_src, pool)
    assert b"".join(bytes(second.read(o, MiB)) for o in range(0, len(data), MiB)) == data
    assert store.calls["get_range"] == gets
    assert second_src.bytes_fetched == 0


def test_a_large_object_is_cached_from_its_second_pass_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_cache, "SCAN_BYTES", 4 * MiB)
    store, src, data = _source(tmp_path, 12 * MiB, cache_bytes=64 * MiB)

    def read_all(source: ObjectSource) -> bytes:
        # The pool's shutdown waits for the GETs and their cache writes (callbacks).
        with ThreadPoolExecutor(4) as own:
            pf = Prefetcher(source, own)
            out = b"".join(bytes(pf.read(o, MiB)) for o in range(0, len(data), MiB))
        pf.close()
        return out

    def again() -> ObjectSource:
        return ObjectSource(store, src.cache, "b", "k", src.etag, src.size)

    assert read_all(src) == data
    assert src.bytes_fetched == len(data) and src.cache.used == 0  # a scan: not cached
    second = again()
    assert read_all(second) == data
    assert second.bytes_fetched == len(data) and src.cache.used == len(data)
    third = again()
    assert read_all(third) == data
    assert third.bytes_fetched == 0  # read a third time: served by the cache


def test_failed_get_fails_the_read_then_recovers(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    store, src, data = _source(tmp_path, 8 * MiB)
    pf = Prefetcher(src, pool)
    store.fail_next("get_range", "InternalError", times=20)
    with pytest.raises(StoreError):
        pf.read(0, MiB)
    store._failures.clear()
    assert bytes(pf.read(0, MiB)) == data[:MiB]
    assert bytes(pf.read(MiB, MiB)) == data[MiB : 2 * MiB]


def test_reads_past_the_end(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    _, src, data = _source(tmp_path, MiB + 5)
    pf = Prefetcher(src, pool)
    assert bytes(pf.read(MiB, 100)) == data[MiB:]
    assert pf.read(MiB + 5, 10) == b""


def test_nonblocking_read_answers_only_when_the_bytes_are_here(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    _, src, data = _source(tmp_path, 8 * MiB)
    pf = Prefetcher(src, pool)
    got = pf.read(0, MiB, block=False)
    if got is None:  # the GET was started; a blocking read then waits for it
        got = pf.read(0, MiB)
    assert bytes(got) == data[:MiB]
    import time

    deadline = time.monotonic() + 5
    ready = None
    while ready is None and time.monotonic() < deadline:
        ready = pf.read(MiB, MiB, block=False)  # prefetched behind the first read
        time.sleep(0.01)
    assert ready is not None and bytes(ready) == data[MiB : 2 * MiB]
    assert pf.read(7 * MiB, 100, block=False) is None  # a seek never answers without waiting
    assert pf.random_reads == 0


def test_streams_share_one_read_budget(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    from fusion.prefetch import ReadBudget

    _, src, data = _source(tmp_path, 64 * MiB)
    budget = ReadBudget(16 * MiB)
    readers = [Prefetcher(src, pool, max_window=32 * MiB, budget=budget) for _ in range(4)]
    peak = 0
    for off in range(0, 32 * MiB, MiB):
        for pf in readers:
            assert bytes(pf.read(off, MiB)) == data[off : off + MiB]
        peak = max(peak, budget.used)
    # Four streams with 32 MiB windows would hold 4 x (32 + 8) MiB on their own; shared,
    # they stay within 16 MiB plus, per stream, what its current read needs and the
    # bytes it keeps behind the reader (RETAIN).
    bound = 16 * MiB + 4 * (8 * MiB + RETAIN)
    assert peak <= bound < 4 * (32 * MiB + RETAIN)
    assert sum(pf.buffered_bytes for pf in readers) <= bound
    for pf in readers:
        pf.close()
    assert budget.used == 0


def test_random_miss_is_one_parallel_round_trip_and_its_neighbourhood_is_kept(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    store, src, data = _source(tmp_path, 64 * MiB, cache_bytes=64 * MiB)
    pf = Prefetcher(src, pool)
    pf.read(0, 4096)  # first read: a stream with the initial window
    off = 30 * MiB + 12345  # a 1 MiB read straddling two blocks
    before = store.calls["get_range"]
    assert bytes(pf.read(off, MiB)) == data[off : off + MiB]
    assert pf.random_reads == 1 and pf.streams_started == 1
    # Its bytes were one round of parallel GETs; the span after it is fetched around it.
    _settle(pf)
    fetched = store.calls["get_range"] - before
    assert 1 < fetched <= MAX_PARTS + 2
    # Reads nearby, in any order, are served without a GET: no GET, no stream.
    calls = store.calls["get_range"]
    for near in (off + MiB, off + 2 * MiB + 7, off + 3 * MiB - 5):
        assert bytes(pf.read(near, MiB)) == data[near : near + MiB]
    assert store.calls["get_range"] == calls
    assert pf.streams_started == 1
    assert pf.window == INITIAL_WINDOW  # a random pattern never grows the window
    # The whole blocks fetched are in the block cache: a new handle reads them from disk.
    other = Prefetcher(ObjectSource(store, src.cache, "b", "k", src.etag, src.size), pool)
    other.read(0, 4096)
    calls = store.calls["get_range"]
    assert bytes(other.read(31 * MiB, MiB)) == data[31 * MiB : 32 * MiB]
    assert store.calls["get_range"] == calls


def test_an_unaligned_read_as_the_kernel_sends_it_is_one_round_of_gets(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """An unaligned 1 MiB pread arrives as a 1 MiB request and a 4 KiB one, each asked
    without waiting first (the adapter's fast path), then waited for."""
    store, src, data = _source(tmp_path, 64 * MiB, cache_bytes=64 * MiB)
    pf = Prefetcher(src, pool)
    pf.read(0, 4096)
    _settle(pf)
    pf._random.factor = 0  # no neighbourhood: count the read's own GETs only
    for off in (9 * MiB + 4096, 40 * MiB + 8192 * 3):
        before = store.calls["get_range"]
        requests = [(off, MiB), (off + MiB, 4096)]
        for o, n in requests:
            assert pf.read(o, n, block=False) is None
        got = b"".join(bytes(pf.read(o, n)) for o, n in requests)
        assert got == data[off : off + MiB + 4096]
        assert store.calls["get_range"] - before <= MAX_PARTS
        assert src.bytes_fetched <= 64 * MiB
    assert pf.streams_started == 1  # the trailing page did not start a stream


def _settle(pf: Prefetcher) -> None:
    deadline = time.monotonic() + 30
    while pf._random.inflight and time.monotonic() < deadline:
        time.sleep(0.01)


def test_scattered_random_reads_stop_fetching_neighbours(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    _, src, data = _source(tmp_path, 192 * MiB, cache_bytes=192 * MiB)
    pf = Prefetcher(src, pool)
    pf.read(0, 4096)
    offsets = [i * 4 * MiB + 4321 for i in range(2, 46)]
    random.Random(3).shuffle(offsets)
    for off in offsets:
        assert bytes(pf.read(off, 256 * 1024)) == data[off : off + 256 * 1024]
    assert pf._random.factor <= 1  # neighbours went unread: the span shrank away
    _settle(pf)
    before = src.bytes_fetched
    far = [i * 4 * MiB + 2 * MiB + 77 for i in range(2, 14)]
    for off in far:
        assert bytes(pf.read(off, 256 * 1024)) == data[off : off + 256 * 1024]
    # Mostly exact fetches now (a probe now and then may fetch a small span).
    assert src.bytes_fetched - before <= len(far) * 256 * 1024 + 2 * MiB


def test_an_object_read_at_random_is_filled_into_the_cache(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    store, src, data = _source(tmp_path, 40 * MiB, cache_bytes=128 * MiB)
    pf = Prefetcher(src, pool)
    pf.read(0, 4096)
    _settle(pf)
    offsets = [o * MiB + 777 for o in (30, 5, 22, 13, 35, 9)]
    for off in offsets[:FILL_AFTER]:
        assert bytes(pf.read(off, 65536)) == data[off : off + 65536]
    deadline = time.monotonic() + 30
    while pf._random.filling and time.monotonic() < deadline:
        time.sleep(0.01)
    _settle(pf)
    assert pf._random.fill_gets >= 40 // fill_piece_blocks(40)  # parallel pieces
    assert all(src.has_block(b) for b in range(40))
    # Every later read, anywhere, is served from the cache.
    calls = store.calls["get_range"]
    for off in [*offsets[FILL_AFTER:], 39 * MiB + 5]:
        n = min(MiB, len(data) - off)
        assert bytes(pf.read(off, n)) == data[off : off + n]
    assert store.calls["get_range"] == calls
    pf.close()


def test_a_fill_cuts_the_object_into_parallel_pieces_of_bounded_size() -> None:
    assert fill_piece_blocks(1024) == 128  # 1 GiB of 1 MiB blocks: 8 GETs of 128 MiB
    assert fill_piece_blocks(40) == 8  # short objects: pieces of at least 8 blocks
    assert fill_piece_blocks(100) == 13
    assert fill_piece_blocks(5000) == 128  # long objects: more pieces, 8 at a time


def test_an_object_larger_than_half_the_cache_is_never_filled(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    _, src, data = _source(tmp_path, 40 * MiB, cache_bytes=64 * MiB)
    pf = Prefetcher(src, pool, random_span=0)
    pf.read(0, 4096)
    for i in range(2 * FILL_AFTER):
        off = (37 - 4 * i) * MiB + 99
        assert bytes(pf.read(off, 4096)) == data[off : off + 4096]
    assert pf._random.fill_gets == 0 and not pf._random.filling
    pf.close()
