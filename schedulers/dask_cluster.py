"""The Dask backend: each job is one task on a Dask cluster running ``argv`` in a
subprocess on a worker (see :mod:`schedulers.dask_worker`).

* **Which cluster** -- a running scheduler (``address``), a ``LocalCluster`` in this
  process, or workers started as Slurm jobs by dask-jobqueue (:mod:`.dask_settings`).
* **Ids** -- the job id *is* the job name, used as the task's key, and each job is
  published on the scheduler under that name.  The scheduler then holds it whoever is
  connected, so a restarted broker finds it again (:meth:`adopt`), and submitting a
  name twice never runs it twice.
* **Resources** -- jobs ask workers for ``cpus`` and ``memory_mb`` (Dask worker
  resources), so a worker never runs more than it declares.
* **Batches** -- :meth:`submit_many` sends a whole batch then publishes it in one call;
  :meth:`status` is one scheduler call for any number of jobs.
* **Failures** -- a scheduler that does not answer within ``timeout_s`` raises
  :class:`BackendUnavailable` (and :meth:`probe` says unhealthy); once it has been
  silent for ``lost_after_s`` its jobs are LOST.  A job whose worker died is LOST too
  (clusters started here never rerun such a task themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from schedulers import dask_worker as remote
from schedulers.base import Capabilities, JobSpec, JobState, JobStatus, TargetInfo
from schedulers.dask_settings import DaskSettings
from schedulers.dask_states import PENDING, job_status, most_generic
from schedulers.errors import BackendUnavailable, SubmitError

CAPABILITIES = Capabilities(submit_many=True, adopt_by_name=True)
NAME_PREFIX = "bridge-"  # finished jobs with this prefix are forgotten beyond KEEP_FINISHED
KEEP_FINISHED = 10_000
CLUSTER_START_S = 120.0
T = TypeVar("T")


def create(name: str, settings: DaskSettings, env: Mapping[str, str] | None = None) -> DaskBackend:
    return DaskBackend(name, settings)


class DaskBackend:
    """Jobs as tasks on a Dask cluster; see the module docstring."""

    def __init__(self, name: str, settings: DaskSettings) -> None:
        self.name = name
        self.settings = settings
        self._client: Any = None
        self._cluster: Any = None
        self._lock = asyncio.Lock()
        self._answered_at = time.monotonic()
        self._retry_at = 0.0  # no new connection before this (monotonic) time
        self._cancelled: set[str] = set()
        self._arch: dict[str, str] = {}  # worker address -> archspec name
        self._largest: tuple[int, int] | None = None  # most cpus / memory_mb of one worker

    # -- connection -------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.settings.address or f"({self.settings.mode} cluster)"

    async def _connect(self) -> Any:
        async with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            wait = self._retry_at - time.monotonic()
            if wait > 0:  # fail fast between attempts: callers must not hang on it
                raise BackendUnavailable(
                    f"{self.name}: {self.where} did not answer; next try in {wait:.0f} s"
                )
            if self._client is not None:  # lost its scheduler: start afresh
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._client.close(), 2)
                self._client = None
            from distributed import Client

            try:
                if self.settings.address is not None:
                    target: Any = self.settings.address
                else:
                    if self._cluster is None:
                        starting = self._start_cluster()
                        self._cluster = await asyncio.wait_for(starting, CLUSTER_START_S)
                    target = self._cluster
                client = Client(target, asynchronous=True, timeout=self.settings.timeout_s)
                self._client = await asyncio.wait_for(client, self.settings.timeout_s * 2)
            except Exception as err:  # unreachable, or a cluster that failed to start
                self._retry_at = time.monotonic() + self.settings.timeout_s
                raise BackendUnavailable(
                    f"{self.name}: cannot reach {self.where}: {err or type(err).__name__}"
                ) from err
            return self._client

    async def _start_cluster(self) -> Any:
        from schedulers.dask_startup import start_local, start_slurm

        if self.settings.slurm is not None:
            self._largest = (self.settings.slurm.cores, self.settings.slurm.memory_mb)
            return await start_slurm(self.settings.slurm)
        cluster, self._largest = await start_local(self.settings.local)
        return cluster

    async def _ask(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """One exchange with the scheduler, bounded by ``timeout_s``."""
        client = await self._connect()
        try:
            result = await asyncio.wait_for(call(client), self.settings.timeout_s)
        except (OSError, TimeoutError) as err:
            raise BackendUnavailable(
                f"{self.name}: the Dask scheduler {self.where} does not answer: "
                f"{err or type(err).__name__}"
            ) from err
        self._answered_at = time.monotonic()
        return result

    # -- jobs -------------------------------------------------------------------------

    def _refusal(self, spec: JobSpec) -> Exception | None:
        res = spec.resources
        if res.gpus:
            return SubmitError(f"{self.name}: Dask workers here have no GPUs")
        if self._largest is not None:
            cpus, memory_mb = self._largest
            if res.cpus > cpus or (res.memory_mb or 0) > memory_mb:
                return SubmitError(
                    f"{self.name}: no worker has {res.cpus} cpus and {res.memory_mb or 0} MB "
                    f"(the largest has {cpus} cpus, {memory_mb} MB)"
                )
        return None

    async def submit(self, spec: JobSpec) -> str:
        answer = (await self.submit_many([spec]))[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def submit_array(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        return await self.submit_many(specs)

    async def submit_many(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        """All jobs go out on the client's batched stream, then one call publishes them."""
        answers: list[str | Exception] = []
        client = await self._connect()
        futures = {}
        for spec in specs:
            refusal = self._refusal(spec)
            if refusal is not None:
                answers.append(refusal)
                continue
            resources = {"cpus": spec.resources.cpus}
            if spec.resources.memory_mb:
                resources["memory_mb"] = spec.resources.memory_mb
            futures[spec.name] = client.submit(
                remote.run_job,
                spec.name,
                list(spec.argv),
                spec.workdir,
                dict(spec.env),
                spec.stdout_path,
                spec.stderr_path,
                self.settings.kill_grace_s,
                key=spec.name,
                resources=resources,
            )
            answers.append(spec.name)
        if futures:
            await self._ask(lambda c: c.publish_dataset(override=True, **futures))
            with contextlib.suppress(BackendUnavailable):
                await self._ask(
                    lambda c: c.run_on_scheduler(remote.forget_finished, NAME_PREFIX, KEEP_FINISHED)
                )
        return answers

    async def adopt(self, names: Sequence[str]) -> Mapping[str, str]:
        known = await self._ask(lambda c: c.run_on_scheduler(remote.known_names, list(names)))
        return {name: name for name in known}

    async def status(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        ids = list(dict.fromkeys(job_ids))
        try:
            states = await self._ask(lambda c: c.run_on_scheduler(remote.job_states, ids))
        except BackendUnavailable as err:
            silent = time.monotonic() - self._answered_at
            if silent < self.settings.lost_after_s:
                raise
            reason = f"the Dask scheduler has not answered for {silent:.0f} s ({err})"
            return {j: JobStatus(JobState.LOST, reason=reason) for j in ids}
        out = {}
        for job_id in ids:
            state, text = states.get(job_id, (None, ""))
            out[job_id] = job_status(state, text, job_id in self._cancelled)
        return out

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Mark the jobs on every worker (a running one gets SIGTERM, then SIGKILL; one
        that starts later refuses to), then drop those no worker has taken yet."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return
        self._cancelled.update(ids)
        await self._ask(lambda c: c.run(remote.cancel_jobs, ids))
        states = await self._ask(lambda c: c.run_on_scheduler(remote.job_states, ids))
        waiting = [j for j in ids if states.get(j, ("",))[0] in PENDING]
        if waiting:
            from distributed import Future

            await self._ask(lambda c: c.run_on_scheduler(remote.unpublish, waiting))
            await self._ask(lambda c: c.cancel([Future(j, c) for j in waiting], force=True))

    # -- the target -------------------------------------------------------------------

    async def probe(self) -> TargetInfo:
        try:
            facts = await self._ask(lambda c: c.run_on_scheduler(remote.summary, NAME_PREFIX))
            new = [w for w in facts["workers"] if w not in self._arch]
            if new:
                found = await self._ask(lambda c: c.run(remote.host_microarchitecture, workers=new))
                self._arch.update(found)
        except BackendUnavailable as err:
            return TargetInfo(name=self.name, kind="dask", healthy=False, detail=str(err))
        return self._describe(facts)

    def _describe(self, facts: Mapping[str, Any]) -> TargetInfo:
        workers: Mapping[str, Mapping[str, Any]] = facts["workers"]
        cpus = [int(w["resources"].get("cpus", w["nthreads"])) for w in workers.values()]
        mems = [int(w["resources"].get("memory_mb", 0)) for w in workers.values()]
        if workers and self.settings.address is not None:
            self._largest = (max(cpus), max(mems) or sys.maxsize)
        archs = {self._arch.get(a, "?") for a in workers}
        total_cpus, total_mb = sum(cpus), sum(mems)
        detail = f"{len(workers)} worker(s) ({', '.join(sorted(archs)) or 'none yet'})"
        slurm = self.settings.slurm
        if slurm is not None:  # capacity it can grow to
            total_cpus = max(total_cpus, slurm.max_workers * slurm.cores)
            total_mb = max(total_mb, slurm.max_workers * slurm.memory_mb)
            detail += f"; scales to {slurm.max_workers} Slurm job(s)"
        mean = facts["mean_duration_s"]
        waiting = int(facts["waiting"])
        wait_s = waiting * mean / max(1, sum(cpus)) if mean > 0 else 0.0
        return TargetInfo(
            name=self.name,
            kind="dask",
            microarchitecture=most_generic(sorted(archs)),
            cpus=total_cpus or None,
            memory_mb=total_mb or None,
            pending_jobs=waiting,
            queue_wait_s=wait_s,
            detail=f"{detail}; {facts['processing']} running, {waiting} waiting",
        )

    async def close(self) -> None:
        """Disconnect; a cluster started here stops with its workers (and their jobs)."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cluster.close(), 30)
