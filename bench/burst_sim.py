"""Burst-to-cloud, simulated: the router's real code places every job.

A discrete-event simulation of one HPC machine beside an unlimited cloud.

* **HPC**: ``--cores`` cores, FCFS with EASY backfilling on *requested* times (the head
  of the queue gets a reservation; later jobs start early only if they do not delay
  it).  Jobs run for their actual run time (cut at the requested time).
* **Cloud**: two targets like AWS Batch queues -- ``aws-spot`` (spot capacity only,
  preemptible jobs) and ``aws`` (on-demand) -- with unlimited capacity, a boot latency,
  and spot interruptions at ``--spot-rate`` per hour.  An interrupted job is retried
  by :mod:`bridge.retry_policy` (backoff; the spot queue is avoided next; after a
  preemption it goes on-demand or back to HPC, as the router decides).
* **Placement**: every job, and every retry, goes through :func:`bridge.router.route`
  with the HPC target's queue-wait estimate (the requested core-seconds ahead of it,
  spread over the machine, as a backfill scheduler's expected start would say).

Policies: ``hpc-only``, ``cloud-only`` and ``burst`` at several wait thresholds.
Input: a seeded synthetic workload (``--days``) or a Standard Workload Format trace of
the Parallel Workloads Archive (``--swf FILE``).  Prints a table per policy, then one
JSON line with the figures per policy.

Speed: the queue lives in numpy arrays, so each backfill pass is a few vectorised
scans rather than a Python loop over the queue (no quadratic step); a 30-day trace of
~30,000 jobs takes seconds per policy.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.config import TargetConfig
from bridge.retry_policy import PastAttempt, next_attempt, should_retry
from bridge.router import Candidate, Request, RoutingState, route
from bridge.routing_policy import Budget, Prices, RoutingPolicy, TargetRouting
from schedulers.base import TargetInfo

BOUND_S = 10.0  # bounded slowdown's runtime floor
BIG = np.iinfo(np.int64).max // 4


@dataclass
class Job:
    id: int
    submit: float
    cores: int
    runtime: float
    req: float
    user: int = 0
    spot_ok: bool = False  # the job may run on preemptible capacity
    # outcome
    preemptible: bool = False
    start: float = -1.0
    end: float = -1.0
    where: str = ""
    attempts: list[PastAttempt] = field(default_factory=list)


# -- workloads ------------------------------------------------------------------------


def read_swf(path: Path, cores: int | None, seed: int, preemptible: float) -> tuple[list[Job], int]:
    """Jobs of an SWF trace (fields: 2 submit, 4 run time, 5/8 processors, 9 requested
    time, 12 user).  Jobs with no run time or processors are skipped (cancelled before
    start); larger jobs than the machine are cut to its size."""
    rng = random.Random(seed)
    max_procs: int | None = None
    jobs: list[Job] = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if line.startswith(";"):
                key, _, value = line[1:].partition(":")
                if key.strip() == "MaxProcs" and value.strip().isdigit():
                    max_procs = int(value)
                continue
            f = line.split()
            if len(f) < 12:
                continue
            submit, run = float(f[1]), float(f[3])
            procs = int(float(f[7])) if int(float(f[7])) > 0 else int(float(f[4]))
            req = float(f[8])
            if run <= 0 or procs <= 0:
                continue
            if req <= 0:
                req = run
            jobs.append(
                Job(
                    len(jobs),
                    submit,
                    procs,
                    min(run, req),
                    req,
                    int(float(f[11])),
                    rng.random() < preemptible,
                )
            )
    machine = cores or max_procs or max((j.cores for j in jobs), default=1)
    for j in jobs:
        j.cores = min(j.cores, machine)
    jobs.sort(key=lambda j: j.submit)
    t0 = jobs[0].submit if jobs else 0.0
    for i, j in enumerate(jobs):
        j.submit -= t0
        j.id = i
    return jobs, machine


def synthetic(days: float, cores: int, load: float, seed: int, preemptible: float) -> list[Job]:
    """A loaded HPC centre: arrivals peak in working hours, sizes are powers of two
    (most jobs small), run times log-normal, requested times 1-5x over-estimated."""
    rng = random.Random(seed)
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    weights = [30, 10, 12, 14, 12, 9, 6, 4, 2]
    sizes_w = [(s, w) for s, w in zip(sizes, weights, strict=True) if s <= cores]
    mean_core_s = 0.0
    samples = 20_000
    probe = random.Random(seed + 1)
    for _ in range(samples):
        s = probe.choices([s for s, _ in sizes_w], [w for _, w in sizes_w])[0]
        mean_core_s += s * min(math.exp(probe.gauss(7.6, 1.5)), 48 * 3600)
    mean_core_s /= samples
    rate = load * cores / mean_core_s  # jobs per second, on average over a day
    jobs: list[Job] = []
    t = 0.0
    end = days * 86400
    peak = 1.6
    while True:
        t += rng.expovariate(rate * peak)
        if t >= end:
            break
        hour = (t / 3600) % 24
        intensity = 1 + 0.6 * math.sin((hour - 8) / 24 * 2 * math.pi)  # mean 1
        if rng.random() > intensity / peak:
            continue  # thinning: fewer arrivals at night
        size = rng.choices([s for s, _ in sizes_w], [w for _, w in sizes_w])[0]
        run = min(math.exp(rng.gauss(7.6, 1.5)), 48 * 3600)
        req = min(max(run * rng.uniform(1.0, 5.0), 300.0), 72 * 3600)
        req = math.ceil(req / 300) * 300
        jobs.append(
            Job(len(jobs), t, size, run, req, rng.randrange(200), rng.random() < preemptible)
        )
    return jobs


def write_swf(jobs: Sequence[Job], cores: int, path: Path) -> None:
    with open(path, "w") as fh:
        fh.write(f"; Synthetic workload written by bench/burst_sim.py\n; MaxProcs: {cores}\n")
        for j in jobs:
            fields = [j.id + 1, round(j.submit), -1, round(j.runtime), j.cores, -1, -1]
            fields += [j.cores, round(j.req), -1, 1, j.user + 1, 1, 1, 1, -1, -1, -1]
            fh.write(" ".join(str(x) for x in fields) + "\n")


# -- the HPC machine: FCFS + EASY backfilling -------------------------------------------


class Machine:
    """FCFS + EASY on requested times; queue and running set in numpy arrays."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.free = cores
        cap = 1024
        self.q_cores = np.full(cap, BIG, dtype=np.int64)
        self.q_req = np.zeros(cap)
        self.q_job: list[Job | None] = [None] * cap
        self.q_len = 0
        self.head = 0
        self.dead = 0
        self.r_end = np.zeros(cores + 1)
        self.r_cores = np.zeros(cores + 1, dtype=np.int64)
        self.r_free = list(range(cores, -1, -1))
        # Requested core-seconds ahead of a new job: queued, plus running's remainder
        self.queued_work = 0.0
        self.run_cores = 0
        self.run_core_end = 0.0  # sum of cores * expected end
        self.done_run = 0.0  # finished jobs: core-seconds used and requested
        self.done_req = 0.0

    def wait_estimate(self, now: float, cores: int) -> float:
        """When a new job of ``cores`` would start, as a backfill scheduler would guess:
        the queued work ahead of it drains at the machine's rate (requested times
        scaled by how long jobs here really ran against their request), and it cannot
        start before enough running jobs end to free its cores."""
        if self.head >= self.q_len and cores <= self.free:
            return 0.0
        ahead = self.queued_work * self.accuracy / self.cores
        if cores <= self.free:
            return ahead
        live = np.nonzero(self.r_cores)[0]
        order = live[np.argsort(self.r_end[live])]
        cum = self.free + np.cumsum(self.r_cores[order])
        k = min(int(np.searchsorted(cum, cores)), len(order) - 1)
        freed = max(0.0, float(self.r_end[order[k]]) - now) * self.accuracy
        return max(ahead, freed)

    @property
    def accuracy(self) -> float:
        """Actual over requested core-seconds of finished jobs (1 until enough ended)."""
        if self.done_req < 1e6:
            return 1.0
        return self.done_run / self.done_req

    def enqueue(self, job: Job) -> None:
        if self.q_len == len(self.q_job):
            self._compact(grow=True)
        i = self.q_len
        self.q_cores[i] = job.cores
        self.q_req[i] = job.req
        self.q_job[i] = job
        self.q_len += 1
        self.queued_work += job.cores * job.req

    def _compact(self, grow: bool = False) -> None:
        alive = np.nonzero(self.q_cores[: self.q_len] < BIG)[0]
        n = len(alive)
        cap = len(self.q_job)
        if grow and n * 2 > cap:
            cap *= 2
        cores = np.full(cap, BIG, dtype=np.int64)
        req = np.zeros(cap)
        cores[:n] = self.q_cores[alive]
        req[:n] = self.q_req[alive]
        jobs: list[Job | None] = [None] * cap
        for k, i in enumerate(alive):
            jobs[k] = self.q_job[i]
        self.q_cores, self.q_req, self.q_job = cores, req, jobs
        self.q_len, self.head, self.dead = n, 0, 0

    def _start(self, i: int, now: float, started: list[tuple[Job, float]]) -> None:
        job = self.q_job[i]
        assert job is not None
        self.q_cores[i] = BIG
        self.q_job[i] = None
        self.dead += 1
        self.free -= job.cores
        self.queued_work -= job.cores * job.req
        slot = self.r_free.pop()
        self.r_end[slot] = now + job.req
        self.r_cores[slot] = job.cores
        self.run_cores += job.cores
        self.run_core_end += job.cores * (now + job.req)
        started.append((job, float(slot)))

    def finish(self, slot: int, job: Job) -> None:
        self.done_run += job.cores * job.runtime
        self.done_req += job.cores * job.req
        self.free += job.cores
        self.run_cores -= job.cores
        self.run_core_end -= job.cores * self.r_end[slot]
        self.r_cores[slot] = 0
        self.r_free.append(slot)

    def schedule(self, now: float) -> list[tuple[Job, float]]:
        """Start what may start now; returns (job, slot) pairs."""
        started: list[tuple[Job, float]] = []
        while True:
            while self.head < self.q_len and self.q_cores[self.head] >= BIG:
                self.head += 1
            if self.head >= self.q_len:
                break
            need = int(self.q_cores[self.head])
            if need <= self.free:
                self._start(self.head, now, started)
                continue
            if self.free > 0:
                self._backfill(now, need, started)
            break
        if self.dead > 4096 and self.dead * 2 > self.q_len:
            self._compact()
        return started

    def _backfill(self, now: float, need: int, started: list[tuple[Job, float]]) -> None:
        live = np.nonzero(self.r_cores)[0]
        order = live[np.argsort(self.r_end[live], kind="stable")]
        cum = self.free + np.cumsum(self.r_cores[order])
        k = int(np.searchsorted(cum, need))
        shadow = max(float(self.r_end[order[k]]), now)
        extra = int(cum[k]) - need
        i = self.head + 1
        while self.free > 0 and i < self.q_len:
            cores = self.q_cores[i : self.q_len]
            fits = (cores <= self.free) & (
                (cores <= extra) | (self.q_req[i : self.q_len] <= shadow - now)
            )
            hit = int(np.argmax(fits))
            if not fits[hit]:
                break
            j = i + hit
            job = self.q_job[j]
            assert job is not None
            if now + job.req > shadow:
                extra -= job.cores
            self._start(j, now, started)
            i = j + 1


