from __future__ import annotations

from pathlib import Path

from fusion.chunk_cache import CacheKey, ChunkCache

BS = 1024


def test_blocks_round_trip_and_versions_are_separate(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), capacity=10 * BS, block_size=BS)
    v1, v2 = CacheKey("b", "k", "etag1"), CacheKey("b", "k", "etag2")
    cache.put(v1, 0, b"a" * BS)
    assert cache.get(v1, 0) == b"a" * BS
    assert cache.get(v2, 0) is None  # a new version never sees old blocks
    assert cache.get(v1, 1) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), capacity=3 * BS, block_size=BS)
    key = CacheKey("b", "k", "e")
    for block in range(3):
        cache.put(key, block, bytes([block]) * BS)
    assert cache.get(key, 0) is not None  # 0 is now the most recent
    cache.put(key, 3, b"x" * BS)
    assert cache.used <= 3 * BS
    assert cache.get(key, 1) is None  # the least recently used went
    assert cache.get(key, 0) is not None and cache.get(key, 3) is not None
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert len(files) == 3
    assert sum(p.stat().st_size for p in files) <= 3 * BS


def test_put_range_splits_blocks_and_disabled_cache_keeps_nothing(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), capacity=100 * BS, block_size=BS)
    key = CacheKey("b", "k", "e")
    cache.put_range(key, 2 * BS, b"a" * BS + b"b" * BS + b"c" * 10)
    assert cache.get(key, 2) == b"a" * BS
    assert cache.get(key, 3) == b"b" * BS
    assert cache.get(key, 4) == b"c" * 10
    off = ChunkCache(str(tmp_path / "off"), capacity=0, block_size=BS)
    off.put(key, 0, b"x" * BS)
    assert off.get(key, 0) is None and off.used == 0


def test_restart_starts_empty(tmp_path: Path) -> None:
    first = ChunkCache(str(tmp_path / "c"), capacity=10 * BS, block_size=BS)
    first.put(CacheKey("b", "k", "e"), 0, b"z" * BS)
    second = ChunkCache(str(tmp_path / "c"), capacity=10 * BS, block_size=BS)
    assert second.get(CacheKey("b", "k", "e"), 0) is None
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_a_range_of_a_block_reads_only_its_bytes(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), capacity=10 * BS, block_size=BS)
    key = CacheKey("b", "k", "e")
    data = bytes(range(256)) * (BS // 256)
    cache.put(key, 0, data)
    assert cache.get(key, 0, 100, 300) == data[100:300]
    assert cache.get(key, 0, BS - 5) == data[BS - 5 :]
    assert cache.get(key, 0, 0, 7) == data[:7]
    assert cache.get(key, 1, 0, 7) is None


def test_put_soon_copies_the_block_and_writes_it_in_the_background(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), capacity=100 * BS, block_size=BS)
    key = CacheKey("b", "k", "e")
    buffer = bytearray(b"a" * BS)  # a GET's receive buffer, reused for the next block
    written = [cache.put_soon(key, block, memoryview(buffer)) for block in range(3)]
    buffer[:] = b"z" * BS  # the caller goes on at once: what it handed over was copied
    for done in written:
        done.result(timeout=30)
    assert [cache.get(key, block) for block in range(3)] == [b"a" * BS] * 3
    assert cache.used == 3 * BS
