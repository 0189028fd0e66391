"""File-system logic without FUSE, on the in-memory store."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusion.errors import UploadFailed
from fusion.fs import FsConfig, FusionFS
from fusion.memory_store import MemoryObjectStore
from fusion.symlinks import SYMLINK_METADATA

MiB = 1024 * 1024


@pytest.fixture
def store() -> MemoryObjectStore:
    s = MemoryObjectStore()
    s.ensure_bucket("bk")
    return s


@pytest.fixture
def fs(store: MemoryObjectStore, tmp_path: Path) -> Iterator[FusionFS]:
    f = FusionFS(store, FsConfig(cache_dir=str(tmp_path / "cache"), part_size=5 * MiB))
    yield f
    f.shutdown()


def bucket_ino(fs: FusionFS) -> int:
    return fs.lookup(fs.lookup(1, "s3").ino, "bk").ino


def listdir(fs: FusionFS, ino: int) -> dict[str, int]:
    fh = fs.opendir(ino)
    out = {}
    for name, attr, _ in fs.readdir(fh, 0):
        fs.readdir_reported(attr.ino)
        out[name] = attr.mode
    fs.releasedir(fh)
    return out


def read_all(fs: FusionFS, ino: int) -> bytes:
    fh, _ = fs.open(ino, os.O_RDONLY)
    out = bytearray()
    while chunk := fs.read(fh, len(out), MiB):
        out += chunk
    fs.release(fh)
    return bytes(out)


def test_tree_and_prefixes_as_directories(fs: FusionFS, store: MemoryObjectStore) -> None:
    store.put("bk", "a/b/c.txt", b"c")
    store.put("bk", "a/top.txt", b"t")
    store.put("bk", "a/", b"")  # a directory marker is not a file
    store.put("bk", "bad//name", b"x")  # an empty path component is not shown
    assert listdir(fs, 1) == {"s3": stat.S_IFDIR | 0o755}
    b = bucket_ino(fs)
    assert set(listdir(fs, b)) == {"a", "bad"}
    a = fs.lookup(b, "a")
    assert a.is_dir
    entries = listdir(fs, a.ino)
    assert stat.S_ISDIR(entries["b"]) and stat.S_ISREG(entries["top.txt"])
    assert set(entries) == {"b", "top.txt"}
    with pytest.raises(FileNotFoundError):
        fs.lookup(a.ino, "missing")
    assert fs.lookup(a.ino, "..").ino == b


def test_directory_shadows_an_object_of_the_same_name(
    fs: FusionFS, store: MemoryObjectStore
) -> None:
    store.put("bk", "x", b"file")
    store.put("bk", "x/inside", b"1")
    b = bucket_ino(fs)
    assert fs.lookup(b, "x").is_dir
    assert list(listdir(fs, b)) == ["x"]


def test_symlinks_in_listings_and_lookups(fs: FusionFS, store: MemoryObjectStore) -> None:
    store.put("bk", "target.txt", b"data")
    store.put("bk", "link", b"target.txt", SYMLINK_METADATA)
    store.put("bk", "s3fs-link", b"target.txt", {"mode": str(stat.S_IFLNK | 0o777)})
    b = bucket_ino(fs)
    entries = listdir(fs, b)
    assert stat.S_ISLNK(entries["link"]) and stat.S_ISLNK(entries["s3fs-link"])
    assert stat.S_ISREG(entries["target.txt"])
    attr = fs.lookup(b, "link")
    assert fs.readlink(attr.ino) == "target.txt"
    made = fs.symlink(b, "new-link", "../elsewhere")
    assert stat.S_ISLNK(made.mode)
    info = store.head("bk", "new-link")
    assert info is not None and info.metadata["fusion-type"] == "symlink"
    assert store.get("bk", "new-link") == b"../elsewhere"


def test_create_write_is_local_until_flush(fs: FusionFS, store: MemoryObjectStore) -> None:
    b = bucket_ino(fs)
    fh, attr = fs.create(b, "new.bin", os.O_WRONLY | os.O_CREAT)
    fs.write(fh, 0, b"x" * 100)
    assert fs.getattr(attr.ino).size == 100
    assert "new.bin" in listdir(fs, b)  # listed here before it exists in S3
    assert store.head("bk", "new.bin") is None
    fs.flush(fh)
    fs.release(fh)
    assert store.get("bk", "new.bin") == b"x" * 100
    assert read_all(fs, fs.lookup(b, "new.bin").ino) == b"x" * 100


def test_flush_reports_a_failed_upload(fs: FusionFS, store: MemoryObjectStore) -> None:
    b = bucket_ino(fs)
    fh, _ = fs.create(b, "f", os.O_WRONLY)
    fs.write(fh, 0, b"data")
    store.fail_next("put", "InternalError", times=10)
    with pytest.raises(UploadFailed) as err:
        fs.flush(fh)
    assert err.value.errno == errno.EIO
    assert store.head("bk", "f") is None
    fs.release(fh)


def test_rename_unlink_mkdir_rmdir(fs: FusionFS, store: MemoryObjectStore) -> None:
    b = bucket_ino(fs)
    store.put("bk", "old", b"payload")
    d = fs.mkdir(b, "dir")
    assert store.head("bk", "dir/") is not None
    fs.rename(b, "old", d.ino, "new")
    assert store.head("bk", "old") is None and store.get("bk", "dir/new") == b"payload"
    with pytest.raises(OSError) as err:
        fs.rmdir(b, "dir")
    assert err.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as err:
        fs.rename(b, "dir", b, "dir2")
    assert err.value.errno == errno.EXDEV
    fs.unlink(d.ino, "new")
    assert store.head("bk", "dir/new") is None
    fs.rmdir(b, "dir")
    assert store.head("bk", "dir/") is None
    with pytest.raises(FileNotFoundError):
        fs.lookup(b, "dir")
    with pytest.raises(OSError) as err:
        fs.rename(b, "nothing", b, "x", 0)
    assert err.value.errno == errno.ENOENT


def test_rename_noreplace_and_exchange(fs: FusionFS, store: MemoryObjectStore) -> None:
    b = bucket_ino(fs)
    store.put("bk", "a", b"a")
    store.put("bk", "b", b"b")
    with pytest.raises(OSError) as err:
        fs.rename(b, "a", b, "b", 1)  # RENAME_NOREPLACE
    assert err.value.errno == errno.EEXIST
    with pytest.raises(OSError) as err:
        fs.rename(b, "a", b, "b", 2)  # RENAME_EXCHANGE
    assert err.value.errno == errno.EINVAL


def test_read_only_and_unsupported(store: MemoryObjectStore, tmp_path: Path) -> None:
    ro = FusionFS(store, FsConfig(cache_dir=str(tmp_path / "c"), read_only=True))
    store.put("bk", "f", b"x")
    b = bucket_ino(ro)
    f = ro.lookup(b, "f")
    for call in (
        lambda: ro.create(b, "n", os.O_WRONLY),
        lambda: ro.open(f.ino, os.O_WRONLY),
        lambda: ro.unlink(b, "f"),
        lambda: ro.mkdir(b, "d"),
        lambda: ro.symlink(b, "l", "f"),
        lambda: ro.setattr(f.ino, size=0),
    ):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.EROFS
    with pytest.raises(OSError) as err:
        ro.setattr(f.ino, mode=stat.S_IFREG | 0o600)
    assert err.value.errno == errno.EPERM
    assert read_all(ro, f.ino) == b"x"
    ro.shutdown()


def test_truncate_existing_object_rewrites_it(fs: FusionFS, store: MemoryObjectStore) -> None:
    store.put("bk", "t", b"0123456789")
    b = bucket_ino(fs)
    t = fs.lookup(b, "t")
    assert fs.setattr(t.ino, size=4).size == 4
    assert store.get("bk", "t") == b"0123"


def test_opening_a_small_file_fetches_the_next_ones_in_parallel(
    fs: FusionFS, store: MemoryObjectStore
) -> None:
    for i in range(100):
        store.put("bk", f"s/f{i:03d}", bytes([i]) * 1000)
    b = bucket_ino(fs)
    s = fs.lookup(b, "s")
    listdir(fs, s.ino)  # a listing gives the names
    gets_before = store.calls.get("get", 0)
    assert read_all(fs, fs.lookup(s.ino, "f000").ino) == bytes([0]) * 1000
    deadline = time.monotonic() + 5
    while store.calls.get("get", 0) < gets_before + 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    prefetched = store.calls.get("get", 0) - gets_before
    assert prefetched >= 20  # the following files were fetched without being asked
    heads = store.calls.get("head", 0)
    for i in range(1, 20):
        assert read_all(fs, fs.lookup(s.ino, f"f{i:03d}").ino) == bytes([i]) * 1000
    assert store.calls.get("head", 0) == heads  # lookups answered by the prefetch


def test_open_keeps_kernel_cache_only_for_the_same_version(
    fs: FusionFS, store: MemoryObjectStore
) -> None:
    store.put("bk", "v", b"one")
    b = bucket_ino(fs)
    v = fs.lookup(b, "v")
    fh, keep = fs.open(v.ino, os.O_RDONLY)
    fs.release(fh)
    assert keep is False
    fh, keep = fs.open(v.ino, os.O_RDONLY)
    fs.release(fh)
    assert keep is True
    store.put("bk", "v", b"two")
    fs.meta.invalidate("bk", "v")
    fs.inodes.get(v.ino).validated = 0  # type: ignore[union-attr]
    fh, keep = fs.open(v.ino, os.O_RDONLY)
    assert keep is False
    assert bytes(fs.read(fh, 0, 10)) == b"two"
    fs.release(fh)


def test_lookup_and_open_without_waiting_answer_only_what_is_known(
    fs: FusionFS, store: MemoryObjectStore
) -> None:
    for i in range(10):
        store.put("bk", f"s/f{i}", bytes([i]) * 5000)  # too large to be a symlink
    store.put("bk", "s/tiny", b"x")  # small enough: only a HEAD tells
    b = bucket_ino(fs)
    s = fs.lookup(b, "s")
    assert fs.lookup_nowait(s.ino, "f1") is None  # no listing yet: would need a request
    calls = dict(store.calls)
    attr = fs.lookup(s.ino, "f1")  # lists the folder once
    assert store.calls.get("list", 0) == calls.get("list", 0) + 1
    calls = dict(store.calls)
    # The page answers the other names at once, with no request and no waiting.
    known = fs.lookup_nowait(s.ino, "f2")
    assert known is not None and known.size == 5000
    with pytest.raises(OSError) as absent:
        fs.lookup_nowait(s.ino, "nope")
    assert absent.value.errno == errno.ENOENT
    assert fs.lookup_nowait(s.ino, "tiny") is None
    assert store.calls == calls
    # A fresh read-only open needs nothing either; a write open or a stale node does.
    opened = fs.open_nowait(attr.ino, os.O_RDONLY)
    assert opened is not None
    assert bytes(fs.read(opened[0], 0, 10)) == bytes([1]) * 10
    fs.release(opened[0])
    assert fs.open_nowait(attr.ino, os.O_WRONLY) is None
    fs.inodes.get(attr.ino).validated = 0  # type: ignore[union-attr]
    assert fs.open_nowait(attr.ino, os.O_RDONLY) is None


def test_forget_drops_inodes(fs: FusionFS, store: MemoryObjectStore) -> None:
    store.put("bk", "f", b"x")
    b = bucket_ino(fs)
    before = len(fs.inodes)
    f = fs.lookup(b, "f")
    assert len(fs.inodes) == before + 1
    fs.forget([(f.ino, 1)])
    assert len(fs.inodes) == before
