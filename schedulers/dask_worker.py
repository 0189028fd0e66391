"""Code the Dask backend sends to the cluster: the job runner (on workers) and the
small read/prune functions run on the scheduler.

Both the workers and the scheduler import this module by name, so the package must be
installed where they run (as it must be for the agent anyway).

**The runner.**  A job is ``argv`` in a subprocess started in its own session, watched
by the worker thread that runs the Dask task.  It ends the job's whole process tree when

* the broker cancels it (:func:`cancel_jobs`, sent to every worker: SIGTERM so the agent
  reports ``CANCELED``, then SIGKILL after the grace period), or
* the worker is leaving (its scheduler is gone, it is being closed): SIGKILL at once,
  so that nothing keeps running after the broker has been told the job is lost and
  may run it again elsewhere.

If the worker process itself is killed, the kernel kills the job's first process
(``PR_SET_PDEATHSIG``); processes it started in sessions of their own may survive that.

**Outcomes** travel as the task's state on the scheduler, so the state of many jobs is
one scheduler call: every job ends by raising :class:`JobExit` (exit 0 included), whose
text carries the exit code and whether the job was cancelled (:func:`parse_exit`).  An
erred task lives on the scheduler only: had the job returned a value, that value would
sit on its worker, and a worker leaving would make Dask run the job again to recompute
it.  The worker's "Compute Failed" log lines for these outcomes are filtered out.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_EXIT = re.compile(r"bridge-job-exit (-?\d+) (cancelled|exited)")
_LEAVING = {"closing", "closed", "failed"}
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class JobExit(Exception):
    """How the job's command ended (raised for every outcome, success included)."""

    def __init__(self, exit_code: int, cancelled: bool) -> None:
        super().__init__(f"bridge-job-exit {exit_code} {'cancelled' if cancelled else 'exited'}")


def parse_exit(text: str) -> tuple[int, bool] | None:
    """``(exit code, cancelled)`` from a :class:`JobExit` text, else ``None``."""
    match = _EXIT.search(text or "")
    return (int(match[1]), match[2] == "cancelled") if match else None


@dataclass
class _Job:
    proc: subprocess.Popen[bytes]
    term_sent_at: float | None = None


_jobs: dict[str, _Job] = {}
_refused: dict[str, None] = {}  # cancelled before they started here (oldest first)
_jobs_lock = threading.Lock()
_REFUSED_KEPT = 10_000


class _QuietOutcomes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "bridge-job-exit" not in record.getMessage()


_quiet = _QuietOutcomes()


def _die_with_parent() -> None:  # pragma: no cover -- runs in the forked child
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from ``/proc``), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, signum: int) -> None:
    """Signal the job's process group and every descendant (executors run in sessions
    of their own, so the group alone would miss them)."""
    targets = [pid, *descendants(pid)] if signum == signal.SIGKILL else [pid]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signum)


def _worker_leaving() -> bool:
    try:
        from distributed import get_worker

        status = get_worker().status
    except ValueError:  # not on a worker (called directly)
        return False
    return getattr(status, "name", str(status)) in _LEAVING


def _open(path: str | None, stack: contextlib.ExitStack) -> int:
    if path is None:
        return subprocess.DEVNULL
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return stack.enter_context(open(path, "ab")).fileno()


