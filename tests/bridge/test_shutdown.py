"""SIGTERM under load: requests in flight finish, running jobs keep running, and after a
restart every task a client was given an id for is there.

``bridge serve`` runs as a real process receiving a real signal while 16 clients
POST tasks as fast as they can.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bridge.server import free_port

BRIDGE = str(Path(sys.executable).with_name("bridge"))
TES = "/ga4gh/tes/v1"
CLIENTS = 16

# Load tasks ask for a target that does not exist: each is committed, then failed by the
# router at once, so the load is on the API and the database rather than on processes.
LOAD_TASK = {
    "name": "load",
    "resources": {"backend_parameters": {"target": "elsewhere"}},
    "executors": [{"image": "alpine", "command": ["true"]}],
}


def start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'work_url = "{tmp_path / "work"}"\n[broker]\npoll_interval_s = 0.2\n'
        '[[targets]]\nname = "local"\nkind = "local"\ncontainer_runtime = "none"\n'
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_CONFIG": str(config),
        "BRIDGE_PORT": str(port),
    }
    log = open(tmp_path / f"serve-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([BRIDGE, "serve"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"bridge serve exited {proc.returncode}: {log.name}"
        assert time.monotonic() < deadline, "bridge serve did not start"
        time.sleep(0.1)


def gated(gate: Path) -> list[str]:
    return ["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.1; done; echo survived', str(gate)]


def wait_state(client: httpx.Client, task_id: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json()
        if task["state"] in states:
            return task
        assert time.monotonic() < deadline, f"task {task_id} stuck in {task['state']}"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_under_load_loses_no_acknowledged_task(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gate = tmp_path / "gate"  # the long job runs until the test opens this
    server = start(tmp_path, port)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            long_id = client.post(
                f"{TES}/tasks",
                json={
                    "name": "survivor",
                    "executors": [{"image": "alpine", "command": gated(gate)}],
                },
            ).json()["id"]
            running = wait_state(client, long_id, {"RUNNING"}, 60)
        job_pid = int(running["logs"][-1]["metadata"]["backend_job_id"].split(":")[0])

        acknowledged: list[list[str]] = [[] for _ in range(CLIENTS)]
        errors_before_signal: list[BaseException] = []
        signalled = threading.Event()

        def post_loop(slot: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                while True:
                    try:
                        response = http.post(f"{TES}/tasks", json=LOAD_TASK)
                    except httpx.HTTPError as err:
                        if not signalled.is_set():
                            errors_before_signal.append(err)
                        return  # the server has gone: stop, as a client would
                    if response.status_code == 200:
                        acknowledged[slot].append(response.json()["id"])
                    elif not signalled.is_set():
                        errors_before_signal.append(AssertionError(response.text))
                        return
                    elif response.status_code >= 500:
                        return

        threads = [threading.Thread(target=post_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while sum(map(len, acknowledged)) < 200 and not errors_before_signal:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.05)
        signalled.set()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=90) == 0, "bridge serve did not exit cleanly on SIGTERM"
        for thread in threads:
            thread.join(timeout=90)
            assert not thread.is_alive()
        assert not errors_before_signal, errors_before_signal[:3]
        assert Path(f"/proc/{job_pid}").exists(), "the running job was stopped with the broker"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    ids = [task_id for slot in acknowledged for task_id in slot]
    assert len(ids) >= 200 and len(set(ids)) == len(ids)
    server = start(tmp_path, port)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            missing = [
                task_id
                for task_id in ids
                if client.get(f"{TES}/tasks/{task_id}").status_code != 200
            ]
            assert not missing, f"{len(missing)} of {len(ids)} acknowledged tasks lost"
            assert Path(f"/proc/{job_pid}").exists()
            gate.touch()
            survivor = wait_state(
                client, long_id, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}, 90
            )
        assert survivor["state"] == "COMPLETE", survivor
        assert len(survivor["logs"]) == 1  # re-attached, not run again
        assert survivor["logs"][-1]["logs"][0]["stdout"] == "survived\n"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
