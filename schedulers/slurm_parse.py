"""Pure functions for the Slurm backend: Slurm's text in, typed values out.

Nothing here runs a command, so everything is tested on output recorded from a real
cluster (``tests/schedulers/data/``).  The formats are the ones the backend asks for:

=====================================================  =================================
command                                                parser
=====================================================  =================================
``sbatch --parsable``                                  :func:`parse_sbatch_id`
``squeue --array --states=all -h -o '%i|%A|%T|%r'``    :func:`parse_squeue`
``sacct -X -n -P -o JobID,State,ExitCode,Reason``      :func:`parse_sacct`
``sacct --completion -n -P -o JobID,State,ExitCode``   :func:`parse_sacct` (raw ids)
``scontrol -o show job``                               :func:`parse_scontrol_jobs`
``scontrol show config``                               :func:`parse_config`
``sinfo -h -N -o '%N|%P|%c|%m|%f|%t'``                 :func:`parse_sinfo_nodes`
``squeue --array -t PD -h -o '%i|%S'``                 :func:`parse_pending`
``cat /proc/cpuinfo`` on a compute node                :func:`microarchitecture_from_cpuinfo`
=====================================================  =================================
"""

from __future__ import annotations

import logging
import re
import statistics
from dataclasses import dataclass
from datetime import datetime

from schedulers.base import JobState, JobStatus

log = logging.getLogger(__name__)

#: Every job state Slurm prints, and what it means for us.  The names are the long
#: forms listed under "JOB STATE CODES" in squeue(1)
#: (https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES) and sacct(1)
#: (https://slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES); sacct's set is a
#: subset of squeue's.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,  # awaiting resource allocation
    "CONFIGURING": JobState.PENDING,  # allocated, nodes still booting
    "REQUEUED": JobState.PENDING,  # being requeued
    "REQUEUE_HOLD": JobState.PENDING,  # requeued and held
    "REQUEUE_FED": JobState.PENDING,  # requeued by a federation
    "RESV_DEL_HOLD": JobState.PENDING,  # held after its reservation was deleted
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # ended; processes still being cleaned up
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,  # being signalled
    "STAGE_OUT": JobState.RUNNING,  # staging out burst-buffer data
    "SUSPENDED": JobState.RUNNING,  # keeps its allocation, execution paused
    "STOPPED": JobState.RUNNING,  # SIGSTOPped, keeps its allocation
    "COMPLETED": JobState.COMPLETED,  # all processes exited 0
    "FAILED": JobState.FAILED,  # non-zero exit code or other failure
    "OUT_OF_MEMORY": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,  # requeued held after a site-defined exit value
    "CANCELLED": JobState.CANCELLED,  # scancel by the user or an administrator
    "REVOKED": JobState.CANCELLED,  # a federation sibling started the job elsewhere
    "TIMEOUT": JobState.TIMEOUT,  # reached its time limit
    "DEADLINE": JobState.TIMEOUT,  # reached its --deadline
    "PREEMPTED": JobState.PREEMPTED,
    "NODE_FAIL": JobState.LOST,  # a node of the allocation failed
    "BOOT_FAIL": JobState.LOST,  # its nodes failed to boot
}

_warned: set[str] = set()


def map_state(native: str) -> JobState:
    """Translate a native state (``CANCELLED by 0`` counts as ``CANCELLED``).

    An unknown state is :attr:`JobState.UNKNOWN` and a warning (once per name).
    """
    word = native.split(" ", 1)[0].rstrip("+").upper()
    state = SLURM_STATES.get(word)
    if state is None:
        if word not in _warned:
            _warned.add(word)
            log.warning("unknown Slurm job state %r; reporting UNKNOWN", native)
        return JobState.UNKNOWN
    return state


@dataclass(frozen=True)
class SlurmJob:
    """One job (or array element) as a Slurm command reported it."""

    job_id: str  # as the backend hands it out: "1234" or "1234_7"
    native_state: str
    reason: str = ""
    raw_id: str = ""  # the numeric job record id ("1240" for "1234_7" once started)
    exit_code: int | None = None
    signal: int | None = None

    def to_status(self) -> JobStatus:
        state = map_state(self.native_state)
        exit_code = self.exit_code
        if exit_code is None and state is JobState.COMPLETED:
            exit_code = 0
        parts = [self.native_state]
        if self.reason and self.reason not in ("None", "(null)"):
            parts.append(self.reason)
        if self.signal:
            parts.append(f"signal {self.signal}")
        if exit_code:
            parts.append(f"exit code {exit_code}")
        return JobStatus(
            state=state,
            exit_code=exit_code,
            reason=", ".join(parts),
            native_state=self.native_state,
        )


