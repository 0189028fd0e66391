"""Spooled writes and multipart uploads, on the in-memory store (which enforces S3's rules)."""

from __future__ import annotations

import errno
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fusion.errors import UploadFailed
from fusion.memory_store import MemoryObjectStore
from fusion.writer import WriteSession

MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture
def store() -> MemoryObjectStore:
    s = MemoryObjectStore()
    s.ensure_bucket("b")
    return s


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as p:
        yield p


def _session(store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path) -> WriteSession:
    return WriteSession(store, pool, "b", "k", str(tmp_path / "spool"), part_size=PART)


def test_sequential_writes_upload_parts_while_writing(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    data = random.Random(1).randbytes(3 * PART + 123)
    for off in range(0, len(data), MiB):
        ws.write(off, data[off : off + MiB])
    assert ws.parts_uploaded_early == 3
    assert store.head("b", "k") is None  # nothing visible before commit
    ws.commit()
    assert store.get("b", "k") == data
    assert store.calls["upload_part"] == 4  # three early, the tail at commit
    assert store.open_uploads == 0
    ws.discard()
    assert not Path(ws.spool_path).exists()


def test_small_file_is_one_put(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    ws.write(0, b"hello")
    ws.commit()
    assert store.get("b", "k") == b"hello"
    assert store.calls.get("create_multipart", 0) == 0
    empty = WriteSession(store, pool, "b", "empty", str(tmp_path / "spool"), part_size=PART)
    empty.commit()
    assert store.get("b", "empty") == b""


def test_random_writes_reupload_changed_parts(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    data = bytearray(random.Random(2).randbytes(3 * PART))
    for off in range(0, len(data), MiB):
        ws.write(off, data[off : off + MiB])
    pool.submit(lambda: None).result()
    ws.write(10, b"XYZ")  # into part 1, which was already uploaded
    data[10:13] = b"XYZ"
    ws.write(len(data) + PART, b"tail")  # a hole, then more
    data += bytes(PART) + b"tail"
    ws.commit()
    assert store.get("b", "k") == bytes(data)


def test_truncate_and_rewrite_after_commit(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    ws.write(0, b"a" * (2 * PART))
    ws.commit()
    ws.truncate(10)
    assert ws.dirty and ws.size == 10
    ws.commit()
    assert store.get("b", "k") == b"a" * 10
    ws.write(10, b"b")
    ws.commit()
    assert store.get("b", "k") == b"a" * 10 + b"b"


@pytest.mark.parametrize("op", ["upload_part", "complete_multipart", "create_multipart"])
def test_failed_upload_raises_and_publishes_nothing(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path, op: str
) -> None:
    ws = _session(store, pool, tmp_path)
    store.fail_next(op, "InternalError", times=1000)
    data = random.Random(3).randbytes(2 * PART + 5)
    for off in range(0, len(data), MiB):
        ws.write(off, data[off : off + MiB])
    with pytest.raises(UploadFailed) as err:
        ws.commit()
    assert err.value.errno == errno.EIO
    assert store.head("b", "k") is None
    assert store.open_uploads == 0  # aborted, not left behind
    assert ws.dirty
    store._failures.clear()
    ws.commit()  # the spool is intact: a retry succeeds
    assert store.get("b", "k") == data


def test_a_part_that_failed_early_is_retried_at_commit(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    store.fail_next("upload_part", "SlowDown", times=1)
    data = random.Random(5).randbytes(2 * PART + 5)
    for off in range(0, len(data), MiB):
        ws.write(off, data[off : off + MiB])
    ws.commit()
    assert store.get("b", "k") == data


def test_a_part_failing_while_the_commit_waits_is_sent_again(
    store: MemoryObjectStore, tmp_path: Path
) -> None:
    # One upload thread, held by a gate: the parts are still queued when the commit
    # looks at them, and the first one fails only while the commit waits for it.
    with ThreadPoolExecutor(1) as one:
        gate = threading.Event()
        one.submit(gate.wait, 30)
        ws = _session(store, one, tmp_path)
        data = random.Random(6).randbytes(2 * PART + 5)
        for off in range(0, len(data), MiB):
            ws.write(off, data[off : off + MiB])
        store.fail_next("upload_part", "SlowDown", times=1)
        committing = threading.Thread(target=ws.commit)
        committing.start()
        time.sleep(0.3)
        gate.set()
        committing.join(timeout=30)
    assert not ws.failed
    assert store.get("b", "k") == data
    assert store.calls["upload_part"] == 4  # three parts, one of them twice


def test_load_existing_object_then_patch(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    original = random.Random(4).randbytes(PART + 77)
    store.put("b", "k", original)
    ws = _session(store, pool, tmp_path)
    ws.load(lambda path: store.download_file("b", "k", path), len(original))
    assert not ws.dirty
    ws.write(5, b"!!")
    ws.commit()
    assert store.get("b", "k") == original[:5] + b"!!" + original[7:]


def test_too_large_is_efbig(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    with pytest.raises(OSError) as err:
        ws.write(PART * 10_000, b"x")
    assert err.value.errno == errno.EFBIG


def test_truncate_to_the_current_size_keeps_uploading_early(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    ws.truncate(0)  # what dd does to a file it just created
    data = random.Random(6).randbytes(2 * PART)
    for off in range(0, len(data), MiB):
        ws.write(off, data[off : off + MiB])
    assert ws.parts_uploaded_early == 2
    ws.commit()
    assert store.get("b", "k") == data


def test_a_commit_before_any_write_keeps_uploading_early(
    store: MemoryObjectStore, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    ws = _session(store, pool, tmp_path)
    ws.commit()  # dd closes a dup of its output before writing: an empty object
    assert store.get("b", "k") == b""
    data = random.Random(7).randbytes(2 * PART + 1)
    for off in range(0, len(data), MiB):
        ws.write(off, data[off : off + MiB])
    assert ws.parts_uploaded_early == 2
    ws.commit()
    assert store.get("b", "k") == data
