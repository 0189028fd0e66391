"""Slurm backend: ``sbatch`` / ``squeue`` / ``sacct`` / ``scancel`` through a runner.

The backend renders one batch script from ``slurm_job.sh.tmpl`` and pipes it to
``sbatch --parsable``; the runner decides where the commands run (this machine or a
login node over SSH), the backend never knows.

* **Arrays.**  ``submit_array`` groups specs by resources and submits each group as
  ``--array=0-N`` jobs of at most MaxArraySize elements.  The script holds a ``case``
  on ``SLURM_ARRAY_TASK_ID`` with each element's own argv, directory, environment and
  output files, so nothing has to be uploaded beforehand.  Element ids are ``J_i``.
* **Status** costs one ``squeue`` for all jobs (by array id, so a 1,000-element
  array is one argument), plus one accounting call for jobs that left the queue or
  failed (for their exit code): ``sacct`` with slurmdbd, else ``sacct --completion``
  (the jobcomp file, keyed by raw job ids that squeue showed us), else
  ``scontrol show job``.  A job nobody knows any more is ``LOST``.  With a matching
  pyslurm the ``squeue`` call is an in-process RPC instead (:mod:`.pyslurm_path`).
* **Errors.**  A controller that does not answer is ``BackendUnavailable`` (retry);
  a refused job is ``SubmitError`` with Slurm's words (a bad partition is named).
* **Probe.**  ``sinfo`` and ``squeue`` for capacity and queue; the node's CPU
  microarchitecture from a short ``srun`` job reading ``/proc/cpuinfo``, cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from schedulers import pyslurm_path
from schedulers.base import Capabilities, JobSpec, JobState, JobStatus, Resources, TargetInfo
from schedulers.errors import BackendUnavailable, CommandFailed, SubmitError
from schedulers.slurm_parse import (
    SlurmJob,
    map_state,
    microarchitecture_from_cpuinfo,
    parse_config,
    parse_element_names,
    parse_pending,
    parse_sacct,
    parse_sbatch_id,
    parse_scontrol_jobs,
    parse_sinfo_nodes,
    parse_squeue,
    parse_squeue_names,
    parse_submit_many,
)
from schedulers.slurm_script import SUBMIT_MANY, render_script, submit_many_input
from schedulers.slurm_settings import SlurmSettings
from schedulers.transport import CommandResult, CommandRunner, LocalRunner

log = logging.getLogger(__name__)

_UNREACHABLE = (
    "unable to contact slurm controller",
    "connection refused",
    "timed out",
    "zero bytes",
)
_COMPLETION = ["sacct", "--completion", "-n", "-P", "-o", "JobID,State,ExitCode", "-j"]
CAPABILITIES = Capabilities(native_arrays=True, submit_many=True, gpus=True, adopt_by_name=True)
#: How long a probe waits for the microarchitecture probe job before answering without it ...
MICROARCH_WAIT_S = 10.0
#: ... and how long that job waits for a node before it gives up (``srun --immediate``).
MICROARCH_JOB_WAIT_S = 300
_IGNORED_CANCEL = ("invalid job id", "already completing or completed", "job has already finished")


class SlurmBackend:
    """A Slurm cluster reached through ``runner`` (a :class:`LocalRunner` or SSH).

    ``partition``, ``account`` and ``qos`` are this target's defaults for jobs that
    do not name their own.  ``max_array_size`` caps arrays below the cluster's
    MaxArraySize; ``use_pyslurm`` is ``None`` (use it when it matches), ``False``
    (never) or ``True`` (required).  :meth:`close` closes the runner too.
    """

    def __init__(
        self,
        runner: CommandRunner,
        *,
        name: str = "slurm",
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        max_array_size: int | None = None,
        use_pyslurm: bool | None = None,
        command_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.runner = runner
        self.partition, self.account, self.qos = partition, account, qos
        self._max_array = max_array_size
        self._want_pyslurm = use_pyslurm
        self._timeout = command_timeout
        self._config: dict[str, str] | None = None
        self._path: pyslurm_path.PathChoice | None = None
        self._lock = asyncio.Lock()
        self._raw_ids: dict[str, str] = {}  # "1234_5" -> "1240", learnt from squeue
        self._cancelled: set[str] = set()
        self._microarch: str | None = None
        self._microarch_job: asyncio.Task[str] | None = None

    async def _run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        try:
            result = await self.runner.run(argv, stdin=stdin, timeout=self._timeout, check=False)
        except TimeoutError as err:
            raise BackendUnavailable(f"{argv[0]} did not answer in {self._timeout:.0f} s") from err
        if result.returncode and any(m in result.stderr.lower() for m in _UNREACHABLE):
            raise BackendUnavailable(f"{argv[0]}: {result.stderr.strip()}")
        return result

    async def config(self) -> dict[str, str]:
        """``scontrol show config`` (cached) and the chosen status path."""
        async with self._lock:
            if self._config is None:
                result = await self._run(["scontrol", "show", "config"])
                if result.returncode:
                    raise BackendUnavailable(f"scontrol show config: {result.stderr.strip()}")
                config = parse_config(result.stdout)
                self._path = self._choose_path(config)
                log.info("slurm target %s: job states through %s", self.name, self.status_path)
                self._config = config
            return self._config

    def _choose_path(self, config: Mapping[str, str]) -> pyslurm_path.PathChoice:
        if self._want_pyslurm is False:
            return pyslurm_path.PathChoice(False, "CLI: pyslurm disabled by configuration")
        choice = pyslurm_path.choose_path(
            pyslurm_version=pyslurm_path.installed_pyslurm_version(),
            slurm_version=config.get("SLURM_VERSION", "0.0"),
            runner_is_local=isinstance(self.runner, LocalRunner),
            cluster_conf=config.get("SLURM_CONF"),
            process_conf=os.environ.get("SLURM_CONF"),
        )
        if self._want_pyslurm and not choice.use_pyslurm:
            raise BackendUnavailable(f"pyslurm was required: {choice.description}")
        return choice

    def _resources(self, spec: JobSpec) -> Resources:
        """The spec's resources with this target's defaults filled in."""
        res = spec.resources
        return replace(
            res,
            partition=res.partition or self.partition,
            account=res.account or self.account,
            qos=res.qos or self.qos,
        )

    @property
    def status_path(self) -> str:
        """How job states are read: ``pyslurm ...`` or ``CLI: <why not pyslurm>``."""
        return self._path.description if self._path else "not decided yet"

    async def submit(self, spec: JobSpec) -> str:
        resources = self._resources(spec)
        return await self._sbatch(render_script([spec], resources, array=False), spec, resources)

    async def _sbatch(self, script: str, spec: JobSpec, resources: Resources) -> str:
        result = await self._run(["sbatch", "--parsable"], stdin=script)
        if result.returncode:
            message = (result.stderr or result.stdout).strip().replace("\n", "; ")
            if "partition" in message.lower() and resources.partition:
                raise SubmitError(f"partition {resources.partition!r} refused: {message}")
            raise SubmitError(f"sbatch refused job {spec.name!r}: {message}")
        return parse_sbatch_id(result.stdout)

    async def submit_many(
        self, specs: Sequence[JobSpec], streams: int = 4
    ) -> list[str | SubmitError]:
        """Independent jobs, one ``sbatch`` each, but a few runner calls in all: each call
        pipes its share of the scripts to one shell (one SSH round trip, not one a job).
        Returns a job id or the refusal, per spec."""
        chunk = max(1, -(-len(specs) // streams))
        parts = [list(specs[i : i + chunk]) for i in range(0, len(specs), chunk)]
        answers = await asyncio.gather(*(self._submit_chunk(part) for part in parts))
        return [answer for part in answers for answer in part]

    async def _submit_chunk(self, specs: Sequence[JobSpec]) -> list[str | SubmitError]:
        separator = f"#--bridge-job-{os.urandom(8).hex()}--"
        scripts = [render_script([s], self._resources(s), array=False) for s in specs]
        result = await self._run(
            ["sh", "-c", SUBMIT_MANY, "sh", separator], stdin=submit_many_input(scripts, separator)
        )
        return [
            SubmitError(f"sbatch refused job {spec.name!r}: {answer}")
            if isinstance(answer, ValueError)
            else answer
            for spec, answer in zip(
                specs, parse_submit_many(result.stdout, len(specs)), strict=True
            )
        ]

    async def submit_array(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        config = await self.config()
        limit = int(config.get("MaxArraySize", "1001") or 1001)
        limit = min(limit, self._max_array or limit)
        groups: dict[Resources, list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault(self._resources(spec), []).append(i)
        ids: list[str | Exception] = [SubmitError("not submitted")] * len(specs)
        for resources, members in groups.items():
            for start in range(0, len(members), limit):
                chunk = members[start : start + limit]
                chunk_specs = [specs[i] for i in chunk]
                try:
                    if len(chunk) == 1:
                        ids[chunk[0]] = await self.submit(chunk_specs[0])
                        continue
                    script = render_script(chunk_specs, resources, array=True)
                    job_id = await self._sbatch(script, chunk_specs[0], resources)
                except SubmitError as err:  # this chunk is refused; the others may pass
                    for i in chunk:
                        ids[i] = err
                    continue
                for element, i in enumerate(chunk):
                    ids[i] = f"{job_id}_{element}"
        return ids

    async def status(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return {}
        config = await self.config()
        queue = await self._queue(wanted)
        for job in queue.values():
            if job.raw_id and map_state(job.native_state) is not JobState.PENDING:
                self._raw_ids[job.job_id] = job.raw_id
        need = [j for j in wanted if j not in queue or _needs_exit_code(queue[j])]
        acct = await self._accounting(need, config) if need else {}
        out: dict[str, JobStatus] = {}
        for job_id in wanted:
            queued, done = queue.get(job_id), acct.get(job_id)
            if queued and done:  # squeue's state and reason, accounting's exit code
                done = replace(queued, exit_code=done.exit_code, signal=done.signal)
            seen = done or queued
            out[job_id] = self._explain(job_id, seen.to_status() if seen else None)
        return out

    def _explain(self, job_id: str, status: JobStatus | None) -> JobStatus:
        """Explain a cancellation (by whom) or a job Slurm no longer knows."""
        ours = bool(self._cancelled & {job_id, job_id.split("_")[0]})
        if status is None and ours:  # a pending array element cancelled leaves no record
            return JobStatus(JobState.CANCELLED, reason="cancelled by the broker before it started")
        if status is None:
            return JobStatus(JobState.LOST, reason=f"Slurm has no record of job {job_id} any more")
        if status.state is not JobState.CANCELLED or ours:
            return status
        reason = f"cancelled outside the broker (scancel or an administrator): {status.reason}"
        return replace(status, reason=reason)

    async def _queue(self, job_ids: Sequence[str]) -> dict[str, SlurmJob]:
        if self._path and self._path.use_pyslurm:
            return await pyslurm_path.load_jobs()
        arrays = ",".join(dict.fromkeys(j.split("_")[0] for j in job_ids))
        argv = ["squeue", "--array", "--states=all", "-h", "-o", "%i|%A|%T|%r", "-j", arrays]
        result = await self._run(argv)
        if result.returncode and "invalid job id" not in result.stderr.lower():
            raise BackendUnavailable(f"squeue failed: {result.stderr.strip()}")
        return parse_squeue(result.stdout) if result.returncode == 0 else {}

    async def _accounting(
        self, job_ids: list[str], config: Mapping[str, str]
    ) -> dict[str, SlurmJob]:
        if "slurmdbd" in config.get("AccountingStorageType", ""):
            cols = ["-o", "JobID,State,ExitCode,Reason"]
            result = await self._run(["sacct", "-X", "-n", "-P", *cols, "-j", ",".join(job_ids)])
            return parse_sacct(result.stdout) if result.returncode == 0 else {}
        if "filetxt" in config.get("JobCompType", ""):
            raw = {
                self._raw_ids.get(j, j): j for j in job_ids if "_" not in j or j in self._raw_ids
            }
            if not raw:
                return {}
            result = await self._run([*_COMPLETION, ",".join(raw)])
            found = parse_sacct(result.stdout) if result.returncode == 0 else {}
            return {raw[r]: replace(j, job_id=raw[r]) for r, j in found.items() if r in raw}
        result = await self._run(["scontrol", "-o", "show", "job"])
        return parse_scontrol_jobs(result.stdout) if result.returncode == 0 else {}

    async def adopt(self, names: Sequence[str]) -> Mapping[str, str]:
        """Jobs by name: plain jobs carry their name; an array carries its first
        element's, so each element's ``BRIDGE_JOB_NAME`` is read back from the array's
        batch script (``scontrol write batch_script``, once per array).  Jobs Slurm has
        forgotten (older than MinJobAge) are found in accounting where it exists."""
        wanted = set(names)
        if not wanted:
            return {}
        config = await self.config()
        argv = ["squeue", "--me", "--array", "--states=all", "-h", "-o", "%i|%F|%K|%j"]
        result = await self._run(argv)
        if result.returncode:
            raise BackendUnavailable(f"squeue failed: {result.stderr.strip()}")
        found: dict[str, str] = {}
        arrays: set[str] = set()
        for row in parse_squeue_names(result.stdout):
            if row.array_index is not None:
                arrays.add(row.array_job_id)
            elif row.name in wanted:
                found[row.name] = row.job_id
        for array_id in sorted(arrays):
            script = await self._run(["scontrol", "write", "batch_script", array_id, "-"])
            if script.returncode:
                continue  # finished and purged meanwhile
            for index, name in parse_element_names(script.stdout).items():
                if name in wanted:
                    found[name] = f"{array_id}_{index}"
        missing = wanted - set(found)
        if missing and "slurmdbd" in config.get("AccountingStorageType", ""):
            cols = ["-o", "JobID,JobName"]
            acct = await self._run(
                ["sacct", "-X", "-n", "-P", *cols, "--name", ",".join(sorted(missing))]
            )
            for line in acct.stdout.splitlines():
                job_id, _, name = line.partition("|")
                if name in missing and "_" not in job_id:
                    found[name] = job_id
        return found

    async def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        self._cancelled.update(job_ids)
        result = await self._run(["scancel", *job_ids])
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        serious = [ln for ln in lines if not any(m in ln.lower() for m in _IGNORED_CANCEL)]
        if result.returncode and serious:
            raise CommandFailed(["scancel"], result.returncode, result.stdout, result.stderr)

    async def probe(self) -> TargetInfo:
        await self.config()
        where = ["-p", self.partition] if self.partition else []
        nodes, pending = await asyncio.gather(
            self._run(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%f|%t", *where]),
            self._run(["squeue", "--array", "-t", "PD", "-h", "-o", "%i|%S", *where]),
        )
        shape = parse_sinfo_nodes(nodes.stdout)
        count, wait = parse_pending(pending.stdout, datetime.now())
        detail = [f"job states through {self.status_path}"]
        if self._microarch is None:
            detail += await self._await_microarchitecture()
        return TargetInfo(
            name=self.name,
            kind="slurm",
            healthy=shape.usable_nodes > 0,
            microarchitecture=self._microarch,
            cpus=shape.cpus,
            memory_mb=shape.memory_mb,
            partitions=shape.partitions,
            pending_jobs=count,
            queue_wait_s=wait,
            detail="; ".join(detail),
        )

    async def _await_microarchitecture(self) -> list[str]:
        """Learn the compute nodes' microarchitecture with a short job, waiting for it at
        most ``MICROARCH_WAIT_S``: on a busy cluster the job waits for a node, and a probe
        (which a broker's start and its health checks wait on) must not wait with it. The
        job goes on in the background; a later probe picks up its answer. What to say
        about it in the target's detail, if anything."""
        if self._microarch_job is None:
            self._microarch_job = asyncio.create_task(
                self._probe_microarchitecture(), name=f"{self.name}-microarchitecture"
            )
        job = self._microarch_job
        await asyncio.wait([job], timeout=MICROARCH_WAIT_S)
        if not job.done():
            return ["microarchitecture probe job still waiting for a node"]
        self._microarch_job = None
        try:
            self._microarch = job.result()
        except (SubmitError, BackendUnavailable, ValueError) as err:
            return [f"microarchitecture probe failed: {err}"]
        return []

    async def _probe_microarchitecture(self) -> str:
        """Run ``uname -m`` and ``/proc/cpuinfo`` on a compute node (a short job)."""
        argv = ["srun", "--job-name=bridge-probe", "--ntasks=1", "--time=1"]
        argv.append(f"--immediate={MICROARCH_JOB_WAIT_S}")
        for option in ("partition", "account", "qos"):
            if value := getattr(self, option):
                argv.append(f"--{option}={value}")
        argv += ["--quiet", "--", "sh", "-c", "uname -m; cat /proc/cpuinfo"]
        limit = MICROARCH_JOB_WAIT_S + self._timeout
        try:
            result = await self.runner.run(argv, timeout=limit, check=False)
        except TimeoutError as err:
            raise BackendUnavailable(f"srun did not answer in {limit:.0f} s") from err
        if result.returncode:
            raise SubmitError(f"probe job failed: {result.stderr.strip()}")
        machine, _, cpuinfo = result.stdout.partition("\n")
        return microarchitecture_from_cpuinfo(cpuinfo, machine.strip())

    async def close(self) -> None:
        if self._microarch_job is not None:
            self._microarch_job.cancel()
            with contextlib.suppress(BaseException):
                await self._microarch_job
        await self.runner.close()


def _needs_exit_code(job: SlurmJob) -> bool:
    state = map_state(job.native_state)
    return state.finished and state is not JobState.COMPLETED


def make_runner(settings: SlurmSettings, env: Mapping[str, str]) -> CommandRunner:
    """Where the Slurm commands run: here, or on a login node over SSH."""
    if settings.runner == "local":
        return LocalRunner(env=dict(env))
    from schedulers.transport import SSHRunner  # needs paramiko: the [slurm] extra

    assert settings.host and settings.known_hosts  # checked by the settings model
    return SSHRunner(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        key_filename=str(Path(settings.key_file).expanduser()) if settings.key_file else None,
        known_hosts=str(Path(settings.known_hosts).expanduser()),
        env=dict(env),
    )


def create(name: str, settings: SlurmSettings, env: Mapping[str, str]) -> SlurmBackend:
    return SlurmBackend(
        make_runner(settings, env),
        name=name,
        partition=settings.partition,
        account=settings.account,
        qos=settings.qos,
        max_array_size=settings.max_array_size,
        use_pyslurm=settings.use_pyslurm,
        command_timeout=settings.command_timeout_s,
    )
