"""Routing policy through the real broker, with local targets standing in for HPC and
cloud queues (each a real LocalBackend running real ``bridge-agent`` processes).

Only the spot reclaim is faked (:class:`SpotReclaimed`): no backend here can take
capacity back for real, so that one target answers every job as PREEMPTED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest

from bridge import workspace
from bridge.broker import Broker
from bridge.config import Settings, TargetConfig
from bridge.routing_policy import Budget, RetryPolicy, RoutingPolicy, TargetRouting
from bridge.states import State
from bridge.store import TaskStore
from schedulers.base import Backend, JobSpec, JobState, JobStatus, TargetInfo
from schedulers.local import LocalBackend

pytestmark = pytest.mark.router

TERMINAL = {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED}


class SpotReclaimed:
    """FAKE, for a fault we cannot produce here: spot capacity taken back from every
    job before it starts.  Jobs never run; each reads as PREEMPTED."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.submitted: list[str] = []
        self.preemptible: list[bool] = []

    async def submit(self, spec: JobSpec) -> str:
        self.submitted.append(spec.name)
        self.preemptible.append(spec.resources.preemptible)
        return f"spot-{len(self.submitted)}"

    async def submit_array(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        return [await self.submit(s) for s in specs]

    async def adopt(self, names: Sequence[str]) -> Mapping[str, str]:
        return {}

    async def status(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        return {j: JobStatus(JobState.PREEMPTED, reason="spot capacity reclaimed") for j in job_ids}

    async def cancel(self, job_ids: Sequence[str]) -> None:
        return None

    async def probe(self) -> TargetInfo:
        return TargetInfo(name=self.name, kind="local", cpus=64, memory_mb=64_000)

    async def close(self) -> None:
        return None


def local(name: str, **kw: Any) -> TargetConfig:
    return TargetConfig(name=name, kind="local", container_runtime="none", **kw)


def task(command: list[str], **extra: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": command}], **extra}


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def run_broker(
    settings: Settings,
    store: TaskStore,
    backends: Mapping[str, Backend],
    scenario: Callable[[Broker], Awaitable[None]],
) -> None:
    settings.broker.poll_interval_s = 0.2
    workspace.prepare_base(settings.effective_work_url)

    async def main() -> None:
        broker = Broker(settings, store, backends)
        await broker.start()
        try:
            await scenario(broker)
        finally:
            await broker.stop()

    asyncio.run(main())


def finished(store: TaskStore, task_id: str) -> Callable[[], bool]:
    return lambda: store.get(task_id).state in TERMINAL


def reasons(store: TaskStore, task_id: str) -> list[str]:
    return [e["reason"] for e in store.events(task_id)]


def test_a_preempted_spot_task_is_retried_on_another_target(
    settings: Settings, store: TaskStore
) -> None:
    settings = settings.model_copy(
        update={
            "targets": [
                local(
                    "aws-spot",
                    routing=TargetRouting(
                        cloud=True,
                        spot_only=True,
                        spot={"cpu_hour": 0.01},
                        prices={"cpu_hour": 0.01},
                    ),
                ),
                local("aws", routing=TargetRouting(cloud=True, prices={"cpu_hour": 0.05})),
            ],
            "routing": RoutingPolicy(retry=RetryPolicy(backoff_s=0.2, max_retries=2)),
        }
    )
    spot = SpotReclaimed("aws-spot")
    backends = {"aws-spot": spot, "aws": LocalBackend("aws")}

    async def scenario(_: Broker) -> None:
        tid = store.create(task(["echo", "done"], resources={"preemptible": True}))
        await wait_for(finished(store, tid), "the task to finish")
        row = store.get(tid)
        assert row.state == State.COMPLETE, reasons(store, tid)
        attempts = store.attempts_for([row.seq])[row.seq]
        assert [a.target for a in attempts] == ["aws-spot", "aws"]
        assert attempts[0].outcome == "PREEMPTED"
        said = reasons(store, tid)
        assert any("aws-spot" in r and "est. $0.01 spot" in r for r in said), said
        assert any("ended PREEMPTED" in r and "retrying (attempt 2)" in r for r in said), said
        assert any(
            r.startswith("placed on aws:") and "not aws-spot: spot capacity only" in r for r in said
        ), said
        assert len(spot.submitted) == 1 and spot.preemptible == [True]

    run_broker(settings, store, backends, scenario)


def test_a_target_that_keeps_failing_stops_receiving_work(
    settings: Settings, store: TaskStore
) -> None:
    # "flaky" cannot start the agent at all (a real failure: its command exits 1), and
    # wins every tie by name until it is degraded.
    settings = settings.model_copy(
        update={
            "targets": [local("flaky", agent_command=["false"]), local("steady")],
            "routing": RoutingPolicy(degraded_after=2, degraded_window_s=600, degraded_for_s=600),
        }
    )
    backends = {"flaky": LocalBackend("flaky"), "steady": LocalBackend("steady")}

    async def scenario(_: Broker) -> None:
        placed = []
        for _n in range(3):
            tid = store.create(task(["true"]))
            await wait_for(finished(store, tid), "a task to finish")
            row = store.get(tid)
            placed.append((row.target, row.state))
        assert placed == [
            ("flaky", State.SYSTEM_ERROR),
            ("flaky", State.SYSTEM_ERROR),
            ("steady", State.COMPLETE),
        ]
        assert "not flaky: degraded (2 system errors in 10 min" in store.get(tid).placement_reason

    run_broker(settings, store, backends, scenario)


def test_a_budget_running_out_stops_bursting_with_the_reason(
    settings: Settings, store: TaskStore
) -> None:
    # hpc: one slot; aws: a burst target at $1 per CPU-hour; budget proj: $1.50.
    # A fills hpc (wall time 1 h, so hpc's wait is an hour), B bursts (est. $1.00),
    # C would need another $1.00 while B runs: it stays for hpc, and says why.
    settings = settings.model_copy(
        update={
            "targets": [
                local("hpc", max_parallel=1),
                local(
                    "aws",
                    routing=TargetRouting(cloud=True, burst=True, prices={"cpu_hour": 1.0}),
                ),
            ],
            "routing": RoutingPolicy(burst_wait_s=60, wait_usd_per_hour=10),
            "budgets": [Budget(name="proj", tag="project=proj", usd=1.5)],
        }
    )
    backends = {"hpc": LocalBackend("hpc", max_parallel=1), "aws": LocalBackend("aws")}
    hour = {"backend_parameters": {"wall_time": "3600"}}
    tags = {"project": "proj"}

    async def scenario(_: Broker) -> None:
        a = store.create(task(["sleep", "300"], resources=hour, tags=tags))
        await wait_for(lambda: store.get(a).state == State.RUNNING, "A to run")
        assert store.get(a).target == "hpc"
        b = store.create(task(["sleep", "300"], resources=hour, tags=tags))
        await wait_for(lambda: store.get(b).state == State.RUNNING, "B to run")
        assert store.get(b).target == "aws"
        assert store.get(b).placement_reason.startswith(
            "aws: hpc wait 60 min > 1 min; est. $1.00; budget proj $1.50 left"
        )
        c = store.create(task(["echo", "c"], resources=hour, tags=tags))
        await wait_for(
            lambda: "budget proj exhausted" in store.get(c).placement_reason, "C to be held"
        )
        assert store.get(c).state == State.QUEUED
        assert "not aws: budget proj exhausted: est. $1.00 needed, $0.50 left" in (
            store.get(c).placement_reason
        )
        store.request_cancel(a)
        await wait_for(finished(store, c), "C to finish")
        assert (store.get(c).target, store.get(c).state) == ("hpc", State.COMPLETE)
        store.request_cancel(b)
        await wait_for(finished(store, b), "B to be cancelled")

    run_broker(settings, store, backends, scenario)
