"""End to end on AWS Batch in docker mode: a TES task runs in a real container.

moto's Batch (docker mode) starts the agent image built by
:func:`bridge.agent_image.build_agent_image` (the recipe ``bridge targets bootstrap``
uses) on the private dockerd; the agent reads the task from the S3 work directory,
stages the input from S3, runs the executor's own image through the node's Docker
socket, and uploads the output to S3 -- all on moto's S3 of the same server.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.agent.s3 import object_store
from bridge.agent_image import RECIPE, build_agent_image
from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.server import free_port, serve_in_thread
from schedulers.aws_batch_settings import AwsBatchSettings
from tests.conftest import REPO, read_env_file
from tests.schedulers.aws_batch_env import client, make_environment, moto_url

pytestmark = [pytest.mark.batch, pytest.mark.docker, pytest.mark.slow]


def docker_env() -> dict[str, str]:
    path = REPO / ".services" / "docker.env"
    if not path.is_file():
        pytest.skip(f"dockerd not started: {path} missing (run scripts/services/dockerd.sh)")
    return read_env_file(path)


@pytest.fixture(scope="session")
def agent_image() -> str:
    """The agent image of this source tree (built once; tagged by a hash of the sources)."""
    env = docker_env()
    digest = hashlib.sha256(RECIPE.read_bytes())
    for path in sorted(
        [*REPO.glob("bridge/**/*.py"), *REPO.glob("fusion/**/*.py"), REPO / "pyproject.toml"]
    ):
        digest.update(path.read_bytes())
    tag = f"bridge-agent:test-{digest.hexdigest()[:12]}"
    full = {**os.environ, "DOCKER_HOST": env["DOCKER_HOST"]}
    import subprocess

    if subprocess.run(
        ["docker", "image", "inspect", tag], env=full, capture_output=True, check=False
    ).returncode:
        build_agent_image(tag, env["BRIDGE_BASE_IMAGE"], env={"DOCKER_HOST": env["DOCKER_HOST"]})
    return tag


def test_a_task_runs_in_its_own_image_and_moves_data_through_s3(
    tmp_path: Path,
    agent_image: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    dockers = docker_env()
    url = moto_url("MOTO_DOCKER_URL")
    aws = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    object_store.cache_clear()  # the broker's S3 client is made from these variables
    request.addfinalizer(object_store.cache_clear)
    bucket = f"bridge-e2e-{uuid.uuid4().hex[:10]}"
    s3 = client("s3", url)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/words.txt", Body=b"hello from s3\n")
    env = make_environment(url)
    scratch = Path("/tmp") / f"bridge-batch-{uuid.uuid4().hex[:8]}"  # same path on node and in job
    scratch.mkdir()
    socket_path = dockers["DOCKER_HOST"].removeprefix("unix://")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
        work_url=f"s3://{bucket}/work",
        port=free_port(),
        targets=[
            TargetConfig(
                name="batch",
                kind="aws_batch",
                container_runtime="docker",
                fusion="stage",
                agent_command=["bridge-agent"],
                env=aws,
                aws_batch=AwsBatchSettings(
                    endpoint_url=url,
                    job_queue=env.queue,
                    agent_image=agent_image,
                    docker_socket=socket_path,
                    scratch_dir=str(scratch),
                ),
            )
        ],
    )
    settings.broker.poll_interval_s = 0.5
    task: dict[str, Any] = {}
    with serve_in_thread(settings) as api_url, BridgeClient(api_url) as api:
        task_id = api.submit(
            {
                "name": "shout",
                "inputs": [{"url": f"s3://{bucket}/in/words.txt", "path": "/data/words.txt"}],
                "outputs": [{"url": f"s3://{bucket}/out/shout.txt", "path": "/out/shout.txt"}],
                "executors": [
                    {
                        "image": dockers["BRIDGE_BASE_IMAGE"],
                        "command": [
                            "sh",
                            "-c",
                            "tr a-z A-Z < /data/words.txt | tee /out/shout.txt; cat /etc/os-release | head -1",
                        ],
                    }
                ],
            }
        ).id
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            task = api.get(task_id, view="FULL")
            if task["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
                break
            time.sleep(0.5)
    assert task.get("state") == "COMPLETE", task
    body = s3.get_object(Bucket=bucket, Key="out/shout.txt")["Body"].read()
    assert body == b"HELLO FROM S3\n"
    log = task["logs"][-1]
    assert log["logs"][0]["stdout"].startswith("HELLO FROM S3\n")
    assert "Debian" in log["logs"][0]["stdout"]  # it ran in the executor's own image
    jobs = client("batch", url).list_jobs(
        jobQueue=env.queue, filters=[{"name": "JOB_NAME", "values": ["bridge*"]}]
    )
    assert len(jobs["jobSummaryList"]) == 1  # through the Batch API, one job