def parse_sbatch_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = text.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout!r}")
    return job_id


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """``squeue --array --states=all -h -o '%i|%A|%T|%r'``: one line per job or element."""
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        fields = line.strip().split("|", 3)
        if len(fields) != 4 or "[" in fields[0]:
            continue
        job_id, raw_id, state, reason = (f.strip() for f in fields)
        jobs[job_id] = SlurmJob(job_id, state, reason=reason, raw_id=raw_id)
    return jobs


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """Slurm's ``exit:signal`` pair, e.g. ``2:0`` or ``0:15``."""
    code, _, sig = text.strip().partition(":")
    try:
        return int(code), (int(sig) if sig else None)
    except ValueError:
        return None, None


def parse_sacct(text: str) -> dict[str, SlurmJob]:
    """``sacct -X -n -P -o JobID,State,ExitCode[,Reason]``.

    With ``--completion`` (no slurmdbd, data from the jobcomp file) the JobID column
    holds the raw job record id, also for array elements.
    """
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or not fields[0] or "." in fields[0]:
            continue  # blank, or a job step ("1234.batch")
        code, sig = parse_exit_code(fields[2])
        reason = fields[3].strip() if len(fields) > 3 else ""
        state = fields[1].strip()
        if " by " in state:  # "CANCELLED by 1000": who cancelled it
            reason = ", ".join(p for p in (f"by uid {state.split(' by ', 1)[1]}", reason) if p)
            state = state.split(" by ", 1)[0]
        jobs[fields[0]] = SlurmJob(fields[0], state, reason, fields[0], code, sig or None)
    return jobs


_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_key_values(line: str) -> dict[str, str]:
    """``Key=value Key2=value with spaces`` (scontrol's one-line records, jobcomp)."""
    matches = list(_KEY.finditer(line))
    values: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        values[match.group(1)] = line[match.end() : end].strip()
    return values


