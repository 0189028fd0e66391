"""Install ``bridge-agent`` on a remote login node, from the broker's own wheel.

Compute nodes run each task as ``bridge-agent run <work-url>``, so the agent must be
installed where they can see it — normally a shared home or project directory on the
cluster.  :func:`bootstrap_agent` does that through any command runner (the SSH
runner for a login node), without a manual step:

1. upload the wheel (SFTP) to ``<remote_dir>/wheels/``;
2. create ``<remote_dir>/venv`` with the remote ``python -m venv``;
3. ``pip install`` the wheel there (its dependencies come from the remote side's
   package index, so the login node needs PyPI or a mirror);
4. check that ``bridge-agent --help`` runs, and record which wheel is installed.

Running it again with the same wheel (same SHA-256) only re-checks the agent, so it
is cheap to call on every ``bridge targets bootstrap``.  A different wheel is
installed over the old one in the same venv.  ``remote_dir`` is used as given: an
absolute path, or one relative to the login directory.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from pathlib import Path

from schedulers.errors import CommandFailed
from schedulers.transport import CommandRunner

log = logging.getLogger(__name__)

MARKER = "installed-wheel.txt"


class BootstrapError(RuntimeError):
    """The agent could not be installed; the message carries the remote error."""


async def bootstrap_agent(
    runner: CommandRunner, wheel: Path, remote_dir: str, python: str = "python3"
) -> str:
    """Install the agent from ``wheel`` under ``remote_dir``; return its remote path."""
    data = wheel.read_bytes()
    stamp = f"{wheel.name} sha256={hashlib.sha256(data).hexdigest()}\n"
    venv = posixpath.join(remote_dir, "venv")
    agent = posixpath.join(venv, "bin", "bridge-agent")
    marker = posixpath.join(remote_dir, MARKER)
    if await _installed_stamp(runner, marker) == stamp and await _agent_runs(runner, agent):
        log.info("bridge-agent already installed at %s from %s", agent, wheel.name)
        return agent
    remote_wheel = posixpath.join(remote_dir, "wheels", wheel.name)
    await runner.write_file(remote_wheel, data)
    pip = [posixpath.join(venv, "bin", "python"), "-m", "pip", "install", "--quiet"]
    pip.append("--disable-pip-version-check")
    steps = [
        ("create the venv", [python, "-m", "venv", venv]),
        # the same version may have been installed from an older build: replace it
        ("install the wheel", [*pip, "--force-reinstall", "--no-deps", remote_wheel]),
        ("install its dependencies", [*pip, remote_wheel]),
    ]
    for what, argv in steps:
        try:
            await runner.run(argv, timeout=900)
        except CommandFailed as err:
            raise BootstrapError(f"could not {what} in {remote_dir}: {err}") from err
    if not await _agent_runs(runner, agent):
        raise BootstrapError(f"{agent} was installed but does not run")
    await runner.write_file(marker, stamp.encode())
    log.info("installed bridge-agent at %s from %s", agent, wheel.name)
    return agent


async def _installed_stamp(runner: CommandRunner, marker: str) -> str | None:
    try:
        return (await runner.read_file(marker)).decode()
    except (FileNotFoundError, OSError):
        return None


async def _agent_runs(runner: CommandRunner, agent: str) -> bool:
    try:
        result = await runner.run([agent, "--help"], check=False, timeout=120)
    except FileNotFoundError:  # a local runner cannot even start a missing program
        return False
    return result.returncode == 0
