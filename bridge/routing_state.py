"""What the router needs from the database, read once per dispatch turn.

The router is pure; this module is its one reader.  :func:`load_state` builds a
:class:`~bridge.router.RoutingState` from the attempts table:

* **spend per budget** -- finished attempts on paid targets at what they ran for
  (submitted to end, at the target's prices); attempts still active at their full
  estimate (requested wall time), so a burst of placements cannot overshoot;
* **running tasks** per budget and per target (active attempts);
* **recent SYSTEM_ERRORs** per target (for degraded targets);
* **the broker's own wait estimate** for targets whose slots (``max_parallel``) are
  all taken: the soonest a running attempt will end by its wall time.

:func:`past_attempts` reads a task's attempt history for the retry policy, and
:func:`charge` adds a placement to a state so tasks placed in the same turn count.

Outcomes are read from the attempt's stored status: the agent's final ``state``, or the
``outcome`` the broker records when a job ended without the agent reporting.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from bridge.config import Settings, TargetConfig
from bridge.requirements import Requirements
from bridge.retry_policy import PastAttempt
from bridge.router import Request, RoutingState, estimated_cost_usd, runs_on_spot
from bridge.routing_policy import is_cloud
from bridge.store import ATTEMPTS, AttemptRow, T, TaskStore

FAILED_OUTCOMES = frozenset({"SYSTEM_ERROR"})


def outcome_of(status: dict[str, Any], recorded: str = "") -> str | None:
    """How a finished attempt ended: its recorded outcome, else its stored status."""
    value = recorded or status.get("outcome") or status.get("state")
    return str(value) if value else None


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def load_state(store: TaskStore, settings: Settings, now: datetime | None = None) -> RoutingState:
    """The routing state as the database has it now (one query)."""
    now_dt = now or datetime.now(UTC)
    now_s = now_dt.timestamp()
    policy = settings.routing
    configs = {t.name: t for t in settings.targets}
    paid = [n for n, c in configs.items() if is_cloud(c.kind, c.routing)]
    cutoff = datetime.fromtimestamp(now_s - policy.degraded_window_s, UTC)
    cols = (
        ATTEMPTS.c.target,
        ATTEMPTS.c.submitted_time,
        ATTEMPTS.c.start_time,
        ATTEMPTS.c.end_time,
        ATTEMPTS.c.status,
        ATTEMPTS.c.outcome,
        ATTEMPTS.c.finished,
        T.c.owner,
        T.c.document,
    )
    wanted = [ATTEMPTS.c.finished.is_(False), ATTEMPTS.c.end_time >= cutoff]
    if paid and any(b.usd is not None for b in settings.budgets):
        wanted.append(ATTEMPTS.c.target.in_(paid))
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(*cols).join(T, T.c.seq == ATTEMPTS.c.task_seq).where(or_(*wanted))
        ).all()

    spent: dict[str, float] = defaultdict(float)
    running: dict[str, int] = defaultdict(int)
    per_target: dict[str, int] = defaultdict(int)
    failures: dict[str, list[float]] = defaultdict(list)
    remaining: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        cfg = configs.get(r.target)
        if cfg is None:
            continue
        status = json.loads(r.status or "{}")
        end = _epoch(r.end_time)
        recent = end is not None and end >= now_s - policy.degraded_window_s
        if r.finished:
            if recent and end is not None and outcome_of(status, r.outcome) in FAILED_OUTCOMES:
                failures[r.target].append(end)
        else:
            per_target[r.target] += 1
        doc = json.loads(r.document)
        req = Request.from_requirements(Requirements.of(doc), r.owner, doc)
        if not r.finished:
            begun = _epoch(r.start_time) or _epoch(r.submitted_time) or now_s
            wall = req.wall_time_s or policy.default_wall_time_s
            remaining[r.target].append(max(60.0, begun + wall - now_s))
        cloud = is_cloud(cfg.kind, cfg.routing)
        for b in settings.budgets:
            if not b.matches(req.owner, req.tags, cfg.name, cloud):
                continue
            if not r.finished:
                running[b.name] += 1
            if b.usd is not None and cloud:
                spent[b.name] += _spend(req, cfg, settings, r, end, now_s)
    extra = {
        name: min(remaining[name])
        for name, cfg in configs.items()
        if (limit := cfg.setting("max_parallel")) is not None
        and per_target[name] >= limit
        and remaining[name]
    }
    return RoutingState(
        now=now_s,
        spent_usd=dict(spent),
        running=dict(running),
        running_per_target=dict(per_target),
        failures={k: tuple(v) for k, v in failures.items()},
        extra_wait_s=extra,
    )


def _spend(
    req: Request, cfg: TargetConfig, settings: Settings, row: Any, end: float | None, now: float
) -> float:
    """An attempt's cost: its estimate while active, what it ran for once finished."""
    if not row.finished:
        return estimated_cost_usd(req, cfg, settings.routing)
    begun = _epoch(row.submitted_time) or _epoch(row.start_time)
    if begun is None or end is None:
        return 0.0
    r = cfg.routing
    prices = r.spot if runs_on_spot(req, cfg) and r.spot is not None else r.prices
    hours = max(0.0, end - begun) / 3600.0
    return hours * prices.hourly(req.cpus, req.ram_gb or 0.0, req.gpus)


def charge(
    state: RoutingState, settings: Settings, req: Request, target: str, cost_usd: float
) -> RoutingState:
    """``state`` with one more task placed on ``target`` (for the rest of the turn)."""
    cfg = next((t for t in settings.targets if t.name == target), None)
    if cfg is None:
        return state
    cloud = is_cloud(cfg.kind, cfg.routing)
    spent = dict(state.spent_usd)
    running = dict(state.running)
    for b in settings.budgets:
        if b.matches(req.owner, req.tags, target, cloud):
            running[b.name] = running.get(b.name, 0) + 1
            if b.usd is not None:
                spent[b.name] = spent.get(b.name, 0.0) + cost_usd
    per_target = dict(state.running_per_target)
    per_target[target] = per_target.get(target, 0) + 1
    return replace(state, spent_usd=spent, running=running, running_per_target=per_target)


def past_attempts(attempts: Sequence[AttemptRow]) -> list[PastAttempt]:
    """A task's finished attempts, oldest first, for :func:`bridge.retry_policy.next_attempt`."""
    out = []
    for a in sorted(attempts, key=lambda a: a.number):
        if not a.finished:
            continue
        end = _epoch(a.end_time) or 0.0
        out.append(
            PastAttempt(a.number, a.target, outcome_of(a.status, a.outcome) or "UNKNOWN", end)
        )
    return out
