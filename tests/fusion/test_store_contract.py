"""One conformance suite for every ObjectStore: memory, boto3 on moto, boto3 on s3rver."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from fusion.errors import ObjectNotFound, StoreError, UploadFailed
from fusion.memory_store import MemoryObjectStore
from fusion.objects import MIN_PART_SIZE, CommonPrefix, ObjectInfo
from fusion.s3_store import S3ObjectStore
from fusion.store import ObjectStore

from .conftest import store_config


class ObjectStoreContract:
    """Subclasses provide ``store`` and ``bucket`` fixtures."""

    def test_put_get_head(self, store: ObjectStore, bucket: str) -> None:
        etag = store.put(bucket, "a/b.txt", b"hello", {"owner": "me"})
        assert store.get(bucket, "a/b.txt") == b"hello"
        info = store.head(bucket, "a/b.txt")
        assert info is not None
        assert (info.key, info.size, info.etag) == ("a/b.txt", 5, etag)
        assert info.metadata.get("owner") == "me"
        assert info.mtime > 0
        got_info, data = store.get_object(bucket, "a/b.txt")
        assert data == b"hello" and got_info.etag == etag

    def test_missing_is_typed(self, store: ObjectStore, bucket: str) -> None:
        assert store.head(bucket, "nope") is None
        with pytest.raises(ObjectNotFound) as err:
            store.get(bucket, "nope")
        assert isinstance(err.value, FileNotFoundError)
        assert err.value.errno == errno.ENOENT
        store.delete(bucket, "nope")  # deleting a missing key is fine

    def test_ranges(self, store: ObjectStore, bucket: str) -> None:
        data = bytes(range(256)) * 40
        store.put(bucket, "r", data)
        assert store.get_range(bucket, "r", 10, 20) == data[10:20]
        assert store.get_range(bucket, "r", len(data) - 5, len(data) + 100) == data[-5:]
        assert store.get_range(bucket, "r", 5, 5) == b""

    def test_listing_with_prefixes_in_order(self, store: ObjectStore, bucket: str) -> None:
        for key in ["d/x", "d/a/1", "d/a/2", "d/b", "d/c/9", "e"]:
            store.put(bucket, key, b"1")
        entries = list(store.list(bucket, prefix="d/", delimiter="/"))
        names = [e.prefix if isinstance(e, CommonPrefix) else e.key for e in entries]
        assert names == ["d/a/", "d/b", "d/c/", "d/x"]
        flat = [e.key for e in store.list(bucket, prefix="d/") if isinstance(e, ObjectInfo)]
        assert flat == ["d/a/1", "d/a/2", "d/b", "d/c/9", "d/x"]
        after = [e.key for e in store.list(bucket, "d/", start_after="d/a/2", max_keys=2)]  # type: ignore[union-attr]
        assert after == ["d/b", "d/c/9"]

    def test_listing_paginates(self, store: ObjectStore, bucket: str) -> None:
        for i in range(1105):
            store.put(bucket, f"p/{i:05d}", b"")
        keys = [e.key for e in store.list(bucket, prefix="p/") if isinstance(e, ObjectInfo)]
        assert keys == [f"p/{i:05d}" for i in range(1105)]

    def test_copy_keeps_metadata(self, store: ObjectStore, bucket: str) -> None:
        store.put(bucket, "src", b"body", {"fusion-type": "symlink"})
        store.copy(bucket, "src", "dst")
        info = store.head(bucket, "dst")
        assert info is not None and info.metadata.get("fusion-type") == "symlink"
        assert store.get(bucket, "dst") == b"body"

    def test_multipart_is_invisible_until_complete(self, store: ObjectStore, bucket: str) -> None:
        upload = store.create_multipart(bucket, "mp", {"k": "v"})
        p1 = store.upload_part(bucket, "mp", upload, 1, b"a" * MIN_PART_SIZE)
        p2 = store.upload_part(bucket, "mp", upload, 2, b"b" * 10)
        assert store.head(bucket, "mp") is None
        p1 = store.upload_part(bucket, "mp", upload, 1, b"c" * MIN_PART_SIZE)  # replaces
        store.complete_multipart(bucket, "mp", upload, [p1, p2])
        data = store.get(bucket, "mp")
        assert data == b"c" * MIN_PART_SIZE + b"b" * 10
        info = store.head(bucket, "mp")
        assert info is not None and info.metadata.get("k") == "v"

    def test_files(self, store: ObjectStore, bucket: str, tmp_path: Path) -> None:
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(300_000))
        store.upload_file(src, bucket, "f")
        store.download_file(bucket, "f", tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()

    def test_buckets(self, store: ObjectStore, bucket: str) -> None:
        assert store.bucket_exists(bucket)
        assert bucket in store.list_buckets()
        assert not store.bucket_exists(f"nope-{uuid.uuid4().hex[:8]}")
        store.ensure_bucket(bucket)  # idempotent


class TestMemoryStore(ObjectStoreContract):
    @pytest.fixture
    def store(self) -> MemoryObjectStore:
        return MemoryObjectStore()

    @pytest.fixture
    def bucket(self, store: MemoryObjectStore) -> str:
        store.ensure_bucket("mem")
        return "mem"

    def test_injected_failure_is_typed(self, store: MemoryObjectStore, bucket: str) -> None:
        store.fail_next("put", "InternalError")
        with pytest.raises(UploadFailed) as err:
            store.put(bucket, "x", b"1")
        assert err.value.errno == errno.EIO
        assert store.head(bucket, "x") is None


@pytest.mark.s3
class TestS3StoreOnMoto(ObjectStoreContract):
    @pytest.fixture
    def store(self, moto_endpoint: str) -> S3ObjectStore:
        return S3ObjectStore(store_config(moto_endpoint))

    @pytest.fixture
    def bucket(self, store: S3ObjectStore) -> str:
        name = f"m-{uuid.uuid4().hex[:12]}"
        store.ensure_bucket(name)
        return name

    def test_if_match_detects_a_changed_object(self, store: S3ObjectStore, bucket: str) -> None:
        old = store.put(bucket, "v", b"one")
        store.put(bucket, "v", b"two")
        with pytest.raises(StoreError) as err:
            store.get_range(bucket, "v", 0, 3, etag=old)
        assert err.value.errno == errno.ESTALE

    def test_missing_bucket_maps_to_enoent(self, store: S3ObjectStore) -> None:
        with pytest.raises(ObjectNotFound) as err:
            store.get("no-such-bucket-here", "k")
        assert err.value.code == "NoSuchBucket"


@pytest.mark.s3
class TestS3StoreOnS3rver(ObjectStoreContract):
    @pytest.fixture
    def store(self, s3rver_store: S3ObjectStore) -> S3ObjectStore:
        return s3rver_store

    @pytest.fixture
    def bucket(self, s3rver_store: S3ObjectStore) -> str:
        name = f"c-{uuid.uuid4().hex[:12]}"
        s3rver_store.ensure_bucket(name)
        return name

    def test_from_env_reads_standard_variables(
        self, s3rver_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3rver_endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        store = S3ObjectStore.from_env()
        assert store.config.endpoint_url == s3rver_endpoint
        assert store.bucket_exists(bucket)
        assert store.client.meta.config.max_pool_connections >= 32
