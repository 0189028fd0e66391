"""Long GETs streamed into the block cache a block at a time, on the real S3 server.

The fill of an object read at random offsets fetches tens of MiB per GET; each block
goes to the cache as it arrives through one reused buffer. A connection cut mid-body
resumes from the first block not delivered, and a fill stopped half-way (its file was
closed) ends its GET after the block in hand.
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import urlsplit

from fusion.chunk_cache import ChunkCache
from fusion.memory_store import MemoryObjectStore
from fusion.object_source import ObjectSource
from fusion.s3_store import S3ObjectStore

from .conftest import FaultProxy, store_config

MiB = 1024 * 1024
SIZE = 5 * MiB + 123_456  # the last block is short


def _object(store: S3ObjectStore, bucket: str) -> bytes:
    data = random.Random(3).randbytes(SIZE)
    store.put(bucket, "fill.bin", data)
    return data


def _gets(proxy: FaultProxy) -> list[int]:
    """Body bytes the proxy answered to each GET of the object, in order."""
    return [
        n
        for method, target, n in proxy.answered
        if method == "GET" and urlsplit(target).path.endswith("/fill.bin")
    ]


def test_blocks_arrive_in_order_through_one_buffer(
    s3rver_store: S3ObjectStore, bucket: str
) -> None:
    data = _object(s3rver_store, bucket)
    got: list[tuple[int, bytes]] = []
    buffers: set[int] = set()

    def deliver(offset: int, view: memoryview) -> bool:
        got.append((offset, bytes(view)))
        buffers.add(id(view.obj))
        return True

    s3rver_store.get_range_blocks(bucket, "fill.bin", MiB, SIZE, None, MiB, deliver)
    assert [off for off, _ in got] == [i * MiB for i in range(1, 6)]
    assert b"".join(chunk for _, chunk in got) == data[MiB:]
    assert len(got[-1][1]) == 123_456 and len(buffers) == 1


def test_a_cut_transfer_resumes_from_the_first_block_not_delivered(
    fault_proxy: FaultProxy, s3rver_store: S3ObjectStore, bucket: str
) -> None:
    data = _object(s3rver_store, bucket)
    store = S3ObjectStore(store_config(fault_proxy.endpoint))
    cuts = [int(2.5 * MiB)]
    fault_proxy.cut = lambda method, path: cuts.pop() if method == "GET" and cuts else None
    got: list[tuple[int, bytes]] = []
    store.get_range_blocks(
        bucket, "fill.bin", 0, SIZE, None, MiB, lambda o, v: got.append((o, bytes(v))) or True
    )
    assert [off for off, _ in got] == [i * MiB for i in range(6)]  # no block twice
    assert b"".join(chunk for _, chunk in got) == data
    # The second GET asked only for what the first did not deliver whole.
    assert _gets(fault_proxy) == [int(2.5 * MiB), SIZE - 2 * MiB]


def test_a_stopped_fill_keeps_what_it_delivered_and_the_store_reads_on(
    fault_proxy: FaultProxy, s3rver_store: S3ObjectStore, bucket: str, tmp_path: Path
) -> None:
    data = _object(s3rver_store, bucket)
    store = S3ObjectStore(store_config(fault_proxy.endpoint))
    cache = ChunkCache(str(tmp_path / "cache"), 64 * MiB)
    etag = store.head(bucket, "fill.bin").etag  # type: ignore[union-attr]
    source = ObjectSource(store, cache, bucket, "fill.bin", etag, SIZE)
    delivered = []
    source.fill_range(0, SIZE, stop=lambda: delivered.append(1) or len(delivered) >= 2)
    assert [cache.contains(source.cache_key, b) for b in range(6)] == [True] * 2 + [False] * 4
    # Later GETs on the same pool get the right bytes.
    for start in (MiB, 3 * MiB, 0):
        assert (
            store.get_range(bucket, "fill.bin", start, start + 1000, etag)
            == data[start : start + 1000]
        )
    source.fill_range(2 * MiB, SIZE)
    assert all(cache.contains(source.cache_key, b) for b in range(6))
    assert b"".join(source.cached_block(b) or b"" for b in range(6)) == data


def test_a_store_that_cannot_stream_fills_in_one_piece(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    store.ensure_bucket("b")
    data = random.Random(4).randbytes(SIZE)
    etag = store.put("b", "k", data)
    source = ObjectSource(store, ChunkCache(str(tmp_path / "c"), 64 * MiB), "b", "k", etag, SIZE)
    source.fill_range(0, SIZE)
    assert store.calls["get_range"] == 1
    assert b"".join(source.cached_block(b) or b"" for b in range(6)) == data
    # A random read takes only its bytes of a cached block.
    assert source.cached_block(3, 1000, 5000) == data[3 * MiB + 1000 : 3 * MiB + 5000]
