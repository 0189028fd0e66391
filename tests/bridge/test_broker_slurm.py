"""TES tasks through the broker onto the real single-node Slurm cluster.

The cluster and the sshd are started by ``scripts/services/slurm.sh`` and
``scripts/services/sshd.sh``; the compute node is this machine, so the work
directory is a local folder both sides see.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bridge.client import BridgeClient, TaskFuture
from bridge.config import Settings, TargetConfig
from bridge.server import free_port, serve_in_thread
from tests.conftest import service_env, slurm_ping
from tests.tes_schema import validate

pytestmark = pytest.mark.slurm

ECHO = {
    "image": "alpine",
    "command": ["sh", "-c", "echo on $(hostname) in slurm job $SLURM_JOB_ID"],
}


def slurm_target(runner: str = "local") -> TargetConfig:
    env = service_env("slurm")
    if not env:
        pytest.skip("the Slurm test cluster is not set up: run scripts/services/slurm.sh")
    down = slurm_ping(env)
    if down is not None:
        pytest.skip(f"slurmctld does not answer after 60 s: {down}")
    if runner == "local":
        return TargetConfig(name="hpc", kind="slurm", container_runtime="none", env=env)
    ssh = service_env("sshd")
    if not ssh:
        pytest.skip("the test sshd is not set up: run scripts/services/sshd.sh")
    return TargetConfig(
        name="hpc",
        kind="slurm",
        container_runtime="none",
        env=env,
        runner="ssh",
        host=ssh["SSH_HOST"],
        port=int(ssh["SSH_PORT"]),
        user=ssh["SSH_USER"],
        key_file=ssh["SSH_KEY"],
        known_hosts=ssh["SSH_KNOWN_HOSTS"],
    )


def serve(
    settings: Settings, target: TargetConfig, gather_s: float = 0.3
) -> Iterator[BridgeClient]:
    settings = settings.model_copy(update={"port": free_port(), "targets": [target]})
    settings.broker.poll_interval_s = 0.3
    settings.broker.gather_s = gather_s
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        yield client


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def hpc(request: pytest.FixtureRequest, settings: Settings) -> Iterator[BridgeClient]:
    yield from serve(settings, slurm_target(request.param))


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def hpc_gathering(request: pytest.FixtureRequest, settings: Settings) -> Iterator[BridgeClient]:
    """A broker that waits 2 s after a nudge: tasks sent together from several
    threads on a busy machine still reach it within one gathering pause."""
    yield from serve(settings, slurm_target(request.param), gather_s=2.0)


@pytest.fixture
def hpc_local(settings: Settings) -> Iterator[BridgeClient]:
    yield from serve(settings, slurm_target("local"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_task_runs_as_a_slurm_job(hpc: BridgeClient) -> None:
    task = hpc.submit({"name": "on-slurm", "executors": [ECHO]}).result(timeout=120)
    validate(task, "tesTask")
    meta = task["logs"][-1]["metadata"]
    assert meta["target"] == "hpc" and meta["backend_job_id"].isdigit()
    assert (
        task["logs"][-1]["logs"][0]["stdout"]
        .strip()
        .endswith(f"slurm job {meta['backend_job_id']}")
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tasks_arriving_together_become_one_array(hpc_gathering: BridgeClient) -> None:
    def send(i: int) -> TaskFuture:
        echo = {"image": "alpine", "command": ["echo", str(i)]}
        return hpc_gathering.submit({"name": f"el-{i}", "executors": [echo]})

    with ThreadPoolExecutor(6) as pool:
        futures = list(pool.map(send, range(6)))
    tasks = [f.result(timeout=180) for f in futures]
    ids = [t["logs"][-1]["metadata"]["backend_job_id"] for t in tasks]
    assert all("_" in job_id for job_id in ids), ids  # array elements: <array>_<index>
    assert len({job_id.split("_")[0] for job_id in ids}) < len(ids)  # shared array jobs
    assert [t["logs"][-1]["logs"][0]["stdout"] for t in tasks] == [f"{i}\n" for i in range(6)]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failing_task_and_a_cancelled_one(hpc_local: BridgeClient) -> None:
    failing = hpc_local.submit(
        {"executors": [{"image": "alpine", "command": ["sh", "-c", "exit 7"]}]}
    )
    long = hpc_local.submit({"executors": [{"image": "alpine", "command": ["sleep", "120"]}]})
    assert failing.wait(timeout=120)["logs"][-1]["logs"][0]["exit_code"] == 7
    assert failing.state == "EXECUTOR_ERROR"
    deadline = time.monotonic() + 60
    while long.state != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    long.cancel()
    assert long.wait(timeout=60)["state"] == "CANCELED"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_scancel_outside_the_broker_is_a_system_error_with_the_reason(
    hpc_local: BridgeClient,
) -> None:
    future = hpc_local.submit({"executors": [{"image": "alpine", "command": ["sleep", "120"]}]})
    deadline = time.monotonic() + 60
    while future.state != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job_id = hpc_local.get(future.id, view="BASIC")["logs"][-1]["metadata"]["backend_job_id"]
    subprocess.run(["scancel", job_id], env={**os.environ, **service_env("slurm")}, check=True)
    task = future.wait(timeout=60)
    assert task["state"] == "SYSTEM_ERROR"
    reasons = " ".join(e["reason"] for e in hpc_local.events(future.id))
    assert "outside the broker" in reasons, reasons


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_bad_partition_is_a_clear_task_error(hpc_local: BridgeClient) -> None:
    task = hpc_local.submit(
        {
            "resources": {"backend_parameters": {"partition": "no-such-partition"}},
            "executors": [ECHO],
        }
    ).wait(timeout=60)
    assert task["state"] == "SYSTEM_ERROR"
    reasons = " ".join(e["reason"] for e in hpc_local.events(task["id"]))
    assert "no-such-partition" in reasons, reasons


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tasks_finish_and_are_recorded_across_a_slurmctld_restart(hpc_local: BridgeClient) -> None:
    from tests.conftest import REPO

    futures = [
        hpc_local.submit(
            {"executors": [{"image": "alpine", "command": ["sh", "-c", f"sleep 4; echo {i}"]}]}
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 60
    while any(f.state not in ("RUNNING", "COMPLETE") for f in futures):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    pid = int((REPO / ".services" / "slurm" / "run" / "slurmctld.pid").read_text())
    os.kill(pid, 15)
    try:
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "slurmctld did not stop"
            time.sleep(0.1)
        time.sleep(2)  # the broker polls a controller that is gone
    finally:
        subprocess.run([str(REPO / "scripts" / "services" / "slurm.sh")], check=True, timeout=90)
    tasks = [f.result(timeout=120) for f in futures]
    assert [t["logs"][-1]["logs"][0]["stdout"] for t in tasks] == ["0\n", "1\n", "2\n"]
    assert all(len(t["logs"]) == 1 for t in tasks)  # not re-run