def parse_scontrol_jobs(text: str) -> dict[str, SlurmJob]:
    """``scontrol -o show job``: one record per line; array elements by ``A_T`` id."""
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        kv = parse_key_values(line)
        if "JobId" not in kv or "JobState" not in kv:
            continue
        task = kv.get("ArrayTaskId", "")
        job_id = f"{kv['ArrayJobId']}_{task}" if task.isdigit() else kv["JobId"]
        code, sig = parse_exit_code(kv.get("ExitCode", ""))
        jobs[job_id] = SlurmJob(
            job_id, kv["JobState"], kv.get("Reason", ""), kv["JobId"], code, sig or None
        )
    return jobs


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``: ``Key = value`` lines."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def parse_version(text: str) -> tuple[int, int, int]:
    """``scontrol --version`` (``slurm 22.05.8``) or a pyslurm version (``25.11.0``)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"no version in {text!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclass(frozen=True)
class ClusterShape:
    """What ``sinfo`` says about the nodes (each node counted once)."""

    partitions: tuple[str, ...]
    default_partition: str | None
    cpus: int
    memory_mb: int  # the largest node
    usable_nodes: int
    features: frozenset[str]


def parse_sinfo_nodes(text: str) -> ClusterShape:
    """``sinfo -h -N -o '%N|%P|%c|%m|%f|%t'``: one line per node and partition."""
    partitions: list[str] = []
    default = None
    nodes: dict[str, tuple[int, int, str]] = {}
    features: set[str] = set()
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 6:
            continue
        node, part, cpus, mem, feats, state = fields
        if part.endswith("*"):
            part = part[:-1]
            default = part
        if part not in partitions:
            partitions.append(part)
        nodes[node] = (int(cpus or 0), int(mem or 0), state)
        features.update(f for f in feats.split(",") if f and f != "(null)")
    bad = ("down", "drain", "fail", "maint", "unk", "no_resp", "powered")
    usable = [n for n in nodes.values() if not any(n[2].startswith(b) for b in bad)]
    return ClusterShape(
        partitions=tuple(partitions),
        default_partition=default,
        cpus=sum(n[0] for n in nodes.values()),
        memory_mb=max((n[1] for n in nodes.values()), default=0),
        usable_nodes=len(usable),
        features=frozenset(features),
    )


def parse_pending(text: str, now: datetime) -> tuple[int, float]:
    """``squeue --array -t PD -h -o '%i|%S'``: the pending count and a wait estimate.

    The estimate is the median of the expected start times Slurm's backfill scheduler
    computed for pending jobs (``N/A`` when it has none yet), in seconds from ``now``.
    """
    count = 0
    waits: list[float] = []
    for line in text.splitlines():
        _, sep, start = line.strip().partition("|")
        if not sep:
            continue
        count += 1
        try:
            when = datetime.fromisoformat(start.strip())
        except ValueError:
            continue  # N/A
        waits.append(max(0.0, (when - now).total_seconds()))
    return count, statistics.median(waits) if waits else 0.0


def microarchitecture_from_cpuinfo(cpuinfo: str, machine: str) -> str:
    """The archspec name for a node, from its ``/proc/cpuinfo`` and ``uname -m``.

    This is archspec's own detection (``archspec.cpu.host``) fed with another
    machine's data: the most specific target whose vendor and features the node has,
    preferring descendants of the best generic level.  Families archspec cannot judge
    from ``/proc/cpuinfo`` alone fall back to the generic family name.
    """
    from archspec.cpu import TARGETS
    from archspec.cpu.detect import COMPATIBILITY_CHECKS, partial_uarch
    from archspec.cpu.schema import TARGETS_JSON

    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if first:
                break
            continue
        first[key.strip()] = value.strip()
    if machine == "x86_64":
        info = partial_uarch(
            vendor=first.get("vendor_id", "generic"), features=set(first.get("flags", "").split())
        )
    elif machine == "aarch64":
        code = first.get("CPU implementer", "")
        vendors = TARGETS_JSON["conversions"]["arm_vendors"]
        info = partial_uarch(
            vendor=vendors.get(code, code) if code else "generic",
            features=set(first.get("Features", "").split()),
            cpu_part=first.get("CPU part", ""),
        )
    else:
        return machine if machine in TARGETS else "unknown"
    check = COMPATIBILITY_CHECKS[machine]
    candidates = [t for t in TARGETS.values() if check(info, t)]
    if not candidates:
        return machine

    def depth(target: object) -> tuple[int, int]:
        return len(target.ancestors), len(target.features)  # type: ignore[attr-defined]

    best_generic = max((c for c in candidates if c.vendor == "generic"), key=depth)
    if info.cpu_part and any(c.cpu_part == info.cpu_part for c in candidates):
        candidates = [c for c in candidates if c.cpu_part == info.cpu_part]
    specific = [c for c in candidates if c > best_generic]
    return str(max(specific, key=depth).name if specific else best_generic.name)


def parse_submit_many(stdout: str, count: int) -> list[str | ValueError]:
    """Answers of ``SUBMIT_MANY``: a job id, or the reason sbatch gave, per script.

    A script with no answer line (the shell died part-way) gets an error too.
    """
    answers: list[str | ValueError] = []
    for line in stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status == "ok":
            try:
                answers.append(parse_sbatch_id(rest))
            except ValueError as err:
                answers.append(err)
        elif status == "err":
            answers.append(ValueError(rest.strip() or "sbatch failed"))
    missing = count - len(answers)
    return answers[:count] + [ValueError("sbatch gave no answer") for _ in range(max(0, missing))]


_CASE = re.compile(r"^\s*(\d+)\)\s*$")
_NAME_EXPORT = re.compile(r"^\s*export BRIDGE_JOB_NAME=(\S+)\s*$")


def parse_element_names(script: str) -> dict[int, str]:
    """Array index -> the element's job name, from a batch script we rendered (as
    ``scontrol write batch_script`` returns it)."""
    names: dict[int, str] = {}
    index: int | None = None
    for line in script.splitlines():
        if case := _CASE.match(line):
            index = int(case.group(1))
        elif index is not None and (export := _NAME_EXPORT.match(line)):
            value = export.group(1)
            names[index] = value[1:-1] if value.startswith("'") else value
            index = None
    return names


@dataclass(frozen=True)
class QueuedName:
    """One line of ``squeue --array -o '%i|%F|%K|%j'``."""

    job_id: str  # "1234" or "1230_4"
    array_job_id: str
    array_index: int | None
    name: str


def parse_squeue_names(text: str) -> list[QueuedName]:
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4:
            continue
        job_id, array_id, index, name = parts
        element = int(index) if index.isdigit() and "_" in job_id else None
        out.append(QueuedName(job_id, array_id, element, name))
    return out
