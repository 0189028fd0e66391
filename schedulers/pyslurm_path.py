"""pyslurm as an optional fast path for the Slurm backend's status queries.

pyslurm links against one libslurm: a build for Slurm 25.11 cannot talk to a 22.05
controller (the RPC protocol differs), so it is used only when

* the backend's runner is local (pyslurm calls libslurm in this process; over SSH
  there is no libslurm to call),
* the installed pyslurm's major.minor equals the cluster's Slurm major.minor, and
* this process's ``SLURM_CONF`` is the cluster's (libslurm reads it at import).

Otherwise the CLI is used and :func:`choose_path` says why.  Only the hot call —
the state of many jobs, polled every few seconds — goes through pyslurm
(``pyslurm.Jobs.load``, one RPC instead of a fork of ``squeue``); submission keeps
the rendered batch script and ``sbatch``, and cancel keeps ``scancel``, so both
paths submit exactly the same jobs.  The pyslurm calls follow its 25.x API
(``pyslurm.Jobs``, ``pyslurm.Job``).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schedulers.slurm_parse import SlurmJob, parse_version


@dataclass(frozen=True)
class PathChoice:
    """Which way the backend reads job states, and why (shown in ``probe``)."""

    use_pyslurm: bool
    description: str


def installed_pyslurm_version() -> str | None:
    """The installed pyslurm's version, read from its metadata without importing it."""
    try:
        return importlib.metadata.version("pyslurm")
    except importlib.metadata.PackageNotFoundError:
        return None


def choose_path(
    *,
    pyslurm_version: str | None,
    slurm_version: str,
    runner_is_local: bool,
    cluster_conf: str | None = None,
    process_conf: str | None = None,
) -> PathChoice:
    """Decide between pyslurm and the CLI (pure; the caller gathers the facts)."""
    match = re.search(r"\d+\.\d+(?:\.\d+)?", slurm_version)
    slurm = match.group(0) if match else slurm_version
    if pyslurm_version is None:
        return PathChoice(False, f"CLI: pyslurm is not installed (cluster runs Slurm {slurm})")
    if not runner_is_local:
        return PathChoice(False, "CLI: pyslurm only works on the Slurm host itself, not over SSH")
    if parse_version(pyslurm_version)[:2] != parse_version(slurm_version)[:2]:
        return PathChoice(
            False,
            f"CLI: pyslurm {pyslurm_version} does not match the cluster's Slurm {slurm}",
        )
    if (
        cluster_conf
        and process_conf
        and os.path.realpath(cluster_conf) != os.path.realpath(process_conf)
    ):
        return PathChoice(
            False,
            f"CLI: this process has SLURM_CONF={process_conf}, the cluster uses {cluster_conf}",
        )
    return PathChoice(True, f"pyslurm {pyslurm_version} (matches Slurm {slurm})")


def expand_task_ids(text: str) -> list[int]:
    """Array task ranges as Slurm prints them: ``0-3,7,9-11:2%4`` (``%`` = throttle)."""
    ids: list[int] = []
    for part in text.split("%", 1)[0].split(","):
        span, _, step = part.partition(":")
        if not span:
            continue
        first, _, last = span.partition("-")
        ids.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def jobs_from_pyslurm(records: Sequence[Any]) -> dict[str, SlurmJob]:
    """Turn ``pyslurm.Job`` objects into the parser's :class:`SlurmJob` records.

    A pending array is one record whose ``array_tasks_waiting`` lists the indices
    not started yet; each becomes its own ``A_T`` entry.
    """
    jobs: dict[str, SlurmJob] = {}
    for job in records:
        state = str(job.state)
        reason = str(job.state_reason or "")
        array_id = job.array_id
        if array_id and job.array_task_id is not None:
            job_id = f"{array_id}_{job.array_task_id}"
        else:
            job_id = str(job.id)
        signal = job.exit_code_signal or None
        jobs[job_id] = SlurmJob(job_id, state, reason, str(job.id), job.exit_code, signal)
        waiting = job.array_tasks_waiting if array_id else None
        for task in expand_task_ids(waiting or ""):
            element = f"{array_id}_{task}"
            jobs.setdefault(element, SlurmJob(element, state, reason, str(array_id)))
    return jobs


async def load_jobs() -> dict[str, SlurmJob]:
    """Every job the controller holds, through one ``pyslurm.Jobs.load`` RPC."""
    pyslurm = importlib.import_module("pyslurm")

    def load() -> dict[str, SlurmJob]:
        return jobs_from_pyslurm(list(pyslurm.Jobs.load().values()))

    return await asyncio.to_thread(load)
