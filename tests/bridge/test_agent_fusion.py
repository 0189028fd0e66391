"""Tasks that name ``/fusion/s3/<bucket>/<key>``: through the broker, on the local target.

Object storage is moto's S3 server on 127.0.0.1.  ``stage`` runs everywhere; ``mount``
needs FUSE (``/dev/fuse``, fusermount3, pyfuse3) and mounts Fusion for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.cli import main
from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.server import free_port, serve_in_thread
from fusion.mount import fuse_available

pytestmark = pytest.mark.s3

FUSE_OK, FUSE_WHY = fuse_available()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the agent processes inherit them
    client = boto3.client("s3")
    client.create_bucket(Bucket="data")
    client.put_object(Bucket="data", Key="in.txt", Body=b"hello fusion\n")
    client.put_object(Bucket="data", Key="refs/a.txt", Body=b"A\n")
    client.put_object(Bucket="data", Key="refs/b.txt", Body=b"B\n")
    yield client
    server.stop()


@pytest.fixture(params=["stage", pytest.param("mount", marks=pytest.mark.fuse)])
def live(request: pytest.FixtureRequest, s3: object, tmp_path: Path) -> Iterator[BridgeClient]:
    if request.param == "mount" and not FUSE_OK:
        pytest.skip(f"FUSE cannot be used here: {FUSE_WHY}")
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        targets=[
            TargetConfig(
                name="local",
                kind="local",
                container_runtime="none",
                fusion=request.param,
                fusion_cache_gb=0.1,
            )
        ],
    )
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        client.mode = request.param  # type: ignore[attr-defined]
        yield client


def test_fusion_paths_read_and_write_objects(
    live: BridgeClient, s3: object, capsys: pytest.CaptureFixture[str]
) -> None:
    task = live.submit(
        {
            "tags": {"workflow": "wf-fusion"},
            "inputs": [{"url": "s3://data/in.txt", "path": "/in/stream.txt", "streamable": True}],
            "executors": [
                {
                    "image": "alpine",
                    "command": [
                        "sh",
                        "-c",
                        # a prefix with no key is no folder yet (fusion/SEMANTICS.md): mkdir
                        "mkdir -p /fusion/s3/data/out && "
                        "tr a-z A-Z < /fusion/s3/data/in.txt > /fusion/s3/data/out/upper.txt && "
                        "cat /fusion/s3/data/refs/*.txt && cat /in/stream.txt",
                    ],
                },
            ],
        }
    ).result(timeout=120)
    log = task["logs"][-1]
    assert log["logs"][0]["stdout"] == "A\nB\nhello fusion\n"
    body = s3.get_object(Bucket="data", Key="out/upper.txt")["Body"].read()  # type: ignore[attr-defined]
    assert body == b"HELLO FUSION\n"
    said = " ".join(log["system_logs"])
    mode = live.mode  # type: ignore[attr-defined]
    assert ("mounted at /fusion" in said) if mode == "mount" else ("staged" in said), said
    # What Fusion did is in the attempt's metadata: the mount's counters, or what
    # staging moved. Read: refs/a.txt, refs/b.txt and in.txt, 17 bytes (a mount is
    # asked for in.txt twice - by tr, and by cat through the streamable input's link -
    # but the kernel keeps the second from its page cache); published: upper.txt, 13
    # bytes (through a mount, every close publishes: the shell's close of the
    # redirection's first descriptor published it empty, tr's close with its bytes).
    meta = log["metadata"]
    assert meta["fusion_mode"] == mode
    assert 17 <= int(meta["fusion_bytes_read"]) <= (30 if mode == "mount" else 17), meta
    assert meta["fusion_bytes_published"] == "13"
    assert 1 <= int(meta["fusion_objects_published"]) <= (2 if mode == "mount" else 1)
    if mode == "mount":
        assert int(meta["fusion_bytes_written"]) == 13
        # Fetched from the store: the 17 bytes (a small object is fetched whole, once),
        # and upper.txt, which the mount's own lookups found and prefetched.
        assert 17 <= int(meta["fusion_bytes_fetched"]) <= 30, meta
        assert 3 <= int(meta["fusion_gets"]) <= 4, meta
    # ... in `bridge status` ...
    assert main(["--server", live.url, "status", task["id"]]) == 0
    shown = capsys.readouterr().out
    assert f"fusion ({mode}): read {meta['fusion_bytes_read']} B" in shown, shown
    assert "published 13 B in" in shown
    # ... in the broker's metrics (process-wide counters: at least this task's) ...
    scraped = httpx.get(f"{live.url}/metrics").text
    read = [
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "bridge_fusion_bytes_total"
        and sample.labels == {"target": "local", "direction": "read"}
    ]
    assert read and read[0] >= 17, scraped
    # ... and in the workflow's report.
    html = httpx.get(f"{live.url}/report", params={"tag": "workflow=wf-fusion"}).text
    row = html[html.index('id="report-tasks"') :]
    assert f"<td>{meta['fusion_bytes_read']} B / 13 B</td>" in row, row
    assert f"Fusion read {meta['fusion_bytes_read']} B, published 13 B" in html


def test_a_missing_object_is_an_executor_error_not_a_silent_empty_file(live: BridgeClient) -> None:
    task = live.submit(
        {
            "executors": [
                {"image": "alpine", "command": ["cat", "/fusion/s3/data/no-such-object.txt"]}
            ]
        }
    ).wait(timeout=120)
    assert task["state"] == "EXECUTOR_ERROR"
    assert task["logs"][-1]["logs"][0]["exit_code"] != 0
