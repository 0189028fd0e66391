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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bridge import metrics, routing_state, workspace
from bridge.attempts import (
    AGENT_FINAL,
    Decision,
    Facts,
    OrphanAction,
    OrphanFacts,
    Phase,
    Verdict,
    decide,
    decide_orphan,
    job_name,
)
from bridge.config import Settings, TargetConfig
from bridge.envs_broker import EnvBroker
from bridge.retry_policy import next_attempt
from bridge.router import Candidate, Request, route
from bridge.states import InvalidTransition, State
from bridge.store import AttemptRow, Changes, TaskRow, TaskStore
from schedulers import registry
from schedulers.base import (
    Backend,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
    TargetInfo,
)
from schedulers.errors import BackendUnavailable, NotSubmitted, SchedulerError

log = logging.getLogger(__name__)

#: Seconds between two probes of every target.
PROBE_INTERVAL_S = 60.0
#: A target whose probe has not answered in this many seconds is unhealthy until the next.
PROBE_TIMEOUT_S = 30.0


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
        self.capabilities = {t.name: registry.capabilities(t.kind) for t in settings.targets}
        self.infos: dict[str, TargetInfo] = {}
        self.broker_id = settings.effective_broker_id
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ended_without_report: dict[str, float] = {}
        self._cancel_sent: set[str] = set()
        self._status_seen: dict[int, tuple[int, int]] = {}  # attempt id -> status.json stat
        self._probed = asyncio.Event()  # the first probe of every target is done
        self._probing: asyncio.Task[None] | None = None
        self.envs = EnvBroker(settings, store)  # software builds tasks wait on

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start probing, dispatching and reconciling; returns at once. Dispatch and
        reconciliation begin after the first probe of every target, which a slow or
        unreachable scheduler can take tens of seconds to answer: the API serves
        meanwhile (a restarted broker takes tasks again at once)."""
        self._stopping = False
        self._probed.clear()
        self._probing = asyncio.create_task(self._probe_loop(), name="bridge-probe")
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="bridge-dispatch"),
            asyncio.create_task(self._reconcile_loop(), name="bridge-reconcile"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        self._probed.set()  # loops still waiting for a first probe see _stopping
        await asyncio.gather(*self._tasks)
        self._tasks = []
        for backend in self.backends.values():
            await backend.close()
        self.envs.close()

    def wake(self) -> None:
        self._wake.set()

    async def _probe_loop(self) -> None:
        """Every target's capacity, queue and health, now and every ``PROBE_INTERVAL_S``."""
        while True:
            try:
                await self.probe_targets()
            except Exception:  # one bad turn must not stop the probes
                log.exception("probing targets failed; retrying")
            self._probed.set()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _dispatch_loop(self) -> None:
        """New tasks go out as soon as they arrive (after a short gathering pause),
        without waiting for a reconcile pass."""
        cfg = self.settings.broker
        await self._probed.wait()
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
        await self._probed.wait()
        while not self._stopping:
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.store.renew_leases, self.broker_id, cfg.lease_s)
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed; retrying")
            await asyncio.sleep(max(0.0, cfg.poll_interval_s - (time.monotonic() - started)))

    async def probe_targets(self) -> None:
        """Probe every target at once: one that does not answer (bounded at
        ``PROBE_TIMEOUT_S``) holds up none of the others."""
        await asyncio.gather(*(self._probe(n, b) for n, b in self.backends.items()))

    async def _probe(self, name: str, backend: Backend) -> None:
        probe_started = time.monotonic()
        try:
            info = await asyncio.wait_for(backend.probe(), PROBE_TIMEOUT_S)
        except (SchedulerError, OSError, TimeoutError) as err:
            metrics.BACKEND_ERRORS.labels(name, "probe").inc()
            info = TargetInfo(
                name=name,
                kind=self.configs[name].kind,
                healthy=False,
                detail=str(err) or f"no answer to the probe in {PROBE_TIMEOUT_S:.0f} s",
            )
        metrics.PROBE_SECONDS.labels(name).observe(time.monotonic() - probe_started)
        self.infos[name] = info
        await asyncio.to_thread(self.store.save_target, name, info.kind, _info_dict(info))

    async def _unhealthy(self, name: str, detail: str) -> None:
        """A target that stopped answering takes no new tasks until a probe succeeds."""
        info = TargetInfo(name=name, kind=self.configs[name].kind, healthy=False, detail=detail)
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
        current = await asyncio.to_thread(self.store.current_attempts, tasks)
        orphans = [
            (t, a)
            for t in tasks
            if (a := current.get(t.id)) is not None and a.phase == Phase.PLACED
        ]
        fresh = [t for t in tasks if t.id not in {o.id for o, _ in orphans}]
        resubmit = await self._recover(orphans) if orphans else []
        prepared = await asyncio.to_thread(self._prepare_all, fresh)
        placed = time.monotonic()
        groups: dict[tuple[str, Resources], list[_Submission]] = defaultdict(list)
        for sub in [*resubmit, *prepared]:
            groups[(sub.attempt.target, sub.spec.resources)].append(sub)
        for (target, _), subs in groups.items():
            await self._submit(target, subs)
        log.debug(
            "dispatched %d tasks in %d group(s) in %.2f s (placing %.2f s)",
            len(prepared) + len(resubmit),
            len(groups),
            time.monotonic() - started,
            placed - started,
        )

    async def _recover(self, orphans: Sequence[tuple[TaskRow, AttemptRow]]) -> list[_Submission]:
        """Attempts placed but never recorded as submitted (the broker stopped between
        the two, or a submission's outcome was unknown): adopt what the backend knows,
        follow what an agent runs, and submit again -- same attempt, same job name --
        only what provably never started."""
        by_target: dict[str, list[tuple[TaskRow, AttemptRow]]] = defaultdict(list)
        for task, attempt in orphans:
            by_target[attempt.target].append((task, attempt))
        again: list[_Submission] = []
        for target, items in by_target.items():
            backend = self.backends.get(target)
            if backend is None:
                for task, attempt in items:
                    await asyncio.to_thread(
                        self._end_attempt, task, attempt, f"target {target} is gone", "LOST"
                    )
                continue
            names = {job_name(t.id, a.number): (t, a) for t, a in items}
            try:
                known = await backend.adopt(list(names))
            except (SchedulerError, OSError) as err:
                log.warning("cannot ask %s which jobs it knows, will retry: %s", target, err)
                continue
            facts = await asyncio.to_thread(self._orphan_facts, items, known)
            adopted: list[tuple[AttemptRow, str, str | None, str]] = []
            for (task, attempt), fact in zip(items, facts, strict=True):
                action, why = decide_orphan(fact)
                if action in (OrphanAction.ADOPT, OrphanAction.FOLLOW):
                    adopted.append(
                        (attempt, task.id, fact.known_job_id, f"attempt {attempt.number}: {why}")
                    )
                elif action == OrphanAction.LOST:
                    await asyncio.to_thread(self._end_attempt, task, attempt, why, "LOST")
                elif action == OrphanAction.RESUBMIT:
                    sub = await asyncio.to_thread(self._resubmission, task, attempt)
                    if sub is not None:
                        again.append(sub)
            if adopted:
                log.info("adopted %d job(s) on %s after a restart", len(adopted), target)
                await asyncio.to_thread(self.store.record_submissions, adopted)
        return again

    def _orphan_facts(
        self, items: Sequence[tuple[TaskRow, AttemptRow]], known: Mapping[str, str]
    ) -> list[OrphanFacts]:
        settle = self.settings.broker.adopt_settle_s
        now = datetime.now(UTC)
        out = []
        for task, attempt in items:
            status = workspace.read_status(task.work_url, attempt.number) if task.work_url else None
            claim = workspace.claim_state(task.work_url, attempt.number) if task.work_url else None
            placed = attempt.placed_time
            out.append(
                OrphanFacts(
                    known_job_id=known.get(job_name(task.id, attempt.number)),
                    settled=placed is None or (now - placed).total_seconds() > settle,
                    agent_state=(status or {}).get("state"),
                    claim_live=claim == "live",
                    claim_seen=claim is not None,
                )
            )
        return out

    def _end_attempt(self, task: TaskRow, attempt: AttemptRow, why: str, outcome: str) -> None:
        """Close an attempt that will not report; the task is retried while it may be."""
        changes = Changes()
        changes.finished.append((attempt.id, outcome))
        if attempt.number > self._retries(task):
            changes.move(task.id, State.SYSTEM_ERROR, f"attempt {attempt.number}: {why}")
        self.store.apply(changes)
        self.store.note(task.id, f"attempt {attempt.number} ended: {why}")

    def _resubmission(self, task: TaskRow, attempt: AttemptRow) -> _Submission | None:
        target = self.configs.get(attempt.target)
        if target is None or task.work_url is None:
            return None
        try:
            if not workspace.has_task(task.work_url):  # the crash came before it was written
                env = self.envs.admit(task, target, self.infos.get(target.name))
                if env is None:
                    return None
                self._write_task(task, target, task.work_url, attempt.number, env)
        except OSError as err:
            self._fail(task.id, f"could not write the work directory {task.work_url}: {err}")
            return None
        spec = self._job_spec(task, target, task.work_url, attempt.number)
        return _Submission(task, attempt, spec, attempt.reason or task.placement_reason)

    def _prepare_all(self, tasks: Sequence[TaskRow]) -> list[_Submission]:
        """Route every claimed task, start their attempts in one transaction and write
        each work directory's ``task.json``."""
        candidates = [Candidate(c, self.infos.get(c.name)) for c in self.settings.targets]
        policy, budgets = self.settings.routing, self.settings.budgets
        state = routing_state.load_state(self.store, self.settings)
        retried = [t for t in tasks if t.attempt > 0]
        history = self.store.attempts_for(t.seq for t in retried) if retried else {}
        placed: list[tuple[TaskRow, str, str, str]] = []
        spot: dict[str, bool] = {}  # task id -> may run on preemptible capacity
        envs: dict[str, dict[str, Any]] = {}
        build_state: dict[str, float | None] = {}  # build key -> wait, read once per turn
        for task in tasks:
            req = Request.from_requirements(task.requirements, task.owner, task.document)
            advice = next_attempt(
                routing_state.past_attempts(history.get(task.seq, [])), policy.retry
            )
            if advice.not_before > state.now:
                self.store.release(task.id)  # backing off; a later turn places it
                continue
            if advice.avoid or not advice.preemptible_ok:
                req = replace(
                    req, avoid=advice.avoid, preemptible=req.preemptible and advice.preemptible_ok
                )
            builds = self.envs.build_waits(
                task.document, [(c.config, c.info) for c in candidates], build_state
            )
            if builds:
                req = replace(req, build_wait_s=builds)
            placement = route(req, candidates, policy, budgets, state)
            metrics.PLACEMENTS.labels(
                placement.target or "", metrics.placement_kind(placement.reason)
            ).inc()
            if placement.wait:
                log.info("task %s waits: %s", task.id, placement.reason)
                self.store.release(task.id)
                continue
            if placement.target is None:
                self._fail(task.id, placement.reason)
                continue
            state = routing_state.charge(
                state, self.settings, req, placement.target, placement.est_cost_usd
            )
            target = self.configs[placement.target]
            env = self.envs.admit(task, target, self.infos.get(target.name))
            if env is None:  # waiting for its software build, or refused
                continue
            envs[task.id] = env
            base = target.work_url or self.settings.effective_work_url
            placed.append((task, target.name, placement.reason, workspace.task_url(base, task.id)))
            spot[task.id] = req.preemptible  # after a preemption the policy may say no
        attempts = self.store.place_many(placed)
        subs = []
        for (task, name, reason, work_url), attempt in zip(placed, attempts, strict=True):
            target = self.configs[name]
            try:
                self._write_task(task, target, work_url, attempt.number, envs[task.id])
            except OSError as err:
                self._fail(task.id, f"could not write the work directory {work_url}: {err}")
                continue
            spec = self._job_spec(task, target, work_url, attempt.number, spot.get(task.id, False))
            subs.append(_Submission(task, attempt, spec, reason))
        return subs

    def _write_task(
        self,
        task: TaskRow,
        target: TargetConfig,
        work_url: str,
        n: int,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        runtime: dict[str, Any] = {
            "container_runtime": task.requirements.container_runtime or target.container_runtime,
            "attempt": n,
            "fusion": {
                "mode": target.fusion,
                "cache_bytes": int(target.fusion_cache_gb * 2**30),
            },
        }
        if self.settings.public_url:
            runtime["api_url"] = self.settings.public_url
        runtime.update(extra or {})  # the software environment the task runs with
        workspace.write_task(work_url, _public_document(task), runtime)

    def _retries(self, task: TaskRow) -> int:
        """Retries the task may use: its own, else the routing policy's, else the broker's."""
        for value in (task.requirements.retries, self.settings.routing.retry.max_retries):
            if value is not None:
                return value
        return self.settings.broker.max_retries

    def _job_spec(
        self,
        task: TaskRow,
        target: TargetConfig,
        work_url: str,
        n: int,
        preemptible: bool | None = None,
    ) -> JobSpec:
        req = task.requirements
        log_path = workspace.local_log_path(work_url, n, self.settings.data_dir / "logs" / task.id)
        return JobSpec(
            name=job_name(task.id, n),
            argv=[
                *workspace.agent_command(target.agent_command),
                "run",
                work_url,
                "--attempt",
                str(n),
            ],
            workdir=str(log_path.parent),
            resources=Resources(
                cpus=req.cpus,
                memory_mb=int(req.ram_gb * 1024) if req.ram_gb else None,
                wall_time_s=req.wall_time_s,
                gpus=req.gpus,
                partition=req.partition,  # None: the target's default
                account=req.account,
                qos=req.qos,
                constraint=req.constraint,
                preemptible=req.preemptible if preemptible is None else preemptible,
            ),
            env=dict(target.env),
            stdout_path=str(log_path),
            stderr_path=str(log_path),
        )

    async def _submit(self, target: str, subs: Sequence[_Submission]) -> None:
        """Submit, as one array where the target allows; a busy target keeps tasks queued."""
        backend = self.backends[target]
        arrays = self.capabilities[target].native_arrays
        if len(subs) > 1 and arrays and self.configs[target].setting("array_batching", True):
            await self._submit_together(target, subs, backend.submit_array)
            return
        submit_many = getattr(backend, "submit_many", None)
        if submit_many is not None and len(subs) > 1 and self.capabilities[target].submit_many:
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
                except NotSubmitted:
                    full.set()
                    await asyncio.to_thread(self._requeue, sub)
                    return
                except BackendUnavailable as err:
                    full.set()
                    self._outcome_unknown(target, [sub], err)
                    return
                except (SchedulerError, OSError) as err:
                    metrics.BACKEND_ERRORS.labels(target, "submit").inc()
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
        except NotSubmitted:
            for sub in subs:
                await asyncio.to_thread(self._requeue, sub)
            return
        except BackendUnavailable as err:
            self._outcome_unknown(target, subs, err)
            return
        except (SchedulerError, OSError) as err:
            metrics.BACKEND_ERRORS.labels(target, "submit").inc()
            answers = [err] * len(subs)
        done = []
        for sub, answer in zip(subs, answers, strict=True):
            if isinstance(answer, str):
                done.append((sub, answer))
            elif isinstance(answer, NotSubmitted):
                await asyncio.to_thread(self._requeue, sub)
            elif isinstance(answer, BackendUnavailable):
                self._outcome_unknown(target, [sub], answer)
            else:
                await asyncio.to_thread(
                    self._fail, sub.task.id, f"{target} refused the job: {answer}"
                )
        await asyncio.to_thread(self._submitted_all, done)

    def _submitted_all(self, pairs: Sequence[tuple[_Submission, str]]) -> None:
        now = datetime.now(UTC)
        for sub, _ in pairs:
            wait = (now - sub.task.creation_time).total_seconds()
            metrics.QUEUE_WAIT.labels(sub.attempt.target).observe(max(0.0, wait))
        self.store.record_submissions(
            [
                (sub.attempt, sub.task.id, job_id, f"placed on {sub.reason}; job {job_id}")
                for sub, job_id in pairs
            ]
        )

    def _outcome_unknown(self, target: str, subs: Sequence[_Submission], err: Exception) -> None:
        """The submission may or may not have reached the backend: the attempts stay
        ``placed`` and a later dispatch pass adopts or resubmits them by name."""
        log.warning(
            "%s: %d submission(s) of unknown outcome, will adopt: %s", target, len(subs), err
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
                metrics.BACKEND_ERRORS.labels(target, "status").inc()
                log.warning("cannot read job states from %s: %s", target, err)
                await self._unhealthy(target, f"job states unreadable: {err}")
                continue
            out.update({(target, job_id): st for job_id, st in states.items()})
        return out

    def _advance(
        self, task: TaskRow, attempt: AttemptRow | None, job: JobStatus | None, changes: Changes
    ) -> None:
        if (attempt is None or attempt.finished) and task.state == State.INITIALIZING:
            self.envs.check_waiting(task, changes)
        if attempt is None or task.work_url is None or attempt.phase != Phase.SUBMITTED:
            return
        signature = workspace.status_signature(task.work_url, attempt.number)
        if signature is not None and self._status_seen.get(attempt.id) == signature:
            status: dict[str, Any] = attempt.status  # unchanged since last pass
        else:
            status = workspace.read_status(task.work_url, attempt.number) or {}
            if signature is not None:
                self._status_seen[attempt.id] = signature
        if status and status != attempt.status:
            changes.statuses.append((attempt.id, status, _time(status.get("start_time"))))
        agent_state = status.get("state")
        if attempt.backend_job_id is None and agent_state not in AGENT_FINAL:
            # followed without a job id (adopted from the work directory): the claim's
            # heartbeat is the only sign of life
            job = JobStatus(JobState.LOST, reason="no job id; its agent stopped")
        ended = job is not None and job.state.finished and agent_state not in AGENT_FINAL
        silent_for = 0.0
        claim_live = False
        if ended:
            first_seen = self._ended_without_report.setdefault(task.id, time.monotonic())
            silent_for = time.monotonic() - first_seen
            claim_live = workspace.claim_state(task.work_url, attempt.number) == "live"
        else:
            self._ended_without_report.pop(task.id, None)
        logs = status.get("system_logs") or []
        decision = decide(
            Facts(
                task_state=task.state,
                agent_state=agent_state,
                agent_last_log=str(logs[-1]) if logs else "",
                executor_exit_codes=tuple(e.get("exit_code") for e in status.get("executors", [])),
                job=job,
                job_label=f"{attempt.target} job {attempt.backend_job_id or '(adopted)'}",
                silent_for_s=silent_for,
                claim_live=claim_live,
                attempt=attempt.number,
                retries=self._retries(task),
            )
        )
        self._apply_decision(task, attempt, decision, changes, status)

    def _apply_decision(
        self,
        task: TaskRow,
        attempt: AttemptRow,
        decision: Decision,
        changes: Changes,
        status: dict[str, Any],
    ) -> None:
        """``status``: the agent's report as just read (``attempt.status`` is the one
        stored before this pass, without what the agent wrote last)."""
        if decision.verdict == Verdict.STARTED and decision.state is not None:
            changes.move(task.id, decision.state, decision.reason)
        elif decision.verdict in (Verdict.FINISH, Verdict.RETRY) and decision.state is not None:
            metrics.FINISHES.labels(decision.state.value, attempt.target).inc()
            metrics.record_fusion(attempt.target, status)
            self._ended_without_report.pop(task.id, None)
            self._status_seen.pop(attempt.id, None)
            changes.finished.append((attempt.id, decision.outcome))
            changes.move(task.id, decision.state, decision.reason)

    def _finish(
        self, task: TaskRow, attempt: AttemptRow, state: State, reason: str, changes: Changes
    ) -> None:
        self._status_seen.pop(attempt.id, None)
        metrics.FINISHES.labels(state.value, attempt.target).inc()
        metrics.record_fusion(attempt.target, attempt.status)
        changes.finished.append((attempt.id, state.value))
        changes.move(task.id, state, reason)

    async def _cancel_all(
        self, items: Sequence[tuple[TaskRow, AttemptRow | None, JobStatus | None]]
    ) -> None:
        """CANCELING tasks: cancel their jobs (one call per target), then mark them CANCELED
        once the job is gone."""
        changes = Changes()
        to_cancel: dict[str, list[str]] = defaultdict(list)
        unnamed: dict[str, list[tuple[TaskRow, AttemptRow]]] = defaultdict(list)
        for task, attempt, job in items:
            if attempt is None or attempt.finished:
                changes.move(task.id, State.CANCELED, "nothing was running")
            elif attempt.backend_job_id is None:
                unnamed[attempt.target].append((task, attempt))
            elif job is not None and job.state.finished:
                reason = f"{attempt.target} job {attempt.backend_job_id} cancelled"
                self._finish(task, attempt, State.CANCELED, reason, changes)
            elif attempt.backend_job_id not in self._cancel_sent:
                to_cancel[attempt.target].append(attempt.backend_job_id)
        for target, pairs in unnamed.items():
            await self._cancel_by_name(target, pairs, changes)
        for target, job_ids in to_cancel.items():
            try:
                await self.backends[target].cancel(job_ids)
                self._cancel_sent.update(job_ids)
            except (SchedulerError, OSError) as err:
                log.warning("cancel of %s on %s failed, will retry: %s", job_ids, target, err)
        await asyncio.to_thread(self.store.apply, changes)

    async def _cancel_by_name(
        self, target: str, pairs: Sequence[tuple[TaskRow, AttemptRow]], changes: Changes
    ) -> None:
        """Cancel attempts with no job id recorded (placed when a broker stopped, or
        followed from the work directory): find their jobs by name first."""
        backend = self.backends.get(target)
        names = {job_name(t.id, a.number): (t, a) for t, a in pairs}
        try:
            known = await backend.adopt(list(names)) if backend else {}
            if backend and known:
                await backend.cancel(list(known.values()))
        except (SchedulerError, OSError) as err:
            log.warning("cancel by name on %s failed, will retry: %s", target, err)
            return
        settle = self.settings.broker.adopt_settle_s
        now = datetime.now(UTC)
        for name, (task, attempt) in names.items():
            placed = attempt.placed_time
            in_flight = placed is not None and (now - placed).total_seconds() <= settle
            if name in known:
                reason = f"{target} job {known[name]} cancelled"
            elif attempt.phase == Phase.PLACED and in_flight:
                continue  # its submission may still be in flight: look again next pass
            else:
                reason = "no job of this attempt was running"
            self._finish(task, attempt, State.CANCELED, reason, changes)

    def _fail(self, task_id: str, reason: str) -> None:
        with contextlib.suppress(InvalidTransition):
            self.store.transition(task_id, State.SYSTEM_ERROR, reason)


def _public_document(task: TaskRow) -> dict[str, Any]:
    doc = {k: v for k, v in task.document.items() if not k.startswith("_")}
    doc["id"] = task.id
    return doc


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
