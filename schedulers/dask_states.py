"""How the Dask backend reads the scheduler's answers: task states to job states
(an unknown state is UNKNOWN, never a crash) and the workers'
microarchitectures to the one a target advertises."""

from __future__ import annotations

from collections.abc import Sequence

from schedulers import dask_worker as remote
from schedulers.base import JobState, JobStatus

PENDING = frozenset({"released", "waiting", "queued", "no-worker"})


def job_status(state: str | None, text: str, cancelled: bool) -> JobStatus:
    """One job's state from the scheduler's task state (``None``: unknown there)."""
    if state is None or state == "forgotten":
        if cancelled:
            return JobStatus(JobState.CANCELLED, reason="cancelled before it started")
        return JobStatus(JobState.LOST, reason="the Dask scheduler does not know this job")
    if state == "memory":
        return JobStatus(JobState.COMPLETED, 0, native_state=state)
    if state == "processing":
        return JobStatus(JobState.RUNNING, native_state=state)
    if state in PENDING:
        return JobStatus(JobState.PENDING, native_state=state)
    if state != "erred":
        return JobStatus(JobState.UNKNOWN, native_state=state)
    parsed = remote.parse_exit(text)
    if parsed is not None:
        code, by_cancel = parsed
        if by_cancel:
            return JobStatus(JobState.CANCELLED, code, reason="cancelled", native_state=state)
        if code == 0:
            return JobStatus(JobState.COMPLETED, 0, native_state="exited")
        return JobStatus(JobState.FAILED, code, reason=f"exit code {code}", native_state=state)
    if "KilledWorker" in text:
        return JobStatus(JobState.LOST, reason=f"its worker died: {text}", native_state=state)
    return JobStatus(JobState.FAILED, reason=text or "the task failed", native_state=state)


def most_generic(names: Sequence[str]) -> str | None:
    """The microarchitecture every worker can run: the one with the fewest ancestors."""
    import archspec.cpu

    known = [n for n in names if n in archspec.cpu.TARGETS]
    return min(known, key=lambda n: len(archspec.cpu.TARGETS[n].ancestors), default=None)
