"""Cache blocks written with O_DIRECT where the file system takes it, buffered elsewhere."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fusion.block_writer import ALIGN, BlockWriter

MiB = 1024 * 1024


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if str(path).startswith(point) and len(point) > len(best):
            best, kind = point, fstype
    return kind


@pytest.fixture
def ramfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A ramfs, which refuses O_DIRECT (tmpfs takes it since Linux 6.6)."""
    point = tmp_path / "ramfs"
    point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a ramfs needs root")
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_whole_blocks_go_direct_and_read_back(tmp_path: Path) -> None:
    if _fs_type(tmp_path) not in {"ext4", "xfs", "btrfs"}:
        pytest.skip(f"{tmp_path} is on {_fs_type(tmp_path)}, not a disk file system")
    writer = BlockWriter(MiB, buffers=2)
    blocks = {i: random.Random(i).randbytes(MiB) for i in range(12)}
    with ThreadPoolExecutor(6) as pool:  # more writers than buffers: they take turns
        list(pool.map(lambda i: writer.write(str(tmp_path / f"b{i}"), blocks[i]), blocks))
    assert writer.direct_writes == 12 and writer.buffered_writes == 0
    for i, data in blocks.items():
        assert (tmp_path / f"b{i}").read_bytes() == data
    # An object's last block, not a multiple of the alignment, is written buffered.
    tail = os.urandom(ALIGN + 100)
    writer.write(str(tmp_path / "tail"), memoryview(tail))
    assert writer.buffered_writes == 1 and writer.direct
    assert (tmp_path / "tail").read_bytes() == tail


def test_a_file_system_without_o_direct_gets_buffered_writes(ramfs_dir: Path) -> None:
    writer = BlockWriter(MiB)
    data = os.urandom(MiB)
    writer.write(str(ramfs_dir / "b0"), data)
    writer.write(str(ramfs_dir / "b1"), data)
    assert not writer.direct and writer.direct_writes == 0 and writer.buffered_writes == 2
    assert (ramfs_dir / "b0").read_bytes() == data == (ramfs_dir / "b1").read_bytes()


def test_a_full_disk_fails_the_write_and_keeps_direct_writes(tmp_path: Path) -> None:
    point = tmp_path / "small"
    point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(point)], check=True)
    try:
        writer = BlockWriter(MiB)
        writer.write(str(point / "b0"), os.urandom(MiB))
        if not writer.direct:
            pytest.skip("this kernel's tmpfs refuses O_DIRECT (it takes it since Linux 6.6)")
        with pytest.raises(OSError) as err:
            writer.write(str(point / "b1"), os.urandom(MiB))
        assert err.value.errno == errno.ENOSPC
        assert writer.direct and writer.direct_writes == 1
    finally:
        subprocess.run(["umount", str(point)], check=True)
