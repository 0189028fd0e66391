"""Placement: which target runs a task, and why -- in one line of words.

:func:`route` is pure: it takes the task's :class:`Request`, each target's config and
what its probe last said (:class:`Candidate`), the global :class:`RoutingPolicy` and
budgets, and a :class:`RoutingState` snapshot (spend, running tasks, recent failures,
the time), and returns a :class:`Placement`.  Nothing here reads a clock, a database
or a backend, so the same code places jobs in the broker and in ``bench/burst_sim.py``.

The steps, in order:

1. **Hard rules** reject targets that cannot run the task at all (named target, allowed
   users, health, CPUs, memory, GPUs, wall time, CPU microarchitecture).
2. **Temporary rules** reject targets for now: a degraded target (many SYSTEM_ERRORs
   lately), a budget that would be exceeded (dollars or concurrent tasks), a burst
   target while the non-burst targets' wait is under the threshold.  When only these
   stand in the way the task *waits* (``Placement.wait``) instead of failing.
3. **Scores** order what is left: estimated cost (prices; spot prices for preemptible
   tasks; internal core-hours for HPC; moving inputs out of their bucket's region) plus
   the estimated start (queue wait, plus boot latency for cloud, plus the build of the
   task's software for that target's CPUs when it is not built yet) priced per hour.
   So of two targets alike, the one whose build is ready takes the task.

The reason names the winner, what decided, its estimated cost and any budget left,
e.g. ``aws-spot: hpc wait 42 min > 10 min; est. $0.03; budget proj-x $12.40 left``,
followed by why every other target lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from bridge.config import TargetConfig
from bridge.requirements import Requirements
from bridge.routing_policy import Budget, RoutingPolicy, is_cloud
from schedulers.base import TargetInfo

_DEFAULT_POLICY = RoutingPolicy()


@dataclass(frozen=True)
class Candidate:
    config: TargetConfig
    info: TargetInfo | None


@dataclass(frozen=True)
class Request:
    """What routing needs to know about one task (read once at submission)."""

    cpus: int = 1
    ram_gb: float | None = None
    disk_gb: float | None = None
    gpus: int = 0
    wall_time_s: int | None = None
    arch: str | None = None  # archspec microarchitecture name
    preemptible: bool = False
    target: str | None = None
    retries: int | None = None
    partition: str | None = None
    owner: str = "anonymous"
    tags: Mapping[str, str] = field(default_factory=dict)
    # (url, size in bytes or None) of each input that has a url
    inputs: tuple[tuple[str, int | None], ...] = ()
    # Targets to stay off when anything else fits (after a preemption or a failure).
    avoid: frozenset[str] = frozenset()
    # Seconds until the task's software is ready on a target (its build for that
    # target's CPUs not done yet); a target absent here has it ready, or needs none.
    build_wait_s: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_requirements(cls, req: Requirements, owner: str, doc: Mapping[str, Any]) -> Request:
        return cls(
            cpus=req.cpus,
            ram_gb=req.ram_gb,
            disk_gb=req.disk_gb,
            gpus=req.gpus,
            wall_time_s=req.wall_time_s,
            arch=req.arch,
            preemptible=req.preemptible,
            target=req.target,
            retries=req.retries,
            partition=req.partition,
            owner=owner,
            tags={str(k): str(v) for k, v in (doc.get("tags") or {}).items()},
            inputs=tuple((i["url"], None) for i in doc.get("inputs") or [] if i.get("url")),
        )


@dataclass(frozen=True)
class RoutingState:
    """What the broker knows right now that a placement depends on.

    ``spent_usd`` and ``running`` are per budget name; ``running_per_target`` counts
    this broker's active tasks; ``failures`` holds the end times (seconds, same clock
    as ``now``) of recent SYSTEM_ERROR attempts per target; ``extra_wait_s`` is the
    broker's own wait estimate for a target (e.g. one whose slots are all taken),
    used when larger than the probe's.
    """

    now: float = 0.0
    spent_usd: Mapping[str, float] = field(default_factory=dict)
    running: Mapping[str, int] = field(default_factory=dict)
    running_per_target: Mapping[str, int] = field(default_factory=dict)
    failures: Mapping[str, Sequence[float]] = field(default_factory=dict)
    extra_wait_s: Mapping[str, float] = field(default_factory=dict)


EMPTY_STATE = RoutingState()


@dataclass(frozen=True)
class Placement:
    target: str | None
    reason: str
    rejected: dict[str, str] = field(default_factory=dict)
    # True: nothing fits *for now* (budget, degraded, burst rules) -- keep it queued.
    wait: bool = False
    est_cost_usd: float = 0.0
    est_start_s: float = 0.0
    preemptible: bool = False  # whether the chosen target runs it on spot capacity


Rule = Callable[[Request, Candidate], str | None]  # returns why the target is unfit


def _named(req: Request, cand: Candidate) -> str | None:
    if req.target and req.target != cand.config.name:
        return f"the task asks for target {req.target!r}"
    return None


def _allowed(req: Request, cand: Candidate) -> str | None:
    users = cand.config.allowed_users
    if users is not None and req.owner not in users:
        return f"user {req.owner!r} may not use it"
    return None


def _healthy(_: Request, cand: Candidate) -> str | None:
    if cand.info is not None and not cand.info.healthy:
        return f"unhealthy ({cand.info.detail or 'probe failed'})"
    return None


def _cpus(req: Request, cand: Candidate) -> str | None:
    limit = cand.config.max_cpus or (cand.info.cpus if cand.info else None)
    if limit is not None and req.cpus > limit:
        return f"{req.cpus} CPUs requested, it has {limit}"
    return None


def _memory(req: Request, cand: Candidate) -> str | None:
    if req.ram_gb is None:
        return None
    limit = cand.config.max_ram_gb
    if limit is None and cand.info and cand.info.memory_mb:
        limit = cand.info.memory_mb / 1024
    if limit is not None and req.ram_gb > limit:
        return f"{req.ram_gb:g} GB RAM requested, it has {limit:.1f} GB"
    return None


def _gpus(req: Request, cand: Candidate) -> str | None:
    if req.gpus and cand.config.kind == "local":
        return f"{req.gpus} GPUs requested, the local target has none configured"
    return None


def _wall_time(req: Request, cand: Candidate) -> str | None:
    limit = cand.config.routing.max_wall_time_s
    if req.wall_time_s is not None and limit is not None and req.wall_time_s > limit:
        return f"wall time {_duration(req.wall_time_s)} exceeds its limit of {_duration(limit)}"
    return None


def _spot_only(req: Request, cand: Candidate) -> str | None:
    if cand.config.routing.spot_only and not req.preemptible:
        return "spot capacity only, and the task is not preemptible"
    return None


@lru_cache(maxsize=256)
def _arch_verdict(host: str, wanted: str) -> str | None:
    import archspec.cpu

    targets = archspec.cpu.TARGETS
    if wanted not in targets:
        return f"unknown microarchitecture {wanted!r}"
    if host not in targets or not targets[host] >= targets[wanted]:
        return f"its CPUs are {host}, which cannot run {wanted} code"
    return None


def _microarchitecture(req: Request, cand: Candidate) -> str | None:
    if not req.arch:
        return None
    host = (cand.info.microarchitecture if cand.info else None) or cand.config.routing.arch
    if host is None:
        return f"its CPU microarchitecture is unknown (task needs {req.arch})"
    return _arch_verdict(host, req.arch)


RULES: tuple[Rule, ...] = (
    _named,
    _allowed,
    _cpus,
    _memory,
    _gpus,
    _wall_time,
    _spot_only,
    _microarchitecture,
)


# -- estimates ----------------------------------------------------------------------


def estimated_start_s(cand: Candidate, state: RoutingState, req: Request) -> float:
    """Queue wait (the probe's, or the broker's own when larger) plus boot latency, plus
    the software build when it is not done yet (the job is queued once it is built)."""
    wait = cand.info.queue_wait_s if cand.info else 0.0
    wait = max(wait, state.extra_wait_s.get(cand.config.name, 0.0))
    build = req.build_wait_s.get(cand.config.name, 0.0)
    return wait + build + cand.config.routing.boot_latency_s


def runs_on_spot(req: Request, cfg: TargetConfig) -> bool:
    return req.preemptible and cfg.routing.spot is not None


def estimated_cost_usd(req: Request, cfg: TargetConfig, policy: RoutingPolicy) -> float:
    """Compute for the requested wall time (or the default), plus moving the inputs."""
    hours = (req.wall_time_s or policy.default_wall_time_s) / 3600.0
    r = cfg.routing
    if is_cloud(cfg.kind, r):
        prices = r.spot if runs_on_spot(req, cfg) and r.spot is not None else r.prices
        compute = hours * prices.hourly(req.cpus, req.ram_gb or 0.0, req.gpus)
    else:
        compute = hours * req.cpus * policy.internal_core_hour_usd
    return compute + moving_cost_usd(req, cfg, policy)


def moving_cost_usd(req: Request, cfg: TargetConfig, policy: RoutingPolicy) -> float:
    """Egress for inputs whose bucket lives in another region or site than the target."""
    region = cfg.routing.region
    if region is None or not req.inputs or not policy.bucket_regions:
        return 0.0
    gb = 0.0
    for url, size in req.inputs:
        home = policy.bucket_regions.get(_bucket(url))
        if home is not None and home != region:
            gb += size / 1e9 if size is not None else policy.default_input_gb
    return gb * policy.egress_usd_per_gb


def _bucket(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return ""
    if scheme in ("s3", "gs", "az"):
        return rest.split("/", 1)[0]
    return ""


def degraded_until(name: str, state: RoutingState, policy: RoutingPolicy) -> float | None:
    """When a target that failed too often lately may take work again (None: healthy)."""
    times = state.failures.get(name)
    if not times:
        return None
    recent = [t for t in times if state.now - t <= policy.degraded_window_s]
    if len(recent) < policy.degraded_after:
        return None
    until = max(recent) + policy.degraded_for_s
    return until if until > state.now else None


# -- the decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    cand: Candidate
    start_s: float
    cost_usd: float
    score: float
    budget_note: str


def route(
    req: Request,
    candidates: Sequence[Candidate],
    policy: RoutingPolicy = _DEFAULT_POLICY,
    budgets: Sequence[Budget] = (),
    state: RoutingState = EMPTY_STATE,
) -> Placement:
    if not candidates:
        return Placement(None, "no targets are configured")
    rejected: dict[str, str] = {}
    fit: list[Candidate] = []
    for cand in candidates:
        for rule in RULES:
            why = rule(req, cand)
            if why is not None:
                rejected[cand.config.name] = why
                break
        else:
            fit.append(cand)
    if not fit:
        detail = "; ".join(f"{name}: {why}" for name, why in rejected.items())
        return Placement(None, f"no target can run this task ({detail})", rejected)

    # Targets to avoid after a preemption or failure, while anything else fits.
    if req.avoid and any(c.config.name not in req.avoid for c in fit):
        for c in fit:
            if c.config.name in req.avoid:
                rejected[c.config.name] = "avoided after its previous attempt"
        fit = [c for c in fit if c.config.name not in req.avoid]

    held: dict[str, str] = {}  # temporary rejections: the task may wait for these
    usable: list[_Scored] = []
    for cand in fit:
        name = cand.config.name
        # Health is for now: a target that failed its probe comes back (a restarted
        # controller, a network blip), so a task that only it could run waits for it.
        sick = _healthy(req, cand)
        if sick is not None:
            held[name] = sick
            continue
        until = degraded_until(name, state, policy)
        if until is not None:
            n = sum(1 for t in state.failures[name] if state.now - t <= policy.degraded_window_s)
            held[name] = (
                f"degraded ({n} system errors in {_duration(policy.degraded_window_s)}; "
                f"avoided for {_duration(until - state.now)} more)"
            )
            continue
        cost = estimated_cost_usd(req, cand.config, policy)
        over, note = _budgets(req, cand.config, cost, budgets, state)
        if over is not None:
            held[name] = over
            continue
        start = estimated_start_s(cand, state, req)
        score = cost + start / 3600.0 * policy.wait_usd_per_hour
        usable.append(_Scored(cand, start, cost, score, note))

    usable, burst_note = _apply_burst(req, usable, held, policy)
    rejected.update(held)
    if not usable:
        detail = "; ".join(f"{name}: {why}" for name, why in rejected.items())
        return Placement(None, f"waiting: no target may take it now ({detail})", rejected, True)

    usable.sort(key=lambda s: (s.score, s.start_s, s.cand.config.name))
    best = usable[0]
    name = best.cand.config.name
    parts = [f"{name}: " + _why_best(req, best, usable, burst_note)]
    if build := req.build_wait_s.get(name):
        parts.append(f"software build for it est. {_minutes(build)}")
    if cost_text := _cost_text(best, req):
        parts.append(cost_text)
    if best.budget_note:
        parts.append(best.budget_note)
    reason = "; ".join(parts)
    if rejected:
        reason += "; not " + "; not ".join(f"{n}: {w}" for n, w in rejected.items())
    return Placement(
        name,
        reason,
        rejected,
        est_cost_usd=best.cost_usd,
        est_start_s=best.start_s,
        preemptible=runs_on_spot(req, best.cand.config),
    )


def _budgets(
    req: Request,
    cfg: TargetConfig,
    cost: float,
    budgets: Sequence[Budget],
    state: RoutingState,
) -> tuple[str | None, str]:
    """(why a budget holds the task off this target, or None; the tightest '$ left' note)."""
    cloud = is_cloud(cfg.kind, cfg.routing)
    note = ""
    tightest: float | None = None
    for b in budgets:
        if not b.matches(req.owner, req.tags, cfg.name, cloud):
            continue
        running = state.running.get(b.name, 0)
        if b.max_running is not None and running >= b.max_running:
            return f"budget {b.name}: {running} of {b.max_running} tasks running", ""
        if b.usd is not None:
            left = b.usd - state.spent_usd.get(b.name, 0.0)
            if cost > left:
                return (
                    f"budget {b.name} exhausted: est. ${cost:.2f} needed, ${max(left, 0):.2f} left",
                    "",
                )
            if tightest is None or left < tightest:
                tightest = left
                note = f"budget {b.name} ${left:.2f} left"
    return None, note


def _apply_burst(
    req: Request, usable: list[_Scored], held: dict[str, str], policy: RoutingPolicy
) -> tuple[list[_Scored], str]:
    """Keep burst targets only while every usable non-burst target waits past its
    threshold; returns the survivors and the words that justified a burst."""
    bursts = [s for s in usable if s.cand.config.routing.burst]
    if not bursts:
        return usable, ""
    others = [s for s in usable if not s.cand.config.routing.burst]
    if not others:
        return usable, "no non-burst target may take it"
    below = []
    for s in others:
        limit = policy.burst_threshold(req.partition or s.cand.config.setting("partition"))
        if s.start_s <= limit:
            below.append((s, limit))
    if below:
        s, limit = min(below, key=lambda p: p[0].start_s)
        why = (
            f"{s.cand.config.name} wait {_minutes(s.start_s)} <= burst threshold {_minutes(limit)}"
        )
        for b in bursts:
            held[b.cand.config.name] = why
        return others, ""
    s = min(others, key=lambda o: o.start_s)
    limit = policy.burst_threshold(req.partition or s.cand.config.setting("partition"))
    return usable, f"{s.cand.config.name} wait {_minutes(s.start_s)} > {_minutes(limit)}"


def _why_best(req: Request, best: _Scored, usable: Sequence[_Scored], burst_note: str) -> str:
    if req.target:
        return "named by the task"
    if best.cand.config.routing.burst and burst_note:
        return burst_note
    if len(usable) == 1:
        return "the only target that may take it"
    runner = usable[1]
    if best.start_s < runner.start_s:
        runner_name = runner.cand.config.name
        text = (
            f"est. start in {_minutes(best.start_s)} vs {_minutes(runner.start_s)} on {runner_name}"
        )
        built = best.cand.config.name not in req.build_wait_s
        if built and runner_name in req.build_wait_s:
            text = f"its software is built; {text} (build not done there)"
        return text
    return f"cheapest of {len(usable)} usable targets"


def _cost_text(best: _Scored, req: Request) -> str:
    cfg = best.cand.config
    if not is_cloud(cfg.kind, cfg.routing):
        text = f"est. ${best.cost_usd:.2f} internal" if best.cost_usd else ""
    else:
        text = f"est. ${best.cost_usd:.2f}"
        if runs_on_spot(req, cfg):
            text += " spot"
    return text


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
