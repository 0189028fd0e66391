"""Pure functions for the AWS Batch backend: job descriptions -> job states, the array
element script, queue figures -> a wait estimate, instance types -> microarchitecture.

Nothing here talks to AWS, so each rule is tested on recorded ``describe_jobs`` answers
(``tests/schedulers/data/aws_batch/``).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import archspec.cpu

from schedulers.base import JobState, JobStatus

# The reason the backend gives when it terminates a job, so that its cancellations are
# told apart from anybody else's.
CANCEL_REASON = "bridge: cancelled by the broker"

_WAITING = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"}
# Batch's words for "the machine went away under the job" (spot reclaim, scale-in,
# host failure): the job did nothing wrong and can run again elsewhere.
_PREEMPTED = (
    re.compile(r"host ec2 \(instance [^)]*\) terminated", re.IGNORECASE),
    re.compile(r"spot instance", re.IGNORECASE),
    re.compile(r"instance (was )?(reclaimed|interrupted)", re.IGNORECASE),
)
_CANNOT_START = (
    "CannotPullContainerError",
    "CannotStartContainerError",
    "CannotCreateContainerError",
    "CannotInspectContainerError",
)
_TIMEOUT = re.compile(r"attempt duration exceeded timeout", re.IGNORECASE)
_CANCELLED = re.compile(r"^(terminated|cancel+ed) by", re.IGNORECASE)

# The command of every array element: pick this element's line, rebuild its quoted
# command line and run it.  The element number is AWS_BATCH_JOB_ARRAY_INDEX; where an
# endpoint does not set it, the ``:N`` suffix of the child's job id says the same.
ELEMENT_SCRIPT = (
    'i="${AWS_BATCH_JOB_ARRAY_INDEX:-${AWS_BATCH_JOB_ID##*:}}"\n'
    'line="$(printf \'%s\\n\' "$BRIDGE_ARRAY_LINES" | sed -n "$((i + 1))p")"\n'
    '[ -n "$line" ] || { echo "bridge: no command for array element $i" >&2; exit 2; }\n'
    'eval "set -- $BRIDGE_ARRAY_PREFIX$line$BRIDGE_ARRAY_SUFFIX"\n'
    'exec "$@"\n'
)


def job_status(job: Mapping[str, Any], image: str | None = None) -> JobStatus:
    """One ``describe_jobs`` entry as a :class:`JobStatus` (``image``: the job's image,
    named when the container could not start)."""
    native = str(job.get("status", ""))
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last = attempts[-1] if attempts else {}
    exit_code = container.get("exitCode", (last.get("container") or {}).get("exitCode"))
    reasons = [
        str(r)
        for r in (
            job.get("statusReason"),
            container.get("reason"),
            last.get("statusReason"),
            (last.get("container") or {}).get("reason"),
        )
        if r
    ]
    reason = "; ".join(dict.fromkeys(reasons))
    if native in _WAITING:
        return JobStatus(JobState.PENDING, reason=reason, native_state=native)
    if native == "RUNNING":
        return JobStatus(JobState.RUNNING, reason=reason, native_state=native)
    if native == "SUCCEEDED":
        return JobStatus(
            JobState.COMPLETED, exit_code=0 if exit_code is None else exit_code, native_state=native
        )
    if native != "FAILED":
        return JobStatus(JobState.UNKNOWN, reason=reason, native_state=native)
    return _failed(reason, exit_code, image, native)


def _failed(reason: str, exit_code: int | None, image: str | None, native: str) -> JobStatus:
    if any(p.search(reason) for p in _PREEMPTED):
        return JobStatus(JobState.PREEMPTED, exit_code, f"preempted: {reason}", native)
    if any(word in reason for word in _CANNOT_START):
        what = f"image {image!r}" if image else "the job's image"
        return JobStatus(
            JobState.FAILED,
            exit_code,
            f"the container for {what} could not start: {reason}",
            native,
        )
    if _TIMEOUT.search(reason):
        return JobStatus(JobState.TIMEOUT, exit_code, reason, native)
    if reason == CANCEL_REASON or _CANCELLED.search(reason):
        return JobStatus(JobState.CANCELLED, exit_code, reason, native)
    if exit_code is None and not reason:
        reason = f"the job failed without a reason or exit code (image {image!r})"
    return JobStatus(JobState.FAILED, exit_code, reason, native)


@dataclass(frozen=True)
class ArrayEnvironment:
    """The environment that lets :data:`ELEMENT_SCRIPT` find each element's command."""

    prefix: str
    suffix: str
    lines: tuple[str, ...]
    names: tuple[str, ...]

    def as_env(self) -> dict[str, str]:
        return {
            "BRIDGE_ARRAY_PREFIX": self.prefix,
            "BRIDGE_ARRAY_SUFFIX": self.suffix,
            "BRIDGE_ARRAY_LINES": "\n".join(self.lines),
            "BRIDGE_ARRAY_NAMES": "\n".join(self.names),
        }

    @property
    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self.as_env().items())


