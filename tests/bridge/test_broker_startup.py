"""A broker that starts while a target does not answer serves at once.

The way it failed before: the broker probed every target, one after another, before
the API took its first request. A Slurm login node that accepts connections but never
answers (a hung sshd, a full process table) kept a restarted broker deaf for the
SSH timeouts and more; clients that resubmit after a restart saw no broker at all.
Here the unresponsive login node is real: a TCP socket that accepts and never speaks.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.server import free_port, serve_in_thread

pytest.importorskip("paramiko", reason="the SSH runner needs paramiko (the [slurm] extra)")


@pytest.fixture
def silent_login_node() -> Iterator[int]:
    """A port that completes TCP handshakes (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_the_api_answers_and_other_targets_work_while_a_probe_hangs(
    settings: Settings, tmp_path: Path, silent_login_node: int
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    hung = TargetConfig(
        name="hpc",
        kind="slurm",
        container_runtime="none",
        runner="ssh",
        host="127.0.0.1",
        port=silent_login_node,
        user="nobody",
        known_hosts=str(known_hosts),
    )
    local = TargetConfig(name="local", kind="local", container_runtime="none")
    settings = settings.model_copy(update={"port": free_port(), "targets": [local, hung]})
    settings.broker.poll_interval_s = 0.3
    started = time.monotonic()
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        assert client.service_info()["name"] == "converged-bridge"
        answered = time.monotonic() - started
        # the SSH connection alone would have taken its 15 s timeout
        assert answered < 10, f"the API answered after {answered:.1f} s"
        task = client.submit(
            {"executors": [{"image": "debian", "command": ["sh", "-c", "echo routed"]}]}
        )
        done = task.wait(timeout=120)
        assert done["state"] == "COMPLETE", done
        assert "local" in " ".join(e["reason"] for e in client.events(task.id))
        by_name = {t["name"]: t for t in client.targets()}
        assert by_name["local"]["healthy"] is True
        assert by_name["hpc"]["healthy"] is False
        assert by_name["hpc"]["detail"], by_name["hpc"]
