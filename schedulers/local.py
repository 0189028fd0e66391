"""The local backend: jobs are processes on this machine.

Each job is ``spec.argv`` started in its own session (``setsid``), so it is not killed
with the broker and its whole process group can be signalled.  Its id is
``"<pid>:<start time>"``, the start time being field 22 of ``/proc/<pid>/stat`` (clock
ticks since boot).  The pair is unique for the life of the machine, which is what
lets a restarted broker ask about jobs it did not start:

* a living process with that pid *and* start time → ``RUNNING``;
* a process this backend started and has reaped → ``COMPLETED`` / ``FAILED`` with its
  exit code (``CANCELLED`` if this backend cancelled it);
* anything else (gone, pid reused, a zombie some other parent must reap) → ``LOST``;
  the broker then reads the attempt's ``status.json``, which the agent wrote.

``max_parallel`` limits jobs running at once; beyond it :meth:`submit` raises
:class:`BackendUnavailable` so the broker keeps the task queued and tries later
(a backend-side queue would not survive a broker restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from schedulers.base import Capabilities, JobSpec, JobState, JobStatus, TargetInfo
from schedulers.errors import NotSubmitted, SubmitError
from schedulers.local_settings import LocalSettings

KILL_GRACE_S = 10.0
JOB_NAME_ENV = "BRIDGE_JOB_NAME"
CAPABILITIES = Capabilities(adopt_by_name=True)


def proc_start_time(pid: int) -> tuple[str, str] | None:
    """``(start time, state letter)`` of a process from ``/proc``, or ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces and ')'
    return fields[19], fields[0]  # stat fields 22 (starttime) and 3 (state)


def parse_job_id(job_id: str) -> tuple[int, str] | None:
    pid, sep, start = job_id.partition(":")
    if not sep or not pid.isdigit() or not start.isdigit():
        return None
    return int(pid), start


def scan_for_names(names: set[str]) -> dict[str, str]:
    """Job ids of living session leaders whose environment names one of ``names``."""
    needles = {f"{JOB_NAME_ENV}={n}".encode(): n for n in names}
    found: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) != pid:
                continue
            environ = (entry / "environ").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        for var in environ.split(b"\0"):
            name = needles.get(var)
            if name is not None:
                info = proc_start_time(pid)
                if info and info[1] not in ("Z", "X"):
                    found[name] = f"{pid}:{info[0]}"
                break
    return found


def _exit_status(returncode: int, cancelled: bool) -> JobStatus:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        state = JobState.CANCELLED if cancelled else JobState.FAILED
        return JobStatus(state, 128 - returncode, reason=f"killed by {name}", native_state=name)
    if returncode == 0:
        return JobStatus(JobState.COMPLETED, 0, native_state="exited")
    state = JobState.CANCELLED if cancelled else JobState.FAILED
    return JobStatus(state, returncode, reason=f"exit code {returncode}", native_state="exited")


