"""Many readers of one folder of small files at once: requests per file stay constant.

Sixteen tasks reading the same folder's files at the same time must not multiply the
requests: one listing answers every reader's lookups of the folder, each object is
fetched whole once and served from memory to every reader. Requests are counted for
real, by the recording proxy in front of s3rver.
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from fusion.s3_store import S3ObjectStore

from .conftest import FaultProxy, MountFactory

pytestmark = pytest.mark.fuse

FILES = 100
READERS = 16
SIZE = 64 * 1024
#: Requests allowed per file: one GET, plus shared listings and one HeadBucket.
PER_FILE = 2


def _kind(method: str, path: str) -> str:
    parts = urlsplit(path)
    if method == "GET" and ("list-type" in parts.query or parts.path.rstrip("/").count("/") <= 1):
        return "LIST"
    return method


def test_parallel_readers_of_a_folder_cost_a_few_requests_per_file(
    mount_factory: MountFactory,
    fault_proxy: FaultProxy,
    bucket: str,
    s3rver_store: S3ObjectStore,
) -> None:
    data = {f"f{i:03d}.dat": random.Random(i).randbytes(SIZE) for i in range(FILES)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3rver_store.put(bucket, f"set/{kv[0]}", kv[1]), data.items()))
    mnt = mount_factory(endpoint=fault_proxy.endpoint)
    folder = mnt.path(bucket, "set")
    names = sorted(data)
    before = len(fault_proxy.requests)

    def reader(n: int) -> int:
        # Each reader reads every file, starting at its own place (no directory listing
        # first: the names are known, as in a sample sheet).
        order = names[n * FILES // READERS :] + names[: n * FILES // READERS]
        for name in order:
            assert (folder / name).read_bytes() == data[name], name
        return len(order)

    with ThreadPoolExecutor(READERS) as pool:
        assert sum(pool.map(reader, range(READERS))) == READERS * FILES

    sent = fault_proxy.requests[before:]
    kinds = Counter(_kind(method, path) for method, path in sent)
    gets = Counter(path for method, path in sent if _kind(method, path) == "GET")
    assert len(sent) <= PER_FILE * FILES, f"{len(sent)} requests for {FILES} files: {kinds}"
    assert max(gets.values()) <= 2, f"an object was fetched {max(gets.values())} times"
    assert kinds["HEAD"] <= 2, kinds
