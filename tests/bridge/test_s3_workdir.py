"""Work directories in object storage: the demo on an S3-compatible server.

moto's server runs on 127.0.0.1; the broker and the agents reach it through the
standard AWS variables, as a user would configure them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    from bridge.server import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        yield env
    finally:
        server.stop()


def test_demo_with_the_work_directory_in_a_bucket(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        **s3_env,
    }
    bridge = str(Path(sys.executable).with_name("bridge"))
    result = subprocess.run([bridge, "demo"], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "work directory: s3://bridge-work/work" in result.stdout
    assert "sum of squares of 1..10 = 385" in result.stdout

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bridge-work")["Contents"]]
    sums = [k for k in keys if k.startswith("demo-results/") and k.endswith("/sum.txt")]
    assert len(sums) == 1
    assert s3.get_object(Bucket="bridge-work", Key=sums[0])["Body"].read().strip() == b"385"
    statuses = [k for k in keys if k.startswith("work/") and k.endswith("attempts/1/status.json")]
    assert len(statuses) == 3  # one per step, written by the agents into the bucket
    assert not (tmp_path / "data" / "work").exists()