def array_environment(argvs: Sequence[Sequence[str]], names: Sequence[str]) -> ArrayEnvironment:
    """Quoted command lines with their common prefix and suffix taken out once.

    Raises ``ValueError`` for an argv whose quoted form spans lines (it cannot be one
    line of the list; such a job goes out on its own).
    """
    lines = [shlex.join(argv) for argv in argvs]
    if any("\n" in line for line in [*lines, *names]):
        raise ValueError("an argument or name holds a newline")
    prefix = _common_prefix(lines)
    rest = [line[len(prefix) :] for line in lines]
    suffix = _common_prefix([r[::-1] for r in rest])[::-1]
    middles = tuple(r[: len(r) - len(suffix)] if suffix else r for r in rest)
    if any(not m for m in middles):  # an empty line would read as "no command"
        prefix, suffix, middles = "", "", tuple(lines)
    return ArrayEnvironment(prefix, suffix, middles, tuple(names))


def _common_prefix(items: Sequence[str]) -> str:
    if not items:
        return ""
    low, high = min(items), max(items)
    n = 0
    while n < min(len(low), len(high)) and low[n] == high[n]:
        n += 1
    return low[:n]


def element_names(environment: Iterable[Mapping[str, str]]) -> list[str]:
    """The element job names an array job carries (``BRIDGE_ARRAY_NAMES``)."""
    for entry in environment:
        if entry.get("name") == "BRIDGE_ARRAY_NAMES":
            return str(entry.get("value", "")).split("\n")
    return []


def microarchitecture(instance_types: Iterable[str], table: Mapping[str, str]) -> str | None:
    """The most specific archspec target every instance type of a compute environment
    satisfies (``c6i.large`` -> family ``c6i``), or ``None`` when one is unknown."""
    names = []
    for itype in instance_types:
        family = itype.split(".", 1)[0]
        if family not in table:
            return None
        names.append(table[family])
    if not names:
        return None
    targets = [archspec.cpu.TARGETS[n] for n in dict.fromkeys(names) if n in archspec.cpu.TARGETS]
    if len(targets) != len(set(names)):
        return None
    common = set.intersection(*({t, *t.ancestors} for t in targets))
    if not common:
        return None
    return max(common, key=lambda t: len(t.ancestors)).name


def estimate_wait(
    runnable: int,
    running: int,
    max_vcpus: int,
    vcpus_per_job: float,
    typical_job_s: float,
    startup_s: float,
) -> float:
    """Seconds a new job would wait: none beyond start-up while the compute environment
    has room, else one typical job length for every full wave of work ahead of it."""
    if max_vcpus <= 0:
        return math.inf
    per_job = max(vcpus_per_job, 1.0)
    free = max_vcpus - running * per_job
    ahead = runnable * per_job
    if ahead + per_job <= free:
        return startup_s
    waves = math.ceil((ahead + per_job - max(free, 0.0)) / max_vcpus)
    return startup_s + waves * typical_job_s
