"""A task runs exactly once, however often the broker is killed.

The way it failed before: 16 clients POST tasks while the broker is killed with
``kill -9`` at random moments (during dispatch, and later while jobs run) and
restarted on the same data directory.  Each task's command leaves one file in a
ledger directory per run, so "ran twice" and "never ran" are counted on disk, not
taken from the broker's word.  A client whose POST got no answer looks its task up
by tag before posting again, as a careful workflow engine would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.server import free_port
from tests.bridge.test_broker_slurm import slurm_target

TASKS = 320
CLIENTS = 16
KILLS = 5
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}

pytestmark = pytest.mark.slow


class BrokerProcess:
    """``bridge serve`` as its own process, killed and restarted at will."""

    def __init__(self, data: Path, config: Path, port: int, log: Path) -> None:
        self.data, self.config, self.port, self.log = data, config, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "BRIDGE_DATA_DIR": str(self.data),
            "BRIDGE_CONFIG": str(self.config),
            "BRIDGE_PORT": str(self.port),
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ga4gh/tes/v1/service-info", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, f"bridge serve exited; see {self.log}"
            time.sleep(0.1)
        raise AssertionError(f"bridge serve did not answer in 60 s; see {self.log}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Ledger:
    """One file per run of a task's command: ``<key>.<random>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()

    def command(self, key: str) -> list[str]:
        return ["sh", "-c", f"mktemp {self.path}/{key}.XXXXXX >/dev/null && sleep 0.3"]

    def ack(self, key: str) -> None:
        with self._lock:
            self.acknowledged.append(key)

    def runs(self, key: str) -> int:
        return sum(1 for p in self.path.iterdir() if p.name.rsplit(".", 1)[0] == key)


def find_by_key(url: str, key: str) -> bool:
    response = httpx.get(
        f"{url}/ga4gh/tes/v1/tasks", params={"tag_key": "key", "tag_value": key}, timeout=10
    )
    response.raise_for_status()
    return bool(response.json().get("tasks"))


def stored_by_then(broker: BrokerProcess, key: str, stop: threading.Event) -> bool:
    """Whether the task is stored, asked again until a broker answers (or ``stop``)."""
    while not stop.is_set():
        time.sleep(0.5)  # the broker is down or restarting: wait, then look
        try:
            return find_by_key(broker.url, key)
        except httpx.HTTPError:
            continue
    return False


def post_all(
    broker: BrokerProcess, ledger: Ledger, client: int, count: int, stop: threading.Event
) -> None:
    with httpx.Client(timeout=10) as http:
        for n in range(count):
            key = f"c{client}-{n}"
            body = {
                "name": key,
                "tags": {"key": key},
                "executors": [{"image": "debian", "command": ledger.command(key)}],
            }
            while not stop.is_set():
                try:
                    response = http.post(f"{broker.url}/ga4gh/tes/v1/tasks", json=body)
                    if response.status_code == 200:
                        ledger.ack(key)
                        break
                except httpx.HTTPError:
                    pass
                # No answer: the broker may have stored the task before it died. Post
                # again only once a broker that answers says it does not have it.
                if stored_by_then(broker, key, stop):
                    ledger.ack(key)
                    break


def kill_and_restart(
    broker: BrokerProcess,
    kills: int,
    seed: int,
    failures: list[BaseException],
    clients_done: threading.Event,
) -> None:
    rng = random.Random(seed)
    try:
        for n in range(kills):
            # the first kills land while tasks arrive and are dispatched, the last
            # ones (after the clients finished) while jobs run
            if n == kills - 2:
                clients_done.wait(600)
            time.sleep(rng.uniform(0.5, 3.0))
            broker.kill()
            time.sleep(rng.uniform(0.0, 1.0))
            broker.start()
    except BaseException as err:  # reported by the test thread
        failures.append(err)


def all_tasks(url: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"view": "BASIC", "page_size": 500}
        if token:
            params["page_token"] = token
        page = httpx.get(f"{url}/ga4gh/tes/v1/tasks", params=params, timeout=30).json()
        tasks += page.get("tasks", [])
        token = page.get("next_page_token")
        if not token:
            return tasks


def run_crash_test(tmp_path: Path, target_toml: str) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[broker]\npoll_interval_s = 0.3\ngather_s = 0.2\nadopt_settle_s = 5\n\n" + target_toml
    )
    broker = BrokerProcess(tmp_path / "data", config, free_port(), tmp_path / "serve.log")
    ledger = Ledger(ledger_dir)
    broker.start()
    try:
        stop = threading.Event()
        clients_done = threading.Event()
        failures: list[BaseException] = []
        killer = threading.Thread(
            target=kill_and_restart, args=(broker, KILLS, 7, failures, clients_done)
        )
        killer.start()
        per_client = TASKS // CLIENTS
        clients = [
            threading.Thread(target=post_all, args=(broker, ledger, n, per_client, stop))
            for n in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        timer = threading.Timer(600, stop.set)  # a bound on the whole submission phase
        timer.start()
        for thread in clients:
            thread.join()
        clients_done.set()
        timer.cancel()
        killer.join()
        assert not failures, f"the broker did not come back: {failures[0]}"
        assert not stop.is_set(), "the clients could not submit their tasks in 10 minutes"
        deadline = time.monotonic() + 600
        while True:
            tasks = all_tasks(broker.url)
            if all(t["state"] in TERMINAL for t in tasks):
                break
            assert time.monotonic() < deadline, "tasks did not finish in 10 minutes"
            time.sleep(1)
    finally:
        broker.stop()
    full = {t["id"]: t for t in tasks}
    by_key = {str(t["name"]): t for t in full.values()}
    twice = {k: ledger.runs(k) for k in by_key if ledger.runs(k) > 1}
    lost = sorted(set(ledger.acknowledged) - set(by_key))
    failed = {k: t["state"] for k, t in by_key.items() if t["state"] != "COMPLETE"}
    summary = {
        "tasks": len(by_key),
        "acknowledged": len(ledger.acknowledged),
        "kills": broker.starts - 1,
        "ran_twice": len(twice),
        "lost": len(lost),
        "not_complete": len(failed),
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert broker.starts - 1 == KILLS
    assert len(ledger.acknowledged) == TASKS // CLIENTS * CLIENTS
    assert len(by_key) == len(full), "a task was stored twice"
    assert not twice, f"ran twice: {twice}; {summary}"
    assert not lost, f"acknowledged but not stored: {lost[:5]}; {summary}"
    assert not failed, f"did not complete: {dict(list(failed.items())[:5])}; {summary}"
    never = [k for k in ledger.acknowledged if ledger.runs(k) == 0]
    assert not never, f"complete but never ran: {never[:5]}; {summary}"


def test_local_tasks_run_exactly_once_across_broker_kills(tmp_path: Path) -> None:
    run_crash_test(
        tmp_path, '[[targets]]\nname = "local"\nkind = "local"\ncontainer_runtime = "none"\n'
    )


@pytest.mark.slurm
def test_slurm_tasks_run_exactly_once_across_broker_kills(tmp_path: Path) -> None:
    target = slurm_target("local")
    env = ", ".join(f"{k} = {json.dumps(v)}" for k, v in target.env.items())
    run_crash_test(
        tmp_path,
        f'[[targets]]\nname = "hpc"\nkind = "slurm"\ncontainer_runtime = "none"\nenv = {{ {env} }}\n',
    )
