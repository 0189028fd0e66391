"""Scriptable CLI: every data command's ``--json`` is one document holding what the text
view shows; ``--watch`` refreshes; progress only on a terminal; plain-text help."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import build_parser
from bridge.client import TERMINAL, BridgeClient
from bridge.config import Settings
from bridge.server import free_port, serve_in_thread

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def bridge(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BRIDGE, "--server", url, *args], capture_output=True, text=True, timeout=120, check=check
    )


def as_json(url: str, *args: str) -> Any:
    cut = args.index("--") if "--" in args else len(args)  # after "--" comes the task's command
    result = bridge(url, *args[:cut], "--json", *args[cut:])
    return json.loads(result.stdout)  # exactly one document: anything else fails to parse


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: these tests are about the command line, not the database."""
    from bridge.config import TargetConfig

    return Settings(
        data_dir=tmp_path / "data",
        targets=[TargetConfig(name="local", kind="local", container_runtime="none")],
    )


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as base:
        yield base


def test_every_data_command_prints_what_it_shows_as_json(url: str) -> None:
    # submit --wait
    done = as_json(
        url, "submit", "--wait", "--name", "j1", "--tag", "suite=json", "--", "echo", "hi"
    )
    assert set(done) == {"id", "state"} and done["state"] == "COMPLETE"
    task_id = done["id"]
    plain = bridge(url, "submit", "--wait", "--tag", "suite=json", "--", "true").stdout.split()
    assert len(plain) == 2 and plain[1] == "COMPLETE"  # the text view: id, then state

    # status: the text view is rendered from the same data
    status = as_json(url, "status", task_id)
    text = bridge(url, "status", task_id).stdout
    assert set(status) == {"id", "state", "name", "attempts", "events"}
    assert text.splitlines()[0].split() == [status["id"], status["state"], status["name"]]
    (attempt,) = status["attempts"]
    assert f"attempt {attempt['attempt']} on {attempt['target']}" in text
    assert attempt["executors"] == [{"index": 0, "exit_code": 0}]
    assert "    executor 0: exit 0" in text
    assert len(status["events"]) >= 3
    for event in status["events"]:
        assert set(event) == {"at", "from", "to", "reason"}
        assert f"{event['from']:>14} -> {event['to']:<14} {event['reason']}" in text

    # list
    listing = as_json(url, "list", "--tag", "suite=json")
    assert set(listing) == {"tasks", "next_page_token"}
    text_rows = [
        line.split() for line in bridge(url, "list", "--tag", "suite=json").stdout.splitlines()
    ]
    assert [[t["id"], t["state"], *t["name"].split()] for t in listing["tasks"]] == text_rows
    assert {t["id"] for t in listing["tasks"]} == {task_id, plain[0]}

    # logs
    logs = as_json(url, "logs", task_id)
    assert set(logs) == {"id", "attempt", "system_logs", "executors"}
    assert logs["executors"][0]["stdout"] == bridge(url, "logs", task_id).stdout == "hi\n"
    assert logs["executors"][0]["exit_code"] == 0

    # cancel
    long_id = as_json(url, "submit", "--", "sleep", "30")["id"]
    cancelled = as_json(url, "cancel", long_id)
    assert cancelled["id"] == long_id and cancelled["state"] in ("CANCELING", "CANCELED")

    # targets
    targets = as_json(url, "targets")["targets"]
    text = bridge(url, "targets").stdout
    for t in targets:
        assert set(t) == {
            "name",
            "kind",
            "microarchitecture",
            "cpus",
            "pending_jobs",
            "queue_wait_s",
            "healthy",
            "detail",
        }
        assert re.search(rf"^{t['name']}\s+{t['kind']}\s+.*cpus={t['cpus']}", text, re.M), text

    # token
    token = as_json(url, "token", "alice", "--admin")
    assert set(token) == {"name", "token", "token_sha256", "admin"} and token["admin"] is True
    import hashlib

    assert hashlib.sha256(token["token"].encode()).hexdigest() == token["token_sha256"]


def gated(gate: Path) -> list[str]:
    """A command that runs until ``gate`` exists: the test decides when it ends."""
    return ["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.1; done', str(gate)]


def test_status_watch_follows_a_task_until_it_ends(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with BridgeClient(url) as client:
        task_id = client.run(gated(gate)).id
    proc = subprocess.Popen(
        [BRIDGE, "--server", url, "status", task_id, "--watch", "--interval", "0.3", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        gate.touch()
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    states = [first["state"], *(json.loads(line)["state"] for line in rest.splitlines())]
    assert first["state"] not in TERMINAL and states[-1] == "COMPLETE", states
    assert proc.returncode == 0  # the watch ends by itself once the task has finished


def test_list_watch_refreshes_until_interrupted(url: str) -> None:
    proc = subprocess.Popen(
        [BRIDGE, "--server", url, "list", "--watch", "--interval", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        first = json.loads(proc.stdout.readline())
        with BridgeClient(url) as client:
            new_id = client.run(["true"], name="watched").id
        deadline = time.monotonic() + 60
        while True:
            doc = json.loads(proc.stdout.readline())
            if new_id in {t["id"] for t in doc["tasks"]}:
                break
            assert time.monotonic() < deadline, "the new task never showed up"
    finally:
        proc.send_signal(signal.SIGINT)
        # read what it wrote meanwhile: a full pipe would keep it from exiting
        proc.communicate(timeout=30)
    assert new_id not in {t["id"] for t in first["tasks"]}
    assert proc.returncode == 0


def read_pty(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_submit_wait_shows_progress_on_a_terminal_only(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    command = [BRIDGE, "--server", url, "submit", "--wait", "--", *gated(gate)]
    main, child = pty.openpty()
    proc = subprocess.Popen(command, stdin=child, stdout=child, stderr=child)
    os.close(child)
    progress = re.compile(rb"(QUEUED|INITIALIZING|RUNNING)\s+\d+\.\d s")
    try:
        seen = b""
        deadline = time.monotonic() + 120
        while not progress.search(seen):  # the task cannot end before the gate opens
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += read_pty(main, proc, 0.5)
        gate.touch()
        seen += read_pty(main, proc, 120)
        proc.wait(timeout=30)
    finally:
        os.close(main)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "\r" in text
    assert text.rstrip().endswith("COMPLETE")

    piped = subprocess.run(
        [BRIDGE, "--server", url, "submit", "--wait", "--", "true"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = piped.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "COMPLETE" and piped.stderr == ""


def test_help_texts_are_plain_text() -> None:
    parser = build_parser()
    texts = [parser.format_help()]
    actions = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    for action in actions:
        for sub in action.choices.values():
            texts.append(sub.format_help())
            for inner in sub._actions:
                if inner.choices and isinstance(inner.choices, dict):
                    texts += [p.format_help() for p in inner.choices.values()]
    assert len(texts) > 10
    for text in texts:
        assert "``" not in text and not re.search(r":(class|func|data|meth):", text), text
