"""The broker loop: claim, route, submit, reconcile, retry, cancel.

Each turn of the loop (every ``poll_interval_s``, or at once when the API nudges
it) does three things:

1. **Dispatch.**  Claim QUEUED tasks, route each one, write its ``task.json`` to
   its work directory, move it to INITIALIZING with the placement reason, and
   submit ``bridge-agent run <work-url> --attempt N``.  Tasks placed on the same
   target with the same resources in one turn go to ``submit_array`` together.
2. **Reconcile.**  For every active task this broker holds, read the agent's
   ``status.json`` (executor logs appear as soon as the agent writes them) and ask
   each backend, in one call per target, for the state of all its jobs.  The
   agent's word decides the outcome; the backend's only matters when the job ended
   without the agent reporting (killed, preempted, node lost, wall time).
3. **Cancel.**  CANCELING tasks get their job cancelled, then become CANCELED.

Nothing is kept only in memory: a restarted broker takes its leases back and
carries on from the database and the work directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import workspace
from bridge.config import Settings, TargetConfig
from bridge.envs_broker import EnvBroker
from bridge.router import Candidate, Request, route
from bridge.states import InvalidTransition, State
from bridge.store import AttemptRow, Changes, TaskRow, TaskStore
from schedulers.base import Backend, JobSpec, JobState, JobStatus, Resources, TargetInfo
from schedulers.errors import BackendUnavailable, SchedulerError

log = logging.getLogger(__name__)

AGENT_FINAL = {
    "COMPLETE": State.COMPLETE,
    "EXECUTOR_ERROR": State.EXECUTOR_ERROR,
    "SYSTEM_ERROR": State.SYSTEM_ERROR,
}
RETRYABLE = {JobState.PREEMPTED, JobState.LOST}
# How long a finished job may go without a final status.json before we give up on it
# (object-store work directories can lag a little behind the job's end).
REPORT_GRACE_S = 3.0


@dataclass
class _Submission:
    task: TaskRow
    attempt: AttemptRow
    spec: JobSpec
    reason: str


class Broker:
    def __init__(
        self, settings: Settings, store: TaskStore, backends: Mapping[str, Backend]
    ) -> None:
        self.settings = settings
        self.store = store
        self.backends = dict(backends)
        self.configs = {t.name: t for t in settings.targets}
        self.infos: dict[str, TargetInfo] = {}
        self.broker_id = settings.effective_broker_id
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ended_without_report: dict[str, float] = {}
        self._cancel_sent: set[str] = set()
        self._status_seen: dict[int, tuple[int, int]] = {}  # attempt id -> status.json stat
        self._last_probe = 0.0
        self.envs = EnvBroker(settings, store)  # software builds tasks wait on

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        await self.probe_targets()
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="bridge-dispatch"),
            asyncio.create_task(self._reconcile_loop(), name="bridge-reconcile"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []
        for backend in self.backends.values():
            await backend.close()
        self.envs.close()

    def wake(self) -> None:
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        """New tasks go out as soon as they arrive (after a short gathering pause),
        without waiting for a reconcile pass."""
        cfg = self.settings.broker
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), cfg.poll_interval_s)
                await asyncio.sleep(cfg.gather_s)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.dispatch()
            except Exception:  # one bad turn must not stop the broker
                log.exception("dispatch failed; retrying")

    async def _reconcile_loop(self) -> None:
        cfg = self.settings.broker
        while not self._stopping:
            started = time.monotonic()
            try:
                if started - self._last_probe > 60:
                    await self.probe_targets()
                await asyncio.to_thread(self.store.renew_leases, self.broker_id, cfg.lease_s)
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed; retrying")
            await asyncio.sleep(max(0.0, cfg.poll_interval_s - (time.monotonic() - started)))

    async def probe_targets(self) -> None:
        self._last_probe = time.monotonic()
        for name, backend in self.backends.items():
            try:
                info = await asyncio.wait_for(backend.probe(), 30)
            except (SchedulerError, OSError, TimeoutError) as err:
                info = TargetInfo(
                    name=name,
                    kind=self.configs[name].kind,
                    healthy=False,
                    detail=str(err) or type(err).__name__,
                )
            self.infos[name] = info
            await asyncio.to_thread(self.store.save_target, name, info.kind, _info_dict(info))

    # -- dispatch -------------------------------------------------------------------

    async def dispatch(self) -> None:
        cfg = self.settings.broker
        tasks = await asyncio.to_thread(
            self.store.claim, self.broker_id, [State.QUEUED], cfg.claim_batch, cfg.lease_s
        )
        if not tasks:
            return
        started = time.monotonic()
        prepared = await asyncio.to_thread(self._prepare_all, tasks)
        placed = time.monotonic()
        groups: dict[tuple[str, Resources], list[_Submission]] = defaultdict(list)
        for sub in prepared:
            groups[(sub.attempt.target, sub.spec.resources)].append(sub)
        for (target, _), subs in groups.items():
            await self._submit(target, subs)
        log.info(
            "dispatched %d tasks in %d group(s) in %.2f s (placing %.2f s)",
            len(prepared),
            len(groups),
            time.monotonic() - started,
            placed - started,
        )

    def _prepare_all(self, tasks: Sequence[TaskRow]) -> list[_Submission]:
        """Route every claimed task, start their attempts in one transaction and write
        each work directory's ``task.json``."""
        candidates = [Candidate(c, self.infos.get(c.name)) for c in self.settings.targets]
        placed: list[tuple[TaskRow, str, str, str]] = []
        envs: dict[str, dict[str, Any]] = {}
        for task in tasks:
            placement = route(Request.from_document(task.document, task.owner), candidates)
            if placement.target is None:
                self._fail(task.id, placement.reason)
                continue
            target = self.configs[placement.target]
            env = self.envs.admit(task, target, self.infos.get(target.name))
            if env is None:  # waiting for its software build, or refused
                continue
            envs[task.id] = env
            base = target.work_url or self.settings.effective_work_url
            placed.append((task, target.name, placement.reason, workspace.task_url(base, task.id)))
        attempts = self.store.place_many(placed)
        subs = []
        for (task, name, reason, work_url), attempt in zip(placed, attempts, strict=True):
            target = self.configs[name]
            runtime: dict[str, Any] = {
                "container_runtime": _param(task, "container_runtime") or target.container_runtime,
                "attempt": attempt.number,
                "fusion": {
                    "mode": target.fusion,
                    "cache_bytes": int(target.fusion_cache_gb * 2**30),
                },
            }
            if self.settings.public_url:
                runtime["api_url"] = self.settings.public_url
            runtime.update(envs[task.id])
            try:
                workspace.write_task(work_url, _public_document(task), runtime)
            except OSError as err:
                self._fail(task.id, f"could not write the work directory {work_url}: {err}")
                continue
            spec = self._job_spec(task, target, work_url, attempt.number)
            subs.append(_Submission(task, attempt, spec, reason))
        return subs

    def _job_spec(self, task: TaskRow, target: TargetConfig, work_url: str, n: int) -> JobSpec:
        res = task.document.get("resources") or {}
        ram = res.get("ram_gb")
        wall = _param(task, "wall_time")
        log_path = workspace.local_log_path(work_url, n, self.settings.data_dir / "logs" / task.id)
        return JobSpec(
            name=f"bridge-{task.id[:12]}",
            argv=[
                *workspace.agent_command(target.agent_command),
                "run",
                work_url,
                "--attempt",
                str(n),
            ],
            workdir=str(log_path.parent),
            resources=Resources(
                cpus=int(res.get("cpu_cores") or 1),
                memory_mb=int(ram * 1024) if ram else None,
                wall_time_s=int(wall) if wall else None,
                gpus=int(_param(task, "gpus") or 0),
                partition=_param(task, "partition") or target.partition,
                account=_param(task, "account") or target.account,
                qos=_param(task, "qos") or target.qos,
                constraint=_param(task, "constraint"),
                preemptible=bool(res.get("preemptible")),
            ),
            env=dict(target.env),
            stdout_path=str(log_path),
            stderr_path=str(log_path),
        )

    async def _submit(self, target: str, subs: Sequence[_Submission]) -> None:
        """Submit, as one array where the target allows; a busy target keeps tasks queued."""
        backend = self.backends[target]
        if len(subs) > 1 and self.configs[target].batches_arrays:
            await self._submit_together(target, subs, backend.submit_array)
            return
        submit_many = getattr(backend, "submit_many", None)
        if submit_many is not None and len(subs) > 1:
            # Several jobs per round trip (Slurm: one shell runs an sbatch per script).
            await self._submit_together(target, subs, submit_many)
            return
        # One by one, but several in flight: a submit is mostly waiting on the
        # target (sbatch, an SSH round trip), so a few at once multiply the rate.
        limit = asyncio.Semaphore(self.settings.broker.submit_concurrency)
        full = asyncio.Event()

        async def one(sub: _Submission) -> None:
            async with limit:
                if full.is_set():
                    await asyncio.to_thread(self._requeue, sub)
                    return
                try:
                    job_id = await backend.submit(sub.spec)
                except BackendUnavailable:
                    full.set()
                    await asyncio.to_thread(self._requeue, sub)
                    return
                except (SchedulerError, OSError) as err:
                    await asyncio.to_thread(
                        self._fail, sub.task.id, f"{target} refused the job: {err}"
                    )
                    return
                await asyncio.to_thread(self._submitted_all, [(sub, job_id)])

        await asyncio.gather(*(one(sub) for sub in subs))

    async def _submit_together(
        self,
        target: str,
        subs: Sequence[_Submission],
        call: Callable[[list[JobSpec]], Awaitable[Sequence[str | Exception]]],
    ) -> None:
        """One backend call for many jobs; it answers a job id or an error per job."""
        try:
            answers = await call([s.spec for s in subs])
        except BackendUnavailable:
            for sub in subs:
                await asyncio.to_thread(self._requeue, sub)
            return
        except (SchedulerError, OSError) as err:
            answers = [err] * len(subs)
        done = []
        for sub, answer in zip(subs, answers, strict=True):
            if isinstance(answer, str):
                done.append((sub, answer))
            else:
                await asyncio.to_thread(
                    self._fail, sub.task.id, f"{target} refused the job: {answer}"
                )
        await asyncio.to_thread(self._submitted_all, done)

    def _submitted_all(self, pairs: Sequence[tuple[_Submission, str]]) -> None:
        self.store.record_submissions(
            [
                (sub.attempt, sub.task.id, job_id, f"placed on {sub.reason}; job {job_id}")
                for sub, job_id in pairs
            ]
        )

    def _requeue(self, sub: _Submission) -> None:
        """The target is full: forget this attempt, leave the task QUEUED for a later turn."""
        self.store.abandon_attempt(sub.attempt)
        self.store.release(sub.task.id)

    # -- reconcile ------------------------------------------------------------------

    async def reconcile(self) -> None:
        active = [State.INITIALIZING, State.RUNNING, State.PAUSED, State.CANCELING]
        tasks = await asyncio.to_thread(
            self.store.claim, self.broker_id, active, 100_000, self.settings.broker.lease_s
        )
        if not tasks:
            return
        attempts = await asyncio.to_thread(self.store.current_attempts, tasks)
        jobs = await self._job_states(tasks, attempts)
        running: list[tuple[TaskRow, AttemptRow | None, JobStatus | None]] = []
        canceling: list[tuple[TaskRow, AttemptRow | None, JobStatus | None]] = []
        for task in tasks:
            attempt = attempts.get(task.id)
            job = (
                jobs.get((attempt.target, attempt.backend_job_id))
                if attempt and attempt.backend_job_id
                else None
            )
            (canceling if task.state == State.CANCELING else running).append((task, attempt, job))
        if canceling:
            await self._cancel_all(canceling)
        await asyncio.to_thread(self._advance_all, running)

    def _advance_all(
        self, items: Sequence[tuple[TaskRow, AttemptRow | None, JobStatus | None]]
    ) -> None:
        changes = Changes()
        for task, attempt, job in items:
            self._advance(task, attempt, job, changes)
        self.store.apply(changes)

    async def _job_states(
        self, tasks: Sequence[TaskRow], attempts: Mapping[str, AttemptRow | None]
    ) -> dict[tuple[str, str], JobStatus]:
        wanted: dict[str, list[str]] = defaultdict(list)
        for task in tasks:
            a = attempts.get(task.id)
            if a and a.backend_job_id and not a.finished:
                wanted[a.target].append(a.backend_job_id)
        out: dict[tuple[str, str], JobStatus] = {}
        for target, ids in wanted.items():
            backend = self.backends.get(target)
            if backend is None:
                continue
            try:
                states = await backend.status(ids)
            except (SchedulerError, OSError) as err:
                log.warning("cannot read job states from %s: %s", target, err)
                continue
            out.update({(target, job_id): st for job_id, st in states.items()})
        return out

    def _advance(
        self, task: TaskRow, attempt: AttemptRow | None, job: JobStatus | None, changes: Changes
    ) -> None:
        if attempt is None and task.state == State.INITIALIZING:
            self.envs.check_waiting(task, changes)
        if attempt is None or task.work_url is None:
            return
        signature = workspace.status_signature(task.work_url, attempt.number)
        if signature is not None and self._status_seen.get(attempt.id) == signature:
            status: dict[str, Any] | None = attempt.status  # unchanged since last pass
        else:
            status = workspace.read_status(task.work_url, attempt.number)
            if signature is not None:
                self._status_seen[attempt.id] = signature
        if status is not None and status != attempt.status:
            changes.statuses.append((attempt.id, status, _time(status.get("start_time"))))
        agent_state = (status or {}).get("state")
        final = AGENT_FINAL.get(agent_state or "")
        if final is not None:
            self._finish(task, attempt, final, _final_reason(final, status or {}), changes)
            return
        if agent_state == "CANCELED":
            why = job.reason if job and job.reason else "the job was signalled to stop"
            reason = f"the job was stopped outside the broker: {why}"
            self._finish(task, attempt, State.SYSTEM_ERROR, reason, changes)
            return
        if agent_state == "RUNNING" and task.state == State.INITIALIZING:
            changes.move(task.id, State.RUNNING, "the first executor started")
        if job is None or not job.state.finished:
            self._ended_without_report.pop(task.id, None)
            return
        first_seen = self._ended_without_report.setdefault(task.id, time.monotonic())
        if time.monotonic() - first_seen < REPORT_GRACE_S:
            return
        self._ended_without_report.pop(task.id, None)
        self._job_ended_silently(task, attempt, job, changes)

    def _job_ended_silently(
        self, task: TaskRow, attempt: AttemptRow, job: JobStatus, changes: Changes
    ) -> None:
        detail = f"{attempt.target} job {attempt.backend_job_id} ended {job.state.value}"
        if job.exit_code is not None:
            detail += f" (exit {job.exit_code})"
        if job.reason:
            detail += f": {job.reason}"
        detail += " before the agent reported"
        limit = int(_param(task, "max_retries") or self.settings.broker.max_retries)
        if job.state in RETRYABLE and attempt.number <= limit:
            changes.finished.append(attempt.id)
            changes.move(
                task.id, State.QUEUED, f"{detail}; retrying (attempt {attempt.number + 1})"
            )
            return
        if job.state == JobState.CANCELLED:
            detail = f"the job was cancelled outside the broker: {detail}"
        self._finish(task, attempt, State.SYSTEM_ERROR, detail, changes)

    def _finish(
        self, task: TaskRow, attempt: AttemptRow, state: State, reason: str, changes: Changes
    ) -> None:
        self._status_seen.pop(attempt.id, None)
        changes.finished.append(attempt.id)
        changes.move(task.id, state, reason)

    async def _cancel_all(
        self, items: Sequence[tuple[TaskRow, AttemptRow | None, JobStatus | None]]
    ) -> None:
        """CANCELING tasks: cancel their jobs (one call per target), then mark them CANCELED
        once the job is gone."""
        changes = Changes()
        to_cancel: dict[str, list[str]] = defaultdict(list)
        for task, attempt, job in items:
            if attempt is None or attempt.finished:
                changes.move(task.id, State.CANCELED, "nothing was running")
            elif attempt.backend_job_id is None:
                continue  # submission in flight; the next pass has the job id
            elif job is not None and job.state.finished:
                reason = f"{attempt.target} job {attempt.backend_job_id} cancelled"
                self._finish(task, attempt, State.CANCELED, reason, changes)
            elif attempt.backend_job_id not in self._cancel_sent:
                to_cancel[attempt.target].append(attempt.backend_job_id)
        for target, job_ids in to_cancel.items():
            try:
                await self.backends[target].cancel(job_ids)
                self._cancel_sent.update(job_ids)
            except (SchedulerError, OSError) as err:
                log.warning("cancel of %s on %s failed, will retry: %s", job_ids, target, err)
        await asyncio.to_thread(self.store.apply, changes)

    def _fail(self, task_id: str, reason: str) -> None:
        with contextlib.suppress(InvalidTransition):
            self.store.transition(task_id, State.SYSTEM_ERROR, reason)


def _param(task: TaskRow, key: str) -> str | None:
    params = (task.document.get("resources") or {}).get("backend_parameters") or {}
    value = params.get(key)
    return str(value) if value not in (None, "") else None


def _public_document(task: TaskRow) -> dict[str, Any]:
    doc = {k: v for k, v in task.document.items() if not k.startswith("_")}
    doc["id"] = task.id
    return doc


def _final_reason(state: State, status: dict[str, Any]) -> str:
    if state == State.COMPLETE:
        return "all executors finished and outputs were uploaded"
    if state == State.EXECUTOR_ERROR:
        codes = [e.get("exit_code") for e in status.get("executors", [])]
        return f"an executor exited non-zero (exit codes {codes})"
    logs = status.get("system_logs") or []
    return f"system error: {logs[-1] if logs else 'see system_logs'}"


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _info_dict(info: TargetInfo) -> dict[str, Any]:
    return {
        "healthy": info.healthy,
        "microarchitecture": info.microarchitecture,
        "cpus": info.cpus,
        "memory_mb": info.memory_mb,
        "partitions": list(info.partitions),
        "pending_jobs": info.pending_jobs,
        "queue_wait_s": info.queue_wait_s,
        "detail": info.detail,
    }
