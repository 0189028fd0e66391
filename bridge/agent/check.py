"""``bridge-agent check``: what this node can run, as one JSON document.

A target's readiness check (``bridge doctor``, ``bridge targets``) runs this on a node
of the target, so that "sandbox works here", "docker is not reachable" or "FUSE is
unusable" is known before a task lands there, not read from its failure afterwards.
The probes are the ones an attempt uses to choose its runtime
(:class:`~bridge.agent.runtime.RuntimeSelector`), so the answer cannot drift from
what tasks will see.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from typing import Any

from bridge.agent.runtime import ENGINES, RuntimeKind, RuntimeSelector

FUSE_DEVICE = "/dev/fuse"


def agent_version() -> str:
    try:
        return importlib_metadata.version("converged-bridge")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def fuse_problem(
    device: str = FUSE_DEVICE, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """``None`` if a FUSE file system can be mounted here (device and helper), else why."""
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as err:
        return f"{device} is not usable: {err.strerror}"
    os.close(fd)
    if which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3)"
    return None


def _entry(problem: str | None) -> dict[str, Any]:
    return {"usable": problem is None, "detail": problem or "ok"}


def node_report(selector: RuntimeSelector | None = None) -> dict[str, Any]:
    """The readiness document: agent version, host, each runtime, FUSE."""
    selector = selector or RuntimeSelector("auto")
    runtimes = {
        kind.value: _entry(selector.engine_problem(kind))
        for kind in (*ENGINES, RuntimeKind.SANDBOX)
    }
    runtimes[RuntimeKind.NONE.value] = {
        "usable": True,
        "detail": "always available; paths inside files and scripts are not mapped",
    }
    return {
        "agent_version": agent_version(),
        "host": socket.gethostname(),
        "runtimes": runtimes,
        "fuse": _entry(fuse_problem()),
    }
