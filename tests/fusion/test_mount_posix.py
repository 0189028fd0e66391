"""POSIX-level checks through a real FUSE mount over a real S3-compatible server."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fusion.mount import MountOptions, is_mounted
from fusion.s3_store import S3ObjectStore

from .conftest import FaultProxy, Mount, MountFactory

pytestmark = pytest.mark.fuse

MiB = 1024 * 1024


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_write_then_read_through_mount_and_store(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    sizes = {"empty": 0, "one": 1, "odd": MiB + 3, "multipart": 20 * MiB + 7}
    for name, size in sizes.items():
        data = _data(size, seed=size)
        mounted.path(bucket, f"dir/{name}").parent.mkdir(exist_ok=True)
        with open(mounted.path(bucket, f"dir/{name}"), "wb") as fh:
            fh.write(data)
        assert s3rver_store.get(bucket, f"dir/{name}") == data
        assert mounted.path(bucket, f"dir/{name}").read_bytes() == data
        assert os.stat(mounted.path(bucket, f"dir/{name}")).st_size == size
    assert sorted(os.listdir(mounted.path(bucket, "dir"))) == sorted(sizes)


def test_object_written_elsewhere_is_readable_and_listed(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    payload = _data(3 * MiB, seed=1)
    s3rver_store.put(bucket, "in/a.bin", payload)
    s3rver_store.put(bucket, "in/sub/b.txt", b"b")
    assert sorted(os.listdir(mounted.path(bucket, "in"))) == ["a.bin", "sub"]
    assert mounted.path(bucket, "in/sub").is_dir()
    assert mounted.path(bucket, "in/a.bin").read_bytes() == payload
    assert not mounted.path(bucket, "in/missing").exists()


def test_random_reads_return_the_right_bytes(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    payload = _data(24 * MiB, seed=2)
    s3rver_store.put(bucket, "random.bin", payload)
    rng = random.Random(3)
    fd = os.open(mounted.path(bucket, "random.bin"), os.O_RDONLY)
    try:
        for _ in range(60):
            off = rng.randrange(0, len(payload))
            n = rng.choice([1, 4096, 100_000, MiB])
            assert os.pread(fd, n, off) == payload[off : off + n]
    finally:
        os.close(fd)


def test_rename_file_is_copy_and_delete(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    src = mounted.path(bucket, "r/old.txt")
    src.parent.mkdir()
    src.write_bytes(b"contents")
    os.rename(src, mounted.path(bucket, "r/new.txt"))
    assert not src.exists()
    assert mounted.path(bucket, "r/new.txt").read_bytes() == b"contents"
    assert s3rver_store.head(bucket, "r/old.txt") is None
    assert s3rver_store.get(bucket, "r/new.txt") == b"contents"
    # Over an existing file: replaced.
    mounted.path(bucket, "r/other.txt").write_bytes(b"other")
    os.rename(mounted.path(bucket, "r/other.txt"), mounted.path(bucket, "r/new.txt"))
    assert s3rver_store.get(bucket, "r/new.txt") == b"other"
    assert sorted(os.listdir(mounted.path(bucket, "r"))) == ["new.txt"]


def test_symlink_made_on_one_node_resolves_on_another(
    mount_factory: MountFactory, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    node_a = mount_factory("node-a")
    node_b = mount_factory("node-b")
    node_a.path(bucket, "data").mkdir()
    node_a.path(bucket, "data/v1.txt").write_text("version one")
    os.symlink("data/v1.txt", node_a.path(bucket, "current"))
    assert os.readlink(node_a.path(bucket, "current")) == "data/v1.txt"
    # The other node sees a link, in a lookup and in a listing.
    link_b = node_b.path(bucket, "current")
    assert stat.S_ISLNK(os.lstat(link_b).st_mode)
    assert os.readlink(link_b) == "data/v1.txt"
    assert link_b.read_text() == "version one"
    entries = {e.name: e for e in os.scandir(node_b.path(bucket))}
    assert entries["current"].is_symlink()
    assert entries["data"].is_dir(follow_symlinks=False)
    # Stored as a small object carrying the link marks.
    info = s3rver_store.head(bucket, "current")
    assert info is not None
    assert info.metadata.get("fusion-type") == "symlink"
    assert s3rver_store.get(bucket, "current") == b"data/v1.txt"


def test_readdir_of_ten_thousand_keys(
    mount_factory: MountFactory, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    # A long metadata TTL (a read-mostly mount): the listing then answers later lookups.
    mounted = mount_factory(options=MountOptions(metadata_ttl=120))
    names = [f"k{i:05d}" for i in range(10_000)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda n: s3rver_store.put(bucket, f"many/{n}", n.encode()), names))
    s3rver_store.put(bucket, "many/zsub/x", b"x")
    start = time.monotonic()
    listed = os.listdir(mounted.path(bucket, "many"))
    elapsed = time.monotonic() - start
    assert sorted(listed) == [*names, "zsub"]
    assert len(listed) == len(set(listed))
    assert elapsed < 60, f"listing 10,000 keys took {elapsed:.1f}s"
    # The listing answered the lookups: stat of every name needs no request.
    start = time.monotonic()
    sizes = {os.stat(mounted.path(bucket, f"many/{n}")).st_size for n in names}
    assert sizes == {6}
    assert time.monotonic() - start < 20


def test_concurrent_readers_see_the_same_bytes(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    big = _data(40 * MiB, seed=4)
    s3rver_store.put(bucket, "shared.bin", big)
    small = {f"s{i}": _data(200_000 + i, seed=10 + i) for i in range(6)}
    for name, data in small.items():
        s3rver_store.put(bucket, f"small/{name}", data)
    want = hashlib.sha256(big).hexdigest()
    errors: list[str] = []

    def read_big(i: int) -> None:
        h = hashlib.sha256()
        with open(mounted.path(bucket, "shared.bin"), "rb") as fh:
            if i % 2:  # half of the readers start in the middle, then wrap around
                fh.seek(len(big) // 2)
                tail = fh.read()
                fh.seek(0)
                head = fh.read(len(big) // 2)
                h.update(head + tail)
            else:
                while chunk := fh.read(MiB):
                    h.update(chunk)
        if h.hexdigest() != want:
            errors.append(f"reader {i}")

    def read_small(name: str) -> None:
        if mounted.path(bucket, f"small/{name}").read_bytes() != small[name]:
            errors.append(name)

    threads = [threading.Thread(target=read_big, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=read_small, args=(n,)) for n in small]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []


def test_object_is_not_visible_until_close(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    path = mounted.path(bucket, "growing.bin")
    chunk = _data(MiB, seed=5)
    with open(path, "wb") as fh:
        for _ in range(20):  # more than two 8 MiB parts: uploaded while writing
            fh.write(chunk)
        fh.flush()
        os.stat(path)
        assert s3rver_store.head(bucket, "growing.bin") is None
    info = s3rver_store.head(bucket, "growing.bin")
    assert info is not None and info.size == 20 * MiB


def test_overwrite_inside_existing_object_rewrites_it(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    original = _data(10 * MiB, seed=6)
    s3rver_store.put(bucket, "edit.bin", original)
    with open(mounted.path(bucket, "edit.bin"), "r+b") as fh:
        fh.seek(5 * MiB)
        fh.write(b"PATCH")
    expected = original[: 5 * MiB] + b"PATCH" + original[5 * MiB + 5 :]
    assert s3rver_store.get(bucket, "edit.bin") == expected
    # Random writes into a new file stay within the spool and land whole on close.
    with open(mounted.path(bucket, "holes.bin"), "wb") as fh:
        fh.seek(9 * MiB)
        fh.write(b"end")
        fh.seek(0)
        fh.write(b"start")
    got = s3rver_store.get(bucket, "holes.bin")
    assert got[:5] == b"start" and got[-3:] == b"end" and len(got) == 9 * MiB + 3
    assert got[5 : 9 * MiB] == bytes(9 * MiB - 5)


def test_mkdir_rmdir_unlink(mounted: Mount, bucket: str, s3rver_store: S3ObjectStore) -> None:
    d = mounted.path(bucket, "d1")
    d.mkdir()
    assert d.is_dir()
    assert s3rver_store.head(bucket, "d1/") is not None
    (d / "f").write_bytes(b"x")
    with pytest.raises(OSError) as err:
        d.rmdir()
    assert err.value.errno == errno.ENOTEMPTY
    (d / "f").unlink()
    assert s3rver_store.head(bucket, "d1/f") is None
    d.rmdir()
    assert not d.exists()
    with pytest.raises(FileExistsError):
        mounted.path(bucket, "d2").mkdir() or mounted.path(bucket, "d2").mkdir()


def test_unsupported_operations_fail_early_with_documented_errno(
    mounted: Mount, bucket: str
) -> None:
    f = mounted.path(bucket, "plain.txt")
    f.write_bytes(b"x")
    mounted.path(bucket, "adir").mkdir()
    cases = {
        "link": (lambda: os.link(f, mounted.path(bucket, "hard")), errno.EPERM),
        "chmod": (lambda: os.chmod(f, 0o600), errno.EPERM),
        "chown": (lambda: os.chown(f, 1234, 1234), errno.EPERM),
        "mkfifo": (lambda: os.mkfifo(mounted.path(bucket, "fifo")), errno.EPERM),
        "rename dir": (
            lambda: os.rename(mounted.path(bucket, "adir"), mounted.path(bucket, "bdir")),
            errno.EXDEV,
        ),
        "setxattr": (lambda: os.setxattr(f, "user.k", b"v"), errno.ENOTSUP),
        "mkdir bucket": (lambda: os.mkdir(mounted.root / "s3" / "newbucket"), errno.EPERM),
    }
    for name, (call, expected) in cases.items():
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == expected, name
    os.utime(f, (1, 1))  # accepted, ignored: the object's time is its upload time
    assert f.read_bytes() == b"x"


def test_read_only_mount_refuses_writes(
    mount_factory: MountFactory, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    s3rver_store.put(bucket, "ro.txt", b"read me")
    ro = mount_factory("ro", read_only=True)
    assert ro.path(bucket, "ro.txt").read_bytes() == b"read me"
    with pytest.raises(OSError) as err:
        ro.path(bucket, "new.txt").write_bytes(b"x")
    assert err.value.errno == errno.EROFS
    with pytest.raises(OSError) as err:
        ro.path(bucket, "ro.txt").unlink()
    assert err.value.errno == errno.EROFS


@pytest.mark.parametrize(
    ("what", "size", "rule"),
    [
        ("UploadPart", 20 * MiB, lambda m, p: m == "PUT" and "partNumber=" in p),
        ("CompleteMultipartUpload", 20 * MiB, lambda m, p: m == "POST" and "uploadId=" in p),
        ("PutObject", 1000, lambda m, p: m == "PUT" and p.endswith("/fail.bin")),
    ],
)
def test_upload_failure_at_the_server_makes_close_fail(
    mount_factory: MountFactory,
    fault_proxy: FaultProxy,
    bucket: str,
    s3rver_store: S3ObjectStore,
    what: str,
    size: int,
    rule: object,
) -> None:
    m = mount_factory("faulty", endpoint=fault_proxy.endpoint, max_attempts=1)
    fault_proxy.rule = rule  # type: ignore[assignment]
    fh = open(m.path(bucket, "fail.bin"), "wb")  # noqa: SIM115 - close() is under test
    fh.write(_data(size, seed=7))
    with pytest.raises(OSError) as err:
        fh.close()
    assert err.value.errno == errno.EIO, what
    assert fault_proxy.failed, f"the proxy never saw a {what}"
    assert s3rver_store.head(bucket, "fail.bin") is None
    # The server recovers: the same write now succeeds.
    fault_proxy.rule = lambda m, p: False
    m.path(bucket, "fail.bin").write_bytes(b"ok")
    assert s3rver_store.get(bucket, "fail.bin") == b"ok"


def test_sigterm_unmounts_cleanly(mount_factory: MountFactory, bucket: str) -> None:
    m = mount_factory("sig")
    assert is_mounted(m.root)
    m.path(bucket, "before.txt").write_bytes(b"kept")
    m.handle.process.send_signal(signal.SIGTERM)
    assert m.handle.process.wait(timeout=30) == 0
    assert not is_mounted(m.root)


@pytest.mark.slow
def test_two_gib_file_streams_through(
    mounted: Mount, bucket: str, s3rver_store: S3ObjectStore
) -> None:
    size = 2 * 1024 * MiB
    block = bytearray(_data(MiB, seed=8))
    path = mounted.path(bucket, "huge.bin")
    digest = hashlib.blake2b()
    with open(path, "wb", buffering=0) as fh:
        for i in range(size // MiB):
            block[:8] = i.to_bytes(8, "little")
            digest.update(block)
            fh.write(block)
    info = s3rver_store.head(bucket, "huge.bin")
    assert info is not None and info.size == size
    check = hashlib.blake2b()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(MiB):
            check.update(chunk)
    assert check.hexdigest() == digest.hexdigest()
    s3rver_store.delete(bucket, "huge.bin")


def test_paths_match_staging(mounted: Mount, bucket: str, tmp_path: Path) -> None:
    from fusion.stage import fusion_path, url_for

    url = f"s3://{bucket}/x/y.txt"
    p = fusion_path(url, root=str(mounted.root))
    assert p == str(mounted.path(bucket, "x/y.txt"))
    assert url_for(p, root=str(mounted.root)) == url