# -- the simulation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cloud:
    boot_s: float = 180.0
    on_demand: float = 0.048  # per core-hour
    spot: float = 0.0144
    spot_rate_per_h: float = 0.05


def targets(policy: str, cores: int, cloud: Cloud) -> list[TargetConfig]:
    hpc = TargetConfig(
        name="hpc",
        kind="slurm",
        routing=TargetRouting(max_wall_time_s=None),
    )
    burst = policy.startswith("burst")
    spot = TargetConfig(
        name="aws-spot",
        kind="aws_batch",
        job_queue="simulated",
        routing=TargetRouting(
            burst=burst,
            boot_latency_s=cloud.boot_s,
            prices=Prices(cpu_hour=cloud.spot),
            spot=Prices(cpu_hour=cloud.spot),
            spot_only=True,
        ),
    )
    demand = TargetConfig(
        name="aws",
        kind="aws_batch",
        job_queue="simulated",
        routing=TargetRouting(
            burst=burst, boot_latency_s=cloud.boot_s, prices=Prices(cpu_hour=cloud.on_demand)
        ),
    )
    if policy == "hpc-only":
        return [hpc]
    if policy == "cloud-only":
        return [spot, demand]
    return [hpc, spot, demand]


def simulate(
    jobs: Sequence[Job],
    cores: int,
    policy: str,
    threshold_s: float,
    cloud: Cloud,
    seed: int,
    budget_usd: float | None = None,
    wait_usd_per_hour: float | None = None,
) -> dict[str, float]:
    rng = random.Random(seed)
    routing = RoutingPolicy(burst_wait_s=threshold_s)
    if wait_usd_per_hour is not None:
        routing = routing.model_copy(update={"wait_usd_per_hour": wait_usd_per_hour})
    budgets = [Budget(name="burst", usd=budget_usd)] if budget_usd is not None else []
    configs = targets(policy, cores, cloud)
    machine = Machine(cores)
    hpc = next((c for c in configs if c.name == "hpc"), None)
    # the cloud queues' probes say the same every time: no queue, unknown CPUs
    fixed = {c.name: Candidate(c, TargetInfo(c.name, "aws_batch")) for c in configs if c is not hpc}
    spent: dict[str, float] = {"burst": 0.0}
    cost = 0.0
    cloud_core_s = 0.0
    hpc_core_s = 0.0
    events: list[tuple[float, int, int, Job, float]] = []  # time, seq, kind, job, slot
    seq = 0
    SUBMIT, HPC_END, CLOUD_END, PREEMPT = 0, 1, 2, 3
    for j in jobs:
        events.append((j.submit, seq, SUBMIT, j, 0.0))
        seq += 1
    heapq.heapify(events)
    limit = routing.retry.max_retries if routing.retry.max_retries is not None else 3
    state_budget = RoutingState(spent_usd=spent)

    def place(job: Job, now: float) -> None:
        nonlocal seq, cost, cloud_core_s
        advice = next_attempt(job.attempts, routing.retry)
        req = Request(
            cpus=job.cores,
            wall_time_s=int(job.req),
            preemptible=job.preemptible and advice.preemptible_ok,
            owner=f"u{job.user}",
            avoid=advice.avoid,
        )
        cands = [
            Candidate(
                c,
                TargetInfo(
                    "hpc", "slurm", cpus=cores, queue_wait_s=machine.wait_estimate(now, job.cores)
                ),
            )
            if c is hpc
            else fixed[c.name]
            for c in configs
        ]
        state = RoutingState(now=now, spent_usd=spent) if budgets else state_budget
        placement = route(req, cands, routing, budgets, state)
        target = placement.target
        if target is None:  # a budget or rule holds it: HPC takes it when nothing else
            target = "hpc" if any(c.name == "hpc" for c in configs) else configs[-1].name
        job.where = target
        if target == "hpc":
            machine.enqueue(job)
            return
        start = now + cloud.boot_s
        spot = target == "aws-spot"
        price = cloud.spot if spot else cloud.on_demand
        run = job.runtime
        if spot and cloud.spot_rate_per_h > 0:
            interrupt = rng.expovariate(cloud.spot_rate_per_h / 3600.0)
            if interrupt < run:
                billed = job.cores * (interrupt + cloud.boot_s) / 3600.0 * price
                cost += billed
                spent["burst"] += billed
                cloud_core_s += job.cores * interrupt
                heapq.heappush(events, (start + interrupt, seq, PREEMPT, job, 0.0))
                seq += 1
                return
        billed = job.cores * (run + cloud.boot_s) / 3600.0 * price
        cost += billed
        spent["burst"] += billed
        cloud_core_s += job.cores * run
        job.start, job.end = start, start + run
        heapq.heappush(events, (job.end, seq, CLOUD_END, job, 0.0))
        seq += 1

    while events:
        now, _, kind, job, slot = heapq.heappop(events)
        if kind == SUBMIT:
            place(job, now)
        elif kind == HPC_END:
            machine.finish(int(slot), job)
        elif kind == PREEMPT:
            job.attempts.append(PastAttempt(len(job.attempts) + 1, job.where, "PREEMPTED", now))
            decision = should_retry("PREEMPTED", len(job.attempts), limit)
            if decision.retry:
                advice = next_attempt(job.attempts, routing.retry)
                heapq.heappush(events, (max(now, advice.not_before), seq, SUBMIT, job, 0.0))
                seq += 1
            else:  # out of retries: no more spot; placed once more, never interrupted
                job.preemptible = False
                heapq.heappush(events, (now, seq, SUBMIT, job, 0.0))
                seq += 1
            continue
        if kind in (SUBMIT, HPC_END):
            for started, s in machine.schedule(now):
                started.start, started.end = now, now + started.runtime
                hpc_core_s += started.cores * started.runtime
                heapq.heappush(events, (started.end, seq, HPC_END, started, s))
                seq += 1
    return _figures(jobs, cost, hpc_core_s, cloud_core_s)