def run_job(
    key: str,
    argv: Sequence[str],
    workdir: str,
    env: Mapping[str, str],
    stdout_path: str | None,
    stderr_path: str | None,
    kill_grace_s: float,
) -> None:
    """Run one job to its end on this worker; always raises :class:`JobExit`."""
    worker_log = logging.getLogger("distributed.worker")
    if _quiet not in worker_log.filters:
        worker_log.addFilter(_quiet)
    with _jobs_lock:
        if key in _refused:
            raise JobExit(128 + signal.SIGTERM, cancelled=True)
    with contextlib.ExitStack() as stack:
        out = _open(stdout_path, stack)
        err = subprocess.STDOUT if stderr_path == stdout_path else _open(stderr_path, stack)
        proc = subprocess.Popen(  # the preexec hook only calls prctl
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=workdir,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    job = _Job(proc)
    with _jobs_lock:
        _jobs[key] = job
    try:
        while True:
            try:
                returncode = proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            with _jobs_lock:  # cancelled between the check above and its registration
                if key in _refused and job.term_sent_at is None:
                    job.term_sent_at = time.monotonic()
                    kill_tree(proc.pid, signal.SIGTERM)
            overdue = job.term_sent_at is not None and (
                time.monotonic() - job.term_sent_at > kill_grace_s
            )
            if overdue or _worker_leaving():
                kill_tree(proc.pid, signal.SIGKILL)
    finally:
        with _jobs_lock:
            _jobs.pop(key, None)
        if job.term_sent_at is not None:  # the agent's executors must not outlive it
            kill_tree(proc.pid, signal.SIGKILL)
    cancelled = job.term_sent_at is not None
    raise JobExit(128 - returncode if returncode < 0 else returncode, cancelled)


def cancel_jobs(keys: Sequence[str]) -> list[str]:
    """SIGTERM the jobs with these keys running in this worker process (the runner
    escalates) and refuse them should they start here later; returns the keys found
    running.  Runs on the worker's event loop: it must not block."""
    found = []
    with _jobs_lock:
        for key in keys:
            _refused[key] = None
            while len(_refused) > _REFUSED_KEPT:
                del _refused[next(iter(_refused))]
            job = _jobs.get(key)
            if job is not None and job.term_sent_at is None:
                job.term_sent_at = time.monotonic()
                kill_tree(job.proc.pid, signal.SIGTERM)
                found.append(key)
    return found


def host_microarchitecture() -> str:
    """This worker's CPU as an archspec name (run once per worker)."""
    import archspec.cpu

    return str(archspec.cpu.host().name)


# -- on the scheduler (``run_on_scheduler`` passes ``dask_scheduler`` by keyword) ----


def job_states(keys: Sequence[str], dask_scheduler: Any) -> dict[str, tuple[str, str]]:
    """``{key: (task state, exception text)}`` for the keys the scheduler knows."""
    out = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            continue
        text = ""
        if ts.state == "erred":
            blame = ts.exception_blame or ts
            text = str(getattr(blame, "exception_text", "") or "")
            if not text and ts.suspicious:  # the scheduler sets no text for this one
                text = f"KilledWorker: {ts.suspicious} worker(s) died while running it"
        out[key] = (str(ts.state), text)
    return out


def known_names(names: Sequence[str], dask_scheduler: Any) -> list[str]:
    """Which of these job names the scheduler holds (published by the backend)."""
    datasets = dask_scheduler.extensions["publish"].datasets
    return [n for n in names if n in datasets and n in dask_scheduler.tasks]


def unpublish(names: Sequence[str], dask_scheduler: Any) -> None:
    """Stop holding these jobs (publish_delete without a client round trip per name)."""
    ext = dask_scheduler.extensions["publish"]
    for name in names:
        out = ext.datasets.pop(name, None)
        if out is not None:
            dask_scheduler.client_releases_keys(out["keys"], f"published-{name}")


def forget_finished(prefix: str, keep: int, dask_scheduler: Any) -> int:
    """Unpublish the oldest finished jobs beyond the newest ``keep`` (bounded memory)."""
    ext = dask_scheduler.extensions["publish"]
    finished = [
        name
        for name in ext.datasets
        if isinstance(name, str)
        and name.startswith(prefix)
        and getattr(dask_scheduler.tasks.get(name), "state", "forgotten") in ("memory", "erred")
    ]
    drop = finished[: max(0, len(finished) - keep)]
    unpublish(drop, dask_scheduler)
    return len(drop)


def summary(prefix: str, dask_scheduler: Any) -> dict[str, Any]:
    """Workers and queue of the scheduler, for ``probe``."""
    states: dict[str, int] = {}
    for ts in dask_scheduler.tasks.values():
        states[ts.state] = states.get(ts.state, 0) + 1
    means = [
        float(tp.duration_average)
        for name, tp in dask_scheduler.task_prefixes.items()
        if str(name).startswith(prefix) and tp.duration_average >= 0
    ]
    return {
        "workers": {
            addr: {
                "nthreads": ws.nthreads,
                "memory_limit": ws.memory_limit,
                "resources": dict(ws.resources),
                "executing": len(ws.executing),
            }
            for addr, ws in dask_scheduler.workers.items()
        },
        # a task sent to a worker waits there until it has the resources it asks for
        "waiting": sum(states.get(s, 0) for s in ("released", "waiting", "queued", "no-worker"))
        + sum(
            max(0, len(ws.processing) - len(ws.executing))  # executing lags a heartbeat
            for ws in dask_scheduler.workers.values()
        ),
        "processing": sum(len(ws.executing) for ws in dask_scheduler.workers.values()),
        "mean_duration_s": sum(means) / len(means) if means else -1.0,
    }
