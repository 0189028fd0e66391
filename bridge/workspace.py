"""The broker's side of the work directory (layout: ``docs/workdir.md``).

A thin layer over :mod:`bridge.agent.workdir`, which both sides share: where a
task's work directory is, writing ``task.json``, reading ``status.json``, and how
to start the agent on a node.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.agent import workdir as wd


def prepare_base(url: str) -> None:
    """Make sure the work directory's base exists (a folder, or a bucket)."""
    if url.startswith("s3://"):
        from bridge.agent.s3 import s3_client, split_s3_url

        bucket, _ = split_s3_url(url)
        client = s3_client()
        try:
            client.head_bucket(Bucket=bucket)
        except Exception:  # missing (404) or not yet visible: try to create it
            client.create_bucket(Bucket=bucket)
        return
    marker = wd.open_workdir(url).local_path("base")
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)


def task_url(base: str, task_id: str) -> str:
    return f"{base.rstrip('/')}/{task_id}"


def write_task(url: str, task: Mapping[str, Any], runtime: Mapping[str, Any]) -> None:
    wd.write_task(wd.open_workdir(url), task, runtime)


def has_task(url: str) -> bool:
    """Whether ``task.json`` is in the work directory."""
    try:
        wd.read_task(wd.open_workdir(url))
    except (OSError, ValueError):
        return False
    return True


def read_status(url: str, attempt: int) -> dict[str, Any] | None:
    try:
        return wd.read_status(wd.open_workdir(url), attempt)
    except (OSError, ValueError):
        return None


def claim_state(url: str, attempt: int) -> str | None:
    """``"live"`` if an agent holds the attempt now, ``"stale"`` if one held it and is
    gone, ``None`` if no agent ever claimed it (or the work directory is unreadable)."""
    from bridge.agent import claim

    try:
        work = wd.open_workdir(url)
    except (OSError, ValueError):
        return None
    if claim.claim_is_live(work, attempt):
        return "live"
    return "stale" if claim.claim_exists(work, attempt) else None


def status_signature(url: str, attempt: int) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of a local ``status.json`` -- a cheap "has it changed?" --
    or ``None`` where that cannot be known without reading (object storage, missing)."""
    try:
        local = wd.open_workdir(url).local_path(wd.status_name(attempt))
        if local is None:
            return None
        stat = local.stat()
    except (OSError, ValueError):
        return None
    return stat.st_mtime_ns, stat.st_size


def read_executor_log(url: str, attempt: int, index: int, stream: str) -> bytes | None:
    try:
        return wd.read_executor_log(wd.open_workdir(url), attempt, index, stream)
    except (OSError, ValueError):
        return None


def local_log_path(url: str, attempt: int, fallback_dir: Path) -> Path:
    """Where the backend sends the agent's own output for this attempt.

    In a local work directory: ``attempts/<N>/agent.log`` beside the status; for an
    object-store work directory the job's output stays on the submitting side.
    """
    local = wd.open_workdir(url).local_path(wd.agent_log_name(attempt))
    path = local if local is not None else fallback_dir / f"agent-{attempt}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def agent_command(configured: Sequence[str] | None) -> list[str]:
    """The argv prefix that starts ``bridge-agent`` on a node."""
    if configured:
        return list(configured)
    beside = Path(sys.executable).with_name("bridge-agent")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("bridge-agent")
    return [found] if found else [sys.executable, "-m", "bridge.agent.main"]
