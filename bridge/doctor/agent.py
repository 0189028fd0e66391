"""The agent on the target and the work directory as the broker writes it."""

from __future__ import annotations

import uuid

from bridge import __version__
from bridge.agent import workdir as wd
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckFailed
from bridge.doctor.objectstore import OBJECT_STORE, delete_key
from bridge.doctor.remote import SSH

AGENT = "agent installed, version matches"
WORKDIR = "work directory writable from the broker"


async def agent_version(ctx: DoctorContext) -> str:
    """``bridge-agent --version`` where the target's commands run (the login side)."""
    runner = ctx.runner()
    argv = [*ctx.agent, "--version"]
    try:
        result = await runner.run(argv, timeout=60, check=False)
    except (FileNotFoundError, PermissionError) as err:
        raise CheckFailed(f"{ctx.agent[0]} cannot be started: {err}") from err
    if result.returncode == 127 or "not found" in result.stderr.lower():
        raise CheckFailed(f"{ctx.agent[0]} is not installed on the target: {result.stderr.strip()}")
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(argv)} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[:200]}"
        )
    words = (result.stdout or result.stderr).split()
    found = words[-1] if words else "?"
    if found != __version__:
        raise CheckFailed(
            f"agent {found} at {ctx.agent[0]}, broker {__version__}",
            f"reinstall the agent: bridge targets bootstrap {ctx.target.name}",
        )
    return f"{ctx.agent[0]} {found}"


async def workdir_from_broker(ctx: DoctorContext) -> str:
    """Write, read back and remove a probe file where the broker writes ``task.json``."""
    url = ctx.work_url
    name = f".doctor/probe-{uuid.uuid4().hex[:12]}"
    data = b"bridge doctor probe\n"
    try:
        workdir = wd.open_workdir(url)
        workdir.write_bytes(name, data)
        if workdir.read_bytes(name) != data:
            raise CheckFailed(f"{url}: a probe file read back different bytes")
    except (OSError, ValueError) as err:
        raise CheckFailed(f"cannot write {url}: {err}") from err
    local = workdir.local_path(name)
    if local is not None:
        local.unlink(missing_ok=True)
    else:
        delete_key(url, name)
    return f"{url} (write, read, delete)"


CHECKS = [
    Check(
        AGENT,
        agent_version,
        "install the agent where the nodes see it: bridge targets bootstrap {target}, then set "
        "agent_command of target {target} to the path it prints",
        requires=(SSH,),
        timeout_s=90,
    ),
    Check(
        WORKDIR,
        workdir_from_broker,
        "create {work_url} and make it writable by the user running `bridge serve`, or set "
        "work_url (or work_bucket) in bridge.toml",
        requires=(OBJECT_STORE,),
    ),
]
