"""Fixtures for the scheduler tests: the real single-node Slurm and the loopback sshd.

Both services are started by ``scripts/services/slurm.sh`` and
``scripts/services/sshd.sh`` (the project's test command runs them first).  They
write ``.services/slurm/env`` and ``.services/sshd/env`` at the repository root;
the fixtures read those files and skip, saying exactly what is missing, when a
service is not there.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from schedulers.base import JobState, JobStatus
from schedulers.errors import BackendUnavailable
from schedulers.slurm import SlurmBackend
from schedulers.transport import CommandRunner, LocalRunner, SSHRunner
from tests.conftest import read_env_file, slurm_ping

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / ".services"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """``{"SLURM_CONF": ...}`` for the running test cluster, or skip."""
    env_file = SERVICES / "slurm" / "env"
    if not env_file.exists():
        pytest.skip(
            f"Slurm test cluster not set up: {env_file} missing (run scripts/services/slurm.sh)"
        )
    env = read_env_file(env_file)
    down = slurm_ping(env)
    if down is not None:
        pytest.skip(f"slurmctld is not answering after 60 s (scontrol ping: {down})")
    return env


@pytest.fixture(scope="session")
def ssh_env() -> dict[str, str]:
    """Host, port, user, key and known_hosts of the loopback sshd, or skip."""
    env_file = SERVICES / "sshd" / "env"
    if not env_file.exists():
        pytest.skip(f"test sshd not set up: {env_file} missing (run scripts/services/sshd.sh)")
    env = read_env_file(env_file)
    try:
        socket.create_connection((env["SSH_HOST"], int(env["SSH_PORT"])), timeout=2).close()
    except OSError as err:
        pytest.skip(f"test sshd not listening on {env['SSH_HOST']}:{env['SSH_PORT']}: {err}")
    return env


def make_ssh_runner(ssh_env: Mapping[str, str], **kwargs: object) -> SSHRunner:
    options: dict[str, object] = {
        "port": int(ssh_env["SSH_PORT"]),
        "user": ssh_env["SSH_USER"],
        "key_filename": ssh_env["SSH_KEY"],
        "known_hosts": ssh_env["SSH_KNOWN_HOSTS"],
        "use_agent": False,
    }
    options.update(kwargs)
    return SSHRunner(ssh_env["SSH_HOST"], **options)  # type: ignore[arg-type]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests here run on asyncio (through anyio's pytest plugin)."""
    return "asyncio"


@pytest.fixture(params=[pytest.param("local"), pytest.param("ssh", marks=pytest.mark.ssh)])
async def slurm_runner(
    request: pytest.FixtureRequest, slurm_env: dict[str, str]
) -> AsyncIterator[CommandRunner]:
    """The same cluster through a :class:`LocalRunner` and through the :class:`SSHRunner`."""
    if request.param == "local":
        yield LocalRunner(env=slurm_env)
        return
    runner = make_ssh_runner(request.getfixturevalue("ssh_env"), env=slurm_env)
    yield runner
    await runner.close()


@pytest.fixture
async def slurm(slurm_runner: CommandRunner) -> AsyncIterator[SlurmBackend]:
    backend = SlurmBackend(slurm_runner, name="test-slurm")
    yield backend
    await backend.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory the jobs can use (the same file system on every runner here)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


async def wait_until(
    backend: SlurmBackend,
    job_ids: Sequence[str],
    *,
    done: frozenset[JobState] | None = None,
    timeout: float = 60.0,
) -> dict[str, JobStatus]:
    """Poll until every job is finished (or in ``done``); tolerate a restarting controller."""
    deadline = time.monotonic() + timeout
    last: dict[str, JobStatus] = {}
    while time.monotonic() < deadline:
        try:
            last = dict(await backend.status(job_ids))
        except BackendUnavailable:
            await asyncio.sleep(0.5)
            continue
        if all((s.state in done) if done else s.state.finished for s in last.values()):
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"jobs not done after {timeout} s: {last}")
