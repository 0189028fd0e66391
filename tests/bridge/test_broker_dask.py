"""TES tasks through the broker onto a Dask scheduler running as its own process, and
what happens when that scheduler is killed mid-run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.server import free_port, serve_in_thread
from schedulers.dask_settings import DaskSettings
from tests.schedulers.dask_procs import DaskProcs, dask_processes

pytestmark = pytest.mark.dask


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[DaskProcs]:
    with dask_processes(tmp_path, nthreads=4, cpus=4) as running:
        yield running


def serve(settings: Settings, procs: DaskProcs) -> Iterator[BridgeClient]:
    dask = DaskSettings(address=procs.address, timeout_s=2, lost_after_s=5, kill_grace_s=2)
    targets = [
        TargetConfig(name="dask", kind="dask", container_runtime="none", dask=dask),
        # dearer, so the broker uses it only when the Dask target cannot take a task
        TargetConfig(name="spare", kind="local", container_runtime="none", cost_per_cpu_hour=1),
    ]
    settings = settings.model_copy(update={"port": free_port(), "targets": targets})
    settings.broker.poll_interval_s = 0.3
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        yield client


@pytest.fixture
def broker(settings: Settings, procs: DaskProcs) -> Iterator[BridgeClient]:
    yield from serve(settings, procs)


def wait_state(client: BridgeClient, task_id: str, state: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := client.get(task_id)["state"]) != state:
        assert time.monotonic() < deadline, f"{task_id} still {now}, not {state}"
        time.sleep(0.2)


def targets_of(client: BridgeClient, task_id: str) -> list[str]:
    return [log["metadata"]["target"] for log in client.get(task_id, view="FULL")["logs"]]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tasks_run_on_the_dask_target(broker: BridgeClient) -> None:
    tasks = [
        broker.submit({"executors": [{"image": "alpine", "command": ["echo", str(i)]}]})
        for i in range(3)
    ]
    done = [t.result(timeout=120) for t in tasks]
    assert [t["logs"][-1]["logs"][0]["stdout"] for t in done] == ["0\n", "1\n", "2\n"]
    assert {t["logs"][-1]["metadata"]["target"] for t in done} == {"dask"}
    assert {t["logs"][-1]["metadata"]["backend_job_id"] for t in done} == {
        f"bridge-{t['id']}-1" for t in done
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killing_the_scheduler_retries_its_tasks_elsewhere_once(
    broker: BridgeClient, procs: DaskProcs, tmp_path: Path
) -> None:
    """Each task appends to its own file when it starts and when it finishes: after the
    kill every task finishes exactly once, those that were on Dask on the spare target."""
    marks = tmp_path / "marks"
    marks.mkdir()

    def task(i: int) -> dict[str, object]:
        script = f"echo start >> {marks}/{i}; sleep 4; echo done >> {marks}/{i}"
        return {"executors": [{"image": "alpine", "command": ["sh", "-c", script]}]}

    first = [broker.submit(task(i)).id for i in range(3)]
    for task_id in first:
        wait_state(broker, task_id, "RUNNING")
    assert {targets_of(broker, t)[0] for t in first} == {"dask"}
    procs.kill_scheduler()

    deadline = time.monotonic() + 60
    while not any(t["name"] == "dask" and not t["healthy"] for t in broker.targets()):
        assert time.monotonic() < deadline, broker.targets()
        time.sleep(0.2)
    later = broker.submit(task(3)).id

    for task_id in [*first, later]:
        wait_state(broker, task_id, "COMPLETE", timeout=90)
    assert targets_of(broker, later) == ["spare"]
    for task_id in first:
        assert targets_of(broker, task_id) == ["dask", "spare"]
        reasons = " ".join(e["reason"] for e in broker.events(task_id))
        assert "LOST" in reasons and "retrying" in reasons, reasons
    for i in range(4):
        lines = (marks / str(i)).read_text().split()
        assert lines.count("done") == 1, (i, lines)  # nothing lost, nothing finished twice
        assert lines[-1] == "done"  # the killed first run never finished after the retry
