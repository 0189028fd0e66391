"""What an attempt is, and what the broker does about one: pure decisions.

An attempt moves through explicit phases, each written to the database *before* the
step it names is taken, so a broker that dies at any point finds out on restart
what may have happened::

    placed ──► preparing ──► submitted ──► finished
      │            │             ▲
      └────────────┴── adopt ────┘   (a crash between placement and the job id)

* ``placed`` -- the target is chosen and the attempt row committed; the job may or
  may not have been submitted (the broker can die in the middle of ``sbatch``).
* ``preparing`` -- waiting for something before submission (a software build).
* ``submitted`` -- the backend's job id is recorded.
* ``finished`` -- the attempt ended; ``outcome`` says how.

The job name is a pure function of task id and attempt number
(:func:`job_name`), so "is this attempt's job alive?" can always be asked of the
backend by name.  :func:`decide_orphan` says what to do with an attempt found
``placed`` without a job id; :func:`decide` what the agent's status plus the
backend's state mean for a submitted attempt.  Both are pure and tested with a
table of cases.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.states import State
from schedulers.base import JobState, JobStatus

AGENT_FINAL = {
    "COMPLETE": State.COMPLETE,
    "EXECUTOR_ERROR": State.EXECUTOR_ERROR,
    "SYSTEM_ERROR": State.SYSTEM_ERROR,
}
RETRYABLE = frozenset({JobState.PREEMPTED, JobState.LOST})
# How long a finished job may go without a final status.json before we give up on it
# (object-store work directories can lag a little behind the job's end).
REPORT_GRACE_S = 3.0


class Phase(enum.StrEnum):
    PLACED = "placed"
    PREPARING = "preparing"
    SUBMITTED = "submitted"
    FINISHED = "finished"


def job_name(task_id: str, attempt: int) -> str:
    """The backend job name of an attempt: ``bridge-<task id>-<attempt>``."""
    return f"bridge-{task_id}-{attempt}"


# -- a placed attempt without a job id --------------------------------------------


class OrphanAction(enum.Enum):
    ADOPT = "adopt"  # the backend knows the job: record its id
    FOLLOW = "follow"  # an agent ran or runs it: follow its status, no job id
    WAIT = "wait"  # a submission may still be in flight: ask again later
    LOST = "lost"  # an agent started and stopped without a final report
    RESUBMIT = "resubmit"  # provably never started: submit again, same attempt


@dataclass(frozen=True)
class OrphanFacts:
    known_job_id: str | None  # the backend's answer to adopt([name])
    settled: bool  # placed long enough ago that no submission can still be in flight
    agent_state: str | None  # the attempt's status.json state, if any
    claim_live: bool  # an agent holds a fresh claim on the attempt
    claim_seen: bool  # a claim file exists (live or stale)


def decide_orphan(f: OrphanFacts) -> tuple[OrphanAction, str]:
    """What to do with an attempt recorded ``placed`` but with no job id."""
    if f.known_job_id is not None:
        return OrphanAction.ADOPT, f"adopted job {f.known_job_id}, which the backend knows"
    if f.agent_state in AGENT_FINAL or f.agent_state == "CANCELED":
        return OrphanAction.FOLLOW, f"its agent already reported {f.agent_state}"
    if f.claim_live:
        return OrphanAction.FOLLOW, "a live agent holds the attempt"
    if not f.settled:
        return OrphanAction.WAIT, "a submission may still be in flight"
    if f.claim_seen or f.agent_state is not None:
        return OrphanAction.LOST, "its agent started and stopped without a final report"
    return OrphanAction.RESUBMIT, "the backend does not know the job and no agent started it"


# -- a submitted attempt: the agent's word and the backend's ----------------------


class Verdict(enum.Enum):
    WAIT = "wait"
    STARTED = "started"  # INITIALIZING -> RUNNING
    FINISH = "finish"
    RETRY = "retry"


@dataclass(frozen=True)
class Facts:
    task_state: State
    agent_state: str | None  # from status.json
    agent_last_log: str  # the last system log line, for reasons
    executor_exit_codes: tuple[int | None, ...]
    job: JobStatus | None  # None: no job id, or the backend could not answer
    job_label: str  # e.g. "hpc job 1234", for reasons
    silent_for_s: float  # how long the job has been seen ended with no final status
    claim_live: bool  # another live agent holds this attempt
    attempt: int
    retries: int  # retries the task may still use in all (attempt <= retries: retry)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    state: State | None = None
    reason: str = ""
    outcome: str = ""


def decide(f: Facts) -> Decision:
    """The one table of reconcile: see ``tests/bridge/test_attempts.py`` for its cases."""
    final = AGENT_FINAL.get(f.agent_state or "")
    if final is not None:
        return Decision(Verdict.FINISH, final, _final_reason(final, f), final.value)
    if f.agent_state == "CANCELED":
        why = f.job.reason if f.job and f.job.reason else "the job was signalled to stop"
        return Decision(
            Verdict.FINISH,
            State.SYSTEM_ERROR,
            f"the job was stopped outside the broker: {why}",
            "STOPPED",
        )
    if f.job is None or not f.job.state.finished or f.claim_live:
        if f.agent_state == "RUNNING" and f.task_state == State.INITIALIZING:
            return Decision(Verdict.STARTED, State.RUNNING, "the first executor started")
        return Decision(Verdict.WAIT)
    if f.silent_for_s < REPORT_GRACE_S:
        return Decision(Verdict.WAIT)
    job = f.job
    detail = f"{f.job_label} ended {job.state.value}"
    if job.exit_code is not None:
        detail += f" (exit {job.exit_code})"
    if job.reason:
        detail += f": {job.reason}"
    detail += " before the agent reported"
    if job.state in RETRYABLE and f.attempt <= f.retries:
        return Decision(
            Verdict.RETRY,
            State.QUEUED,
            f"{detail}; retrying (attempt {f.attempt + 1})",
            job.state.value,
        )
    if job.state == JobState.CANCELLED:
        detail = f"the job was cancelled outside the broker: {detail}"
    outcome = job.state.value if job.state in RETRYABLE else "SYSTEM_ERROR"
    return Decision(Verdict.FINISH, State.SYSTEM_ERROR, detail, outcome)


def _final_reason(state: State, f: Facts) -> str:
    if state == State.COMPLETE:
        return "all executors finished and outputs were uploaded"
    if state == State.EXECUTOR_ERROR:
        return f"an executor exited non-zero (exit codes {list(f.executor_exit_codes)})"
    return f"system error: {f.agent_last_log or 'see system_logs'}"
