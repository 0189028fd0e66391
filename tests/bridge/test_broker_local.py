"""The whole path on the local backend: API -> broker -> bridge-agent -> results.

A real uvicorn server with the broker runs in a thread; tasks run as real
``bridge-agent`` processes with the ``none`` container runtime.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import BridgeClient, TaskFailed
from bridge.config import Settings
from bridge.server import free_port, serve_in_thread
from tests.tes_schema import validate


@pytest.fixture
def live(settings: Settings) -> Iterator[BridgeClient]:
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        yield client


def test_a_task_runs_and_reports_logs_and_outputs(live: BridgeClient, tmp_path: Path) -> None:
    out = tmp_path / "results" / "greeting.txt"
    future = live.submit(
        {
            "name": "hello",
            "inputs": [{"path": "/data/name.txt", "content": "world"}],
            "outputs": [{"path": "/data/out/greeting.txt", "url": f"file://{out}"}],
            "executors": [
                {
                    "image": "alpine",
                    "command": [
                        "sh",
                        "-c",
                        "echo hello $(cat /data/name.txt) | tee /data/out/greeting.txt",
                    ],
                },
                {"image": "alpine", "command": ["sh", "-c", "echo second >&2"]},
            ],
        }
    )
    task = future.result(timeout=60)
    validate(task, "tesTask")
    assert out.read_text() == "hello world\n"
    log = task["logs"][-1]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    assert log["logs"][0]["stdout"] == "hello world\n"
    assert log["logs"][1]["stderr"] == "second\n"
    assert log["outputs"] == [
        {"url": f"file://{out}", "path": "/data/out/greeting.txt", "size_bytes": "12"}
    ]
    assert log["metadata"]["target"] == "local"
    assert "local" in log["metadata"]["placement_reason"]
    events = [(e["from"], e["to"]) for e in live.events(future.id)]
    assert events[0] == ("UNKNOWN", "QUEUED")
    assert ("QUEUED", "INITIALIZING") in events and events[-1][1] == "COMPLETE"


def test_a_failing_executor_stops_the_task(live: BridgeClient) -> None:
    future = live.submit(
        {
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "exit 3"]},
                {"image": "alpine", "command": ["sh", "-c", "echo never"]},
            ]
        }
    )
    with pytest.raises(TaskFailed) as failed:
        future.result(timeout=60)
    task = failed.value.task
    assert task["state"] == "EXECUTOR_ERROR"
    assert [e["exit_code"] for e in task["logs"][-1]["logs"]] == [3]


def test_ignore_error_runs_the_next_executor(live: BridgeClient) -> None:
    task = live.submit(
        {
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "exit 4"], "ignore_error": True},
                {"image": "alpine", "command": ["echo", "after"]},
            ]
        }
    ).wait(timeout=60)
    assert [e["exit_code"] for e in task["logs"][-1]["logs"]] == [4, 0]
    assert task["logs"][-1]["logs"][1]["stdout"] == "after\n"


def test_cancel_stops_a_running_task(live: BridgeClient) -> None:
    future = live.submit({"executors": [{"image": "alpine", "command": ["sleep", "60"]}]})
    deadline = time.monotonic() + 30
    while future.state != "RUNNING":
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.1)
    started = time.monotonic()
    future.cancel()
    task = future.wait(timeout=30)
    assert task["state"] == "CANCELED"
    assert time.monotonic() - started < 15


def test_a_task_no_target_can_run_is_a_system_error_with_the_reason(live: BridgeClient) -> None:
    task = live.submit(
        {
            "resources": {"cpu_cores": 100_000},
            "executors": [{"image": "alpine", "command": ["true"]}],
        }
    ).wait(timeout=30)
    assert task["state"] == "SYSTEM_ERROR"
    reasons = [e["reason"] for e in live.events(task["id"])]
    assert any("100000 CPUs requested" in r for r in reasons), reasons


def test_tasks_chain_through_outputs(live: BridgeClient, tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.txt"
    live.submit(
        {
            "outputs": [{"path": "/o/n.txt", "url": str(numbers)}],
            "executors": [{"image": "alpine", "command": ["sh", "-c", "seq 1 4 > /o/n.txt"]}],
        }
    ).result(timeout=60)
    task = live.submit(
        {
            "inputs": [{"path": "/i/n.txt", "url": f"file://{numbers}"}],
            "executors": [{"image": "alpine", "command": ["sh", "-c", "paste -sd+ /i/n.txt | bc"]}],
        }
    ).wait(timeout=60)
    assert task["state"] in ("COMPLETE", "EXECUTOR_ERROR")
    if task["state"] == "COMPLETE":  # bc may be missing; awk is not
        assert task["logs"][-1]["logs"][0]["stdout"].strip() == "10"
    task = live.submit(
        {
            "inputs": [{"path": "/i/n.txt", "url": f"file://{numbers}"}],
            "executors": [
                {"image": "alpine", "command": ["awk", "{s+=$1} END {print s}", "/i/n.txt"]}
            ],
        }
    ).result(timeout=60)
    assert task["logs"][-1]["logs"][0]["stdout"].strip() == "10"


def test_a_broker_restart_loses_nothing_and_reattaches(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    marker = tmp_path / "started"
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        running = client.submit(
            {
                "executors": [
                    {
                        "image": "alpine",
                        "command": ["sh", "-c", f"touch {marker}; sleep 3; echo survived"],
                    }
                ]
            }
        )
        deadline = time.monotonic() + 30
        while not marker.exists() or running.state != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    # the broker is down; the task's process goes on.  A task submitted to a server
    # without a broker waits, stored.
    with serve_in_thread(settings, with_broker=False) as url, BridgeClient(url) as client:
        queued = client.submit({"executors": [{"image": "alpine", "command": ["echo", "later"]}]})
        assert client.get(running.id)["state"] == "RUNNING"
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        first = client.get(running.id)
        assert first["state"] in ("RUNNING", "COMPLETE")
        done = running.__class__(client, running.id).result(timeout=60)
        assert done["logs"][-1]["logs"][0]["stdout"] == "survived\n"
        assert len(done["logs"]) == 1  # re-attached, not re-run
        later = queued.__class__(client, queued.id).result(timeout=60)
        assert later["logs"][-1]["logs"][0]["stdout"] == "later\n"


def test_a_full_target_keeps_tasks_queued_until_a_slot_frees(
    settings: Settings, tmp_path: Path
) -> None:
    from bridge.config import TargetConfig

    settings = settings.model_copy(
        update={
            "port": free_port(),
            "targets": [
                TargetConfig(name="local", kind="local", container_runtime="none", max_parallel=1)
            ],
        }
    )
    settings.broker.poll_interval_s = 0.1
    spans = tmp_path / "spans"
    spans.mkdir()
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        futures = [
            client.submit(
                {
                    "executors": [
                        {
                            "image": "alpine",
                            "command": [
                                "sh",
                                "-c",
                                f"date +%s.%N > {spans}/{i}.start; sleep 0.5; date +%s.%N > {spans}/{i}.end",
                            ],
                        }
                    ]
                }
            )
            for i in range(3)
        ]
        tasks = [f.result(timeout=60) for f in futures]
    assert all(len(t["logs"]) == 1 for t in tasks)  # a busy target leaves no empty attempts
    windows = sorted(
        (float((spans / f"{i}.start").read_text()), float((spans / f"{i}.end").read_text()))
        for i in range(3)
    )
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start >= end  # never two at once
