"""The storage browser: the broker's work directory on disk and in a bucket.

Only the configured locations (and what is below them) can be listed or previewed;
small text files are shown, large or binary ones are not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient

from bridge.agent.s3 import object_store
from bridge.api.app import create_app
from bridge.config import Settings
from bridge.db import make_engine, upgrade
from bridge.server import free_port
from bridge.store import TaskStore


def _client(settings: Settings) -> TestClient:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return TestClient(create_app(settings, TaskStore(engine)))


def test_browse_and_preview_a_local_work_directory(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    work = Path(settings.effective_work_url)
    (work / "t1").mkdir(parents=True)
    (work / "t1" / "status.json").write_text('{"state": "COMPLETE"}')
    (work / "t1" / "big.bin").write_bytes(b"\0" * (200 * 1024))
    with _client(settings) as client:
        root = client.get("/storage", params={"path": str(work)})
        assert root.status_code == 200 and "t1/" in root.text
        listing = client.get("/storage", params={"path": str(work / "t1")})
        assert "status.json" in listing.text and "200.0 KiB" in listing.text
        small = client.get("/storage/preview", params={"path": str(work / "t1" / "status.json")})
        assert "&#34;state&#34;: &#34;COMPLETE&#34;" in small.text
        big = client.get("/storage/preview", params={"path": str(work / "t1" / "big.bin")})
        assert "no preview" in big.text
        escape = client.get("/storage", params={"path": str(work / ".." / "..")})
        assert escape.status_code == 400 and escape.json()["field"] == "path"


@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    object_store.cache_clear()  # the shared client must see this server
    try:
        yield endpoint
    finally:
        object_store.cache_clear()
        server.stop()


@pytest.mark.s3
def test_browse_a_work_bucket(tmp_path: Path, moto_env: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_env)
    s3.create_bucket(Bucket="dash-work")
    s3.put_object(Bucket="dash-work", Key="work/t9/status.json", Body=b'{"state": "RUNNING"}')
    s3.put_object(Bucket="dash-work", Key="work/t9/out.txt", Body=b"x" * 2048)
    settings = Settings(data_dir=tmp_path / "data", work_url="s3://dash-work/work")
    with _client(settings) as client:
        root = client.get("/storage", params={"path": "s3://dash-work/work"})
        assert root.status_code == 200 and "t9/" in root.text
        listing = client.get("/storage", params={"path": "s3://dash-work/work/t9"})
        assert "out.txt" in listing.text and "2.0 KiB" in listing.text
        preview = client.get(
            "/storage/preview", params={"path": "s3://dash-work/work/t9/status.json"}
        )
        assert "RUNNING" in preview.text
        other = client.get("/storage", params={"path": "s3://another-bucket/x"})
        assert other.status_code == 400
