"""The whole path on AWS Batch (moto's server): API -> broker -> Batch -> bridge-agent.

Container-less moto runs nothing, so these tests use the FAKE compute node of
:mod:`tests.bridge.batch_node`: it runs each job's recorded command with the job's
recorded environment on this machine (the agent with the ``none`` runtime), and the
FAKE host termination for the preemption test.  The docker-mode test
(``test_batch_docker.py``) runs the real thing in containers.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bridge import server as server_module
from bridge.agent.s3 import object_store
from bridge.client import BridgeClient
from bridge.config import ConfigError, Settings, TargetConfig
from bridge.server import free_port, serve_in_thread
from bridge.targets import check_work_urls, make_backends
from schedulers.aws_batch import AwsBatchBackend
from schedulers.aws_batch_settings import AwsBatchSettings
from tests.bridge.batch_node import HOST_TERMINATED, FakeNode
from tests.schedulers.aws_batch_env import BatchEnvironment, client, make_environment, moto_url

pytestmark = pytest.mark.batch
AGENT = str(Path(sys.executable).with_name("bridge-agent"))


@pytest.fixture
def batch_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchEnvironment]:
    url = moto_url()
    for key, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    object_store.cache_clear()  # the broker's S3 client is made from these variables
    yield make_environment(url)
    object_store.cache_clear()


def batch_settings(tmp_path: Path, env: BatchEnvironment) -> Settings:
    bucket = f"bridge-batch-{uuid.uuid4().hex[:10]}"
    target = TargetConfig(
        name="batch",
        kind="aws_batch",
        container_runtime="none",
        fusion="stage",
        agent_command=[AGENT],
        env={
            "AWS_ENDPOINT_URL": env.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        aws_batch=AwsBatchSettings(
            endpoint_url=env.url,
            job_queue=env.queue,
            spot_job_queue=env.spot_queue,
            docker_socket=None,
            scratch_dir=str(tmp_path / "scratch"),
        ),
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
        work_url=f"s3://{bucket}/work",
        port=free_port(),
        targets=[target],
    )
    settings.broker.poll_interval_s = 0.3
    return settings


@pytest.fixture
def node(batch_env: BatchEnvironment, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNode]:
    """The fake node, attached to the broker's Batch client as the server builds it."""
    fake = FakeNode(client("batch", batch_env.url), batch_env.queue)

    def attached(targets: list[TargetConfig]) -> dict[str, Any]:
        backends = make_backends(targets)
        for backend in backends.values():
            if isinstance(backend, AwsBatchBackend):
                fake.attach(backend.client)
        return backends

    monkeypatch.setattr(server_module, "make_backends", attached)
    with fake:
        yield fake


def test_a_path_work_url_is_refused_for_a_batch_target(
    tmp_path: Path, batch_env: BatchEnvironment
) -> None:
    settings = batch_settings(tmp_path, batch_env).model_copy(
        update={"work_url": str(tmp_path / "work")}
    )
    with pytest.raises(ConfigError, match="s3://"):
        check_work_urls(settings)
    check_work_urls(batch_settings(tmp_path, batch_env))  # an s3:// work_url is fine


@pytest.mark.slow  # a hundred agent runs against moto's S3
def test_a_hundred_like_tasks_go_out_as_one_array_and_report_their_own_logs(
    tmp_path: Path, batch_env: BatchEnvironment, node: FakeNode
) -> None:
    settings = batch_settings(tmp_path, batch_env)
    tasks = [
        {"name": f"el{i}", "executors": [{"image": "debian", "command": ["echo", f"element {i}"]}]}
        for i in range(100)
    ]
    # Queue all hundred first (no broker), so the first dispatch sees them together.
    with (
        serve_in_thread(settings, with_broker=False) as url,
        BridgeClient(url) as api,
        ThreadPoolExecutor(8) as pool,
    ):
        ids = list(pool.map(lambda t: api.submit(t).id, tasks))
    with serve_in_thread(settings) as url, BridgeClient(url) as api:
        results = [wait_done(api, task_id, timeout=400) for task_id in ids]
    assert len(node.seen_arrays) == 1, [a["arrayProperties"] for a in node.seen_arrays]
    assert node.seen_arrays[0]["arrayProperties"]["size"] == 100
    for i, task in enumerate(results):
        assert task["state"] == "COMPLETE", task.get("logs")
        assert len(task["logs"]) == 1
        assert task["logs"][0]["logs"][0]["stdout"] == f"element {i}\n"


def test_a_preempted_job_is_retried_and_keeps_one_log_per_attempt(
    tmp_path: Path, batch_env: BatchEnvironment, node: FakeNode
) -> None:
    settings = batch_settings(tmp_path, batch_env)
    node.terminate_host("bridge-")
    with serve_in_thread(settings) as url, BridgeClient(url) as api:
        task_id = api.submit(
            {
                "name": "spot",
                "resources": {"preemptible": False},
                "executors": [{"image": "debian", "command": ["echo", "second time lucky"]}],
            }
        ).id
        task = wait_done(api, task_id)
        events = api.events(task_id)
    assert node.terminated, "the fake host termination never happened"
    assert task["state"] == "COMPLETE", task
    assert len(task["logs"]) == 2
    first, second = task["logs"]
    retry = [e for e in events if e["from"] not in ("UNKNOWN", "QUEUED") and e["to"] == "QUEUED"]
    assert len(retry) == 1 and HOST_TERMINATED in retry[0]["reason"], events
    assert second["logs"][0]["stdout"] == "second time lucky\n"
    assert not first.get("logs")  # the first attempt never ran an executor


def wait_done(api: BridgeClient, task_id: str, timeout: float = 150.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = api.get(task_id, view="FULL")
        if task["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
            return task
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} not done after {timeout} s: {task.get('state')}")
