"""The ``bridge`` command, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.server import free_port, serve_in_thread

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def bridge(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [BRIDGE, *(["--server", url] if url else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=check, env=env)


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as base:
        yield base


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_status_logs_list_cancel(url: str, tmp_path: Path) -> None:
    done = bridge(
        "submit",
        "--wait",
        "--name",
        "cli-one",
        "--tag",
        "workflow=cli",
        "--",
        "sh",
        "-c",
        "echo from-cli",
        url=url,
    )
    task_id, state = done.stdout.split()
    assert state == "COMPLETE"
    assert bridge("logs", task_id, url=url).stdout == "from-cli\n"
    status = bridge("status", task_id, url=url).stdout
    assert (
        "COMPLETE" in status and "QUEUED -> INITIALIZING" in status and "placed on local" in status
    )
    assert task_id in bridge("list", "--tag", "workflow=cli", url=url).stdout
    assert bridge("list", "--tag", "workflow=other", url=url).stdout == ""

    task_file = tmp_path / "task.yaml"
    task_file.write_text(
        "name: from-yaml\nexecutors:\n  - image: alpine\n    command: [sleep, '30']\n"
    )
    long_id = bridge("submit", str(task_file), url=url).stdout.strip()
    assert bridge("cancel", long_id, url=url).stdout.strip() in ("CANCELING", "CANCELED")
    assert "local" in bridge("targets", url=url).stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_task_file_is_a_clear_error(url: str, tmp_path: Path) -> None:
    task_file = tmp_path / "bad.json"
    task_file.write_text(
        json.dumps({"executors": [{"image": "a", "command": ["x"], "stdout": "rel"}]})
    )
    result = bridge("submit", str(task_file), url=url, check=False)
    assert result.returncode == 2
    assert "executors[0].stdout" in result.stderr and "Traceback" not in result.stderr


def test_demo_runs_on_the_embedded_defaults(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
    }
    result = bridge("demo", env=env)
    assert "sum of squares of 1..10 = 385" in result.stdout, result.stdout + result.stderr
    results = next((tmp_path / "data" / "demo-results").iterdir())
    assert (results / "sum.txt").read_text().strip() == "385"
    assert (results / "squares.txt").read_text().split() == [str(i * i) for i in range(1, 11)]