def _figures(
    jobs: Sequence[Job], cost: float, hpc_core_s: float, cloud_core_s: float
) -> dict[str, float]:
    submit = np.array([j.submit for j in jobs])
    start = np.array([j.start for j in jobs])
    end = np.array([j.end for j in jobs])
    run = np.array([j.runtime for j in jobs])
    wait = start - submit
    slowdown = np.maximum((wait + run) / np.maximum(run, BOUND_S), 1.0)
    total = hpc_core_s + cloud_core_s
    return {
        "jobs": len(jobs),
        "makespan_h": round(float(end.max() - submit.min()) / 3600, 2),
        "mean_wait_min": round(float(wait.mean()) / 60, 2),
        "p95_wait_min": round(float(np.percentile(wait, 95)) / 60, 2),
        "mean_bounded_slowdown": round(float(slowdown.mean()), 2),
        "cost_usd": round(cost, 2),
        "hpc_core_hours": round(hpc_core_s / 3600, 1),
        "cloud_fraction": round(cloud_core_s / total, 4) if total else 0.0,
    }


def _reset(jobs: Sequence[Job]) -> None:
    for j in jobs:
        j.start = j.end = -1.0
        j.where = ""
        j.attempts = []
        j.preemptible = j.spot_ok


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--swf", type=Path, help="a Standard Workload Format trace")
    ap.add_argument("--cores", type=int, help="machine size (default: the trace's MaxProcs)")
    ap.add_argument("--days", type=float, default=1.0, help="synthetic workload length")
    ap.add_argument("--load", type=float, default=1.2, help="synthetic offered load")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--preemptible", type=float, default=0.7, help="share of spot-able jobs")
    ap.add_argument("--thresholds", default="10,60,240", help="burst wait thresholds, minutes")
    ap.add_argument("--boot-s", type=float, default=180.0)
    ap.add_argument("--on-demand", type=float, default=0.048, help="$ per core-hour")
    ap.add_argument("--spot", type=float, default=0.0144, help="$ per core-hour")
    ap.add_argument("--spot-rate", type=float, default=0.05, help="interruptions per hour")
    ap.add_argument("--budget", type=float, help="cloud budget for burst policies, $")
    ap.add_argument(
        "--wait-usd-per-hour",
        type=float,
        help="router: an hour of waiting in $ (default: config's)",
    )
    ap.add_argument("--write-swf", type=Path, help="write the synthetic workload and exit")
    args = ap.parse_args(argv)

    if args.swf:
        jobs, cores = read_swf(args.swf, args.cores, args.seed, args.preemptible)
        source = f"{args.swf.name}"
    else:
        cores = args.cores or 1024
        jobs = synthetic(args.days, cores, args.load, args.seed, args.preemptible)
        source = f"synthetic {args.days:g} d, load {args.load:g}, seed {args.seed}"
    if args.write_swf:
        write_swf(jobs, cores, args.write_swf)
        print(f"wrote {len(jobs)} jobs to {args.write_swf}")
        return 0
    if not jobs:
        print("no jobs in the workload", file=sys.stderr)
        return 2
    offered = sum(j.cores * j.runtime for j in jobs) / (cores * (max(j.submit for j in jobs) or 1))
    print(f"workload: {source}: {len(jobs)} jobs on {cores} cores, offered load {offered:.2f}")
    cloud = Cloud(args.boot_s, args.on_demand, args.spot, args.spot_rate)
    policies = [("hpc-only", 0.0), ("cloud-only", 0.0)]
    policies += [(f"burst-{m}m", float(m) * 60) for m in args.thresholds.split(",") if m]
    results: dict[str, dict[str, float]] = {}
    for name, threshold in policies:
        _reset(jobs)
        t0 = time.perf_counter()
        fig = simulate(
            jobs,
            cores,
            name,
            threshold,
            cloud,
            args.seed,
            args.budget if name.startswith("burst") else None,
            args.wait_usd_per_hour,
        )
        fig["sim_s"] = round(time.perf_counter() - t0, 2)
        results[name] = fig
        print(f"\n== {name} ==")
        for key, value in fig.items():
            print(f"  {key:24s} {value}")
    base, cloud_only = results["hpc-only"], results["cloud-only"]
    print("\npolicy        wait vs hpc-only   spend vs cloud-only   cloud share")
    for name, fig in results.items():
        w = fig["mean_wait_min"] / base["mean_wait_min"] if base["mean_wait_min"] else float("nan")
        c = fig["cost_usd"] / cloud_only["cost_usd"] if cloud_only["cost_usd"] else float("nan")
        fig["wait_ratio"] = round(w, 3)
        fig["spend_ratio"] = round(c, 3)
        print(f"{name:12s}  {w:16.2f}   {c:19.3f}   {fig['cloud_fraction']:10.3f}")
    print(json.dumps({"workload": source, "cores": cores, "jobs": len(jobs), "policies": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
