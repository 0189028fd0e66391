"""Bootstrapping bridge-agent on a "login node": the loopback sshd, a real venv, real pip.

The wheel is built from the committed tree (``git archive HEAD``), uploaded over SFTP
and installed with the remote side's pip, which fetches the dependencies from PyPI.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.remote_agent import MARKER, BootstrapError, bootstrap_agent
from schedulers.transport import SSHRunner
from tests.conftest import REPO, service_env

pytestmark = [pytest.mark.anyio, pytest.mark.ssh, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ssh_runner_options() -> dict[str, object]:
    env = service_env("sshd")
    if not env:
        pytest.skip(
            "test sshd not set up: .services/sshd/env missing (run scripts/services/sshd.sh)"
        )
    try:
        socket.create_connection((env["SSH_HOST"], int(env["SSH_PORT"])), timeout=2).close()
    except OSError as err:
        pytest.skip(f"test sshd not listening on {env['SSH_HOST']}:{env['SSH_PORT']}: {err}")
    return {
        "host": env["SSH_HOST"],
        "port": int(env["SSH_PORT"]),
        "user": env["SSH_USER"],
        "key_filename": env["SSH_KEY"],
        "known_hosts": env["SSH_KNOWN_HOSTS"],
        "use_agent": False,
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheel")
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
    )
    (built,) = out.glob("converged_bridge-*.whl")
    yield built


async def test_bootstrap_installs_a_working_agent_over_ssh(
    ssh_runner_options: dict[str, object], wheel: Path, tmp_path: Path
) -> None:
    runner = SSHRunner(**ssh_runner_options)  # type: ignore[arg-type]
    remote_dir = str(tmp_path / "bridge home")
    try:
        agent = await bootstrap_agent(runner, wheel, remote_dir)
        assert agent == f"{remote_dir}/venv/bin/bridge-agent"
        assert (tmp_path / "bridge home" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
        assert wheel.name in (tmp_path / "bridge home" / MARKER).read_text()
        # the agent runs from the new venv, the way a compute node would start it
        result = subprocess.run([agent, "--help"], capture_output=True, text=True, check=True)
        assert "work" in result.stdout.lower()
        started = time.monotonic()
        assert await bootstrap_agent(runner, wheel, remote_dir) == agent
        assert time.monotonic() - started < 10  # same wheel: nothing reinstalled
    finally:
        await runner.close()


async def test_bootstrap_reports_a_missing_python(
    ssh_runner_options: dict[str, object], wheel: Path, tmp_path: Path
) -> None:
    runner = SSHRunner(**ssh_runner_options)  # type: ignore[arg-type]
    try:
        with pytest.raises(BootstrapError, match="create the venv"):
            await bootstrap_agent(runner, wheel, str(tmp_path / "x"), python="python9.99")
    finally:
        await runner.close()