class LocalBackend:
    """Runs jobs as processes on this machine; see the module docstring."""

    def __init__(self, name: str = "local", max_parallel: int | None = None) -> None:
        self.name = name
        self.max_parallel = max_parallel
        self.kill_grace_s = KILL_GRACE_S
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._running: set[str] = set()  # ids seen alive: ours and adopted ones
        self._cancelled: set[str] = set()
        self._names: dict[str, str] = {}  # job name -> id, for the jobs started here

    def _start(self, spec: JobSpec) -> str:
        self._refresh()
        if self.max_parallel is not None and len(self._running) >= self.max_parallel:
            raise NotSubmitted(
                f"{self.name}: {len(self._running)} of {self.max_parallel} slots busy"
            )
        with contextlib.ExitStack() as stack:
            files: list[int] = []
            for path in (spec.stdout_path, spec.stderr_path):
                if path is None:
                    files.append(subprocess.DEVNULL)
                elif files and path == spec.stdout_path:
                    files.append(subprocess.STDOUT)  # one file for both streams
                else:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    files.append(stack.enter_context(open(path, "ab")).fileno())
            try:
                proc = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=files[0],
                    stderr=files[1],
                    cwd=spec.workdir,
                    env={**os.environ, **spec.env, JOB_NAME_ENV: spec.name},
                    start_new_session=True,
                )
            except OSError as err:
                raise SubmitError(f"{self.name}: cannot start {spec.argv[0]!r}: {err}") from err
        info = proc_start_time(proc.pid)
        job_id = f"{proc.pid}:{info[0] if info else 0}"
        self._children[job_id] = proc
        self._names[spec.name] = job_id
        self._running.add(job_id)
        return job_id

    def _refresh(self) -> None:
        for job_id in list(self._running):
            if self._status(job_id).state is not JobState.RUNNING:
                self._running.discard(job_id)

    def _status(self, job_id: str) -> JobStatus:
        proc = self._children.get(job_id)
        if proc is not None:
            returncode = proc.poll()
            if returncode is None:
                return JobStatus(JobState.RUNNING, native_state="running")
            return _exit_status(returncode, job_id in self._cancelled)
        parsed = parse_job_id(job_id)
        info = proc_start_time(parsed[0]) if parsed else None
        if parsed and info and info[0] == parsed[1] and info[1] not in ("Z", "X"):
            self._running.add(job_id)
            return JobStatus(JobState.RUNNING, native_state=f"running ({info[1]})")
        return JobStatus(JobState.LOST, reason="process not found (exit status unknown)")

    def _alive(self, job_id: str) -> bool:
        return self._status(job_id).state is JobState.RUNNING

    async def submit(self, spec: JobSpec) -> str:
        return self._start(spec)

    async def submit_array(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        answers: list[str | Exception] = []
        for spec in specs:
            try:
                answers.append(self._start(spec))
            except (NotSubmitted, SubmitError) as err:
                answers.append(err)
        return answers

    async def adopt(self, names: Sequence[str]) -> Mapping[str, str]:
        """Jobs by name: this backend's own children, then any process on the machine
        that leads its session and carries ``BRIDGE_JOB_NAME`` (a job started by an
        earlier broker process)."""
        wanted = set(names)
        found = {n: j for n, j in self._names.items() if n in wanted}
        if len(found) < len(wanted):
            found.update(await asyncio.to_thread(scan_for_names, wanted - set(found)))
        for job_id in found.values():
            self._running.add(job_id)
        return found

    async def status(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        return {job_id: self._status(job_id) for job_id in job_ids}

    def _signal(self, job_id: str, signum: int) -> None:
        parsed = parse_job_id(job_id)
        if parsed and self._alive(job_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(parsed[0], signum)

    async def cancel(self, job_ids: Sequence[str]) -> None:
        alive = [j for j in job_ids if self._alive(j)]
        for job_id in alive:
            self._cancelled.add(job_id)
            self._signal(job_id, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kill_grace_s
        while alive and loop.time() < deadline:
            await asyncio.sleep(0.05)
            alive = [j for j in alive if self._alive(j)]
        for job_id in alive:
            self._signal(job_id, signal.SIGKILL)

    async def probe(self) -> TargetInfo:
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> TargetInfo:
        import archspec.cpu

        self._refresh()
        cpus = len(os.sched_getaffinity(0))
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        slots = f"{len(self._running)}/{self.max_parallel or 'unlimited'} jobs running"
        return TargetInfo(
            name=self.name,
            kind="local",
            microarchitecture=archspec.cpu.host().name,
            cpus=cpus,
            memory_mb=memory_mb,
            detail=slots,
        )

    async def close(self) -> None:
        """Forget the job handles; the processes keep running (they are sessions of their own)."""
        self._children.clear()


def create(name: str, settings: LocalSettings, env: Mapping[str, str]) -> LocalBackend:
    return LocalBackend(name=name, max_parallel=settings.max_parallel)
