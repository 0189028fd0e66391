"""The interface every compute backend implements.

A backend runs *one command* (normally ``bridge-agent run <work-url>``) with some
resources, tells the state of many jobs in one call, cancels, and describes its
target.  That is all: staging, containers and the TES task model live in the agent
and the broker.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class JobState(enum.Enum):
    """A backend-neutral job state; each backend maps its native states here."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    LOST = "LOST"  # the backend no longer knows the job (purged, node died, ...)
    UNKNOWN = "UNKNOWN"

    @property
    def finished(self) -> bool:
        return self not in {JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN}


@dataclass(frozen=True)
class Resources:
    """What one job asks for.  ``None`` means "the target's default"."""

    cpus: int = 1
    memory_mb: int | None = None
    wall_time_s: int | None = None
    gpus: int = 0
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # e.g. a CPU feature such as "x86_64_v4"
    preemptible: bool = False


@dataclass(frozen=True)
class JobSpec:
    """One command to run on a target.

    ``argv`` is an argument vector, never a shell string.  ``stdout_path`` and
    ``stderr_path`` are paths on the target where the backend sends the command's
    output (a backend that cannot honour them captures the output itself).
    """

    name: str
    argv: Sequence[str]
    workdir: str
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)
    stdout_path: str | None = None
    stderr_path: str | None = None


@dataclass(frozen=True)
class JobStatus:
    """The state of one job as the backend sees it."""

    state: JobState
    exit_code: int | None = None
    reason: str = ""
    native_state: str = ""


@dataclass(frozen=True)
class TargetInfo:
    """What a target reports about itself (for routing and ``bridge targets``)."""

    name: str
    kind: str
    healthy: bool = True
    microarchitecture: str | None = None  # archspec name, e.g. "x86_64_v4"
    cpus: int | None = None
    memory_mb: int | None = None
    partitions: tuple[str, ...] = ()
    pending_jobs: int = 0
    queue_wait_s: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared once by its module (the broker never guesses).

    * ``native_arrays`` -- like jobs go out as one array job (``submit_array``);
    * ``submit_many`` -- several unlike jobs per round trip (``submit_many``);
    * ``gpus`` -- it can give a job GPUs;
    * ``object_store_workdir`` -- its nodes see the work directory only through object
      storage (an ``s3://`` ``work_url`` is required);
    * ``adopt_by_name`` -- ``adopt`` can find its jobs by the name the broker gave them.
    """

    native_arrays: bool = False
    submit_many: bool = False
    gpus: bool = False
    object_store_workdir: bool = False
    adopt_by_name: bool = True


@runtime_checkable
class Backend(Protocol):
    """A compute backend.  All methods are safe to call from one event loop."""

    name: str

    async def submit(self, spec: JobSpec) -> str:
        """Start one job; return the backend's job id."""
        ...

    async def submit_array(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        """Start jobs that share resources; return, per spec and in order, its job id
        or the error that refused it.

        Backends without native arrays submit one by one.
        """
        ...

    async def adopt(self, names: Sequence[str]) -> Mapping[str, str]:
        """Which of these job names (``JobSpec.name``) the backend knows, as job ids.

        A name missing from the answer is one the backend provably does not know
        (never submitted, or long forgotten); a backend that cannot tell raises
        :class:`~schedulers.errors.BackendUnavailable` rather than answer partly.
        """
        ...

    async def status(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        """States for many jobs in as few native calls as possible.

        A job id the backend does not know maps to ``JobState.LOST``.
        """
        ...

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs; unknown or finished ids are ignored."""
        ...

    async def probe(self) -> TargetInfo:
        """Describe the target: microarchitecture, capacity, queue wait."""
        ...

    async def close(self) -> None:
        """Release connections and processes."""
        ...
