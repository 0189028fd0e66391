"""Random reads through the kernel: one round of GETs per read, and no read-ahead waste.

An unaligned ``pread`` of 1 MiB reaches the mount as a 1 MiB request and a 4 KiB one
(the kernel rounds reads out to whole pages). Both must be answered by the same GETs,
and the 4 KiB one must not look like the start of a sequential read (which would start
a read-ahead stream of megabytes). Requests and the bytes answered are counted for real,
by the recording proxy in front of s3rver.
"""

from __future__ import annotations

import os
import random
from urllib.parse import urlsplit

import pytest

from fusion.mount import MountOptions
from fusion.random_reads import MAX_PARTS, TAIL
from fusion.s3_store import S3ObjectStore

from .conftest import FaultProxy, MountFactory

pytestmark = pytest.mark.fuse

MiB = 1024 * 1024
SIZE = 64 * MiB
READS = 24


def test_unaligned_random_reads_cost_one_round_of_gets_each(
    mount_factory: MountFactory,
    fault_proxy: FaultProxy,
    bucket: str,
    s3rver_store: S3ObjectStore,
) -> None:
    data = random.Random(5).randbytes(SIZE)
    s3rver_store.put(bucket, "big.bin", data)
    # No span around misses: count each read's own GETs (the span has its unit tests).
    mnt = mount_factory(endpoint=fault_proxy.endpoint, options=MountOptions(random_span=0))
    path = mnt.path(bucket, "big.bin")
    rng = random.Random(14)
    # Scattered, never aligned, never next to each other (a read that starts where
    # another ended is sequential, rightly).
    offsets = [i * SIZE // READS + rng.randrange(1, 256 * 1024) | 1 for i in range(READS)]
    rng.shuffle(offsets)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        first = os.pread(fd, MiB, offsets[0])  # the first read of a handle: a stream
        assert first == data[offsets[0] : offsets[0] + MiB]
        before = len(fault_proxy.answered)
        for off in offsets[1:]:
            assert os.pread(fd, MiB, off) == data[off : off + MiB], off
    finally:
        os.close(fd)
    gets = [
        n
        for method, target, n in fault_proxy.answered[before:]
        if method == "GET" and urlsplit(target).path.endswith("/big.bin")
    ]
    reads = READS - 1
    # Each read: one round of at most MAX_PARTS parallel GETs, its trailing page
    # included. The first read's stream may still be fetching: the two blocks of that
    # read and its window, which doubles once (2 MiB, then 4 MiB) - at most 6 GETs of
    # 1 MiB, answered before or after the count starts.
    stream = 6 * MiB
    assert len(gets) <= reads * MAX_PARTS + 6, len(gets)
    # Bytes: each read's MiB and the small tail - never a read-ahead stream started by
    # the trailing page (that alone would be 2 MiB per read).
    assert sum(gets) <= reads * (MiB + TAIL) + stream, sum(gets)
