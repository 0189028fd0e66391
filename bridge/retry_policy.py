"""Whether, when and where an attempt that ended badly is tried again.  Pure.

Only faults of the *place* are retried: an attempt ``PREEMPTED`` (spot capacity taken
back, a Slurm preemption) or ``LOST`` (the backend forgot the job: node died, purged).
Failures of the task itself are final.  A retry waits an exponential backoff and
steers away from where it failed: the target that preempted or lost it is avoided
while anything else fits, and after ``spot_preemptions`` preemptions the task stops
asking for spot capacity -- so it goes on-demand or back to HPC.

:func:`should_retry` is asked when an attempt ends; :func:`next_attempt` when the task
is placed again, from the stored history of its attempts (so a restarted broker
decides the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.routing_policy import RetryPolicy

RETRYABLE_OUTCOMES = frozenset({"PREEMPTED", "LOST"})


@dataclass(frozen=True)
class PastAttempt:
    """One finished attempt: where it ran, how it ended, when (seconds)."""

    number: int
    target: str
    outcome: str  # PREEMPTED, LOST, SYSTEM_ERROR, COMPLETE, ...
    end_time: float


@dataclass(frozen=True)
class Retry:
    retry: bool
    reason: str


@dataclass(frozen=True)
class NextAttempt:
    """How to place the next attempt: not before ``not_before``, off ``avoid``."""

    not_before: float = 0.0
    avoid: frozenset[str] = frozenset()
    preemptible_ok: bool = True
    note: str = ""


def should_retry(outcome: str, number: int, limit: int) -> Retry:
    """Attempt ``number`` (1-based) ended with ``outcome``; may the task go again?"""
    if outcome not in RETRYABLE_OUTCOMES:
        return Retry(False, f"{outcome} is not retried")
    if number > limit:
        return Retry(False, f"{outcome}; no retries left ({limit} allowed)")
    return Retry(True, f"{outcome}; retrying (attempt {number + 1} of {limit + 1})")


def backoff_s(retry_number: int, policy: RetryPolicy) -> float:
    """Delay before retry ``retry_number`` (1 for the first retry)."""
    delay = policy.backoff_s * policy.backoff_factor ** max(0, retry_number - 1)
    return float(min(delay, policy.max_backoff_s))


def next_attempt(past: Sequence[PastAttempt], policy: RetryPolicy) -> NextAttempt:
    """Placement advice for the attempt after ``past`` (oldest first)."""
    bad = [a for a in past if a.outcome in RETRYABLE_OUTCOMES or a.outcome == "SYSTEM_ERROR"]
    if not past or not bad:
        return NextAttempt()
    last = past[-1]
    retries = sum(1 for a in past if a.outcome in RETRYABLE_OUTCOMES)
    not_before = last.end_time + backoff_s(max(retries, 1), policy)
    avoid = frozenset(a.target for a in bad)
    preemptions = sum(1 for a in past if a.outcome == "PREEMPTED")
    spot_ok = policy.spot_preemptions == 0 or preemptions < policy.spot_preemptions
    words = [f"after {last.outcome} on {last.target}"]
    if not spot_ok:
        words.append(f"on-demand after {preemptions} preemption" + "s" * (preemptions != 1))
    return NextAttempt(not_before, avoid, spot_ok, ", ".join(words))
