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
import threading
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

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


class _RequestCache:
    """What routing needs of a task (resources, owner, tags), by task ``seq``.

    A task's requirements, owner and tags never change after submission, so each
    document is parsed once, not on every dispatch turn. Bounded, least recently used
    dropped first."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._items: OrderedDict[int, Request] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, seq: int) -> Request | None:
        with self._lock:
            found = self._items.get(seq)
            if found is not None:
                self._items.move_to_end(seq)
            return found

    def put(self, seq: int, request: Request) -> None:
        with self._lock:
            self._items[seq] = request
            self._items.move_to_end(seq)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)


#: One cache per store (a process may open several databases).
_CACHES: weakref.WeakKeyDictionary[TaskStore, _RequestCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()
#: Task documents read per query when filling the cache.
_DOCUMENTS_PER_QUERY = 500


def _requests(store: TaskStore, seqs: set[int]) -> dict[int, Request]:
    """Requests for the tasks ``seqs``: cached, the others read in a few queries."""
    with _CACHES_LOCK:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = _RequestCache()
    out: dict[int, Request] = {}
    missing = []
    for seq in seqs:
        found = cache.get(seq)
        if found is None:
            missing.append(seq)
        else:
            out[seq] = found
    if not missing:
        return out
    with store.engine.connect() as conn:
        for i in range(0, len(missing), _DOCUMENTS_PER_QUERY):
            chunk = missing[i : i + _DOCUMENTS_PER_QUERY]
            query = select(T.c.seq, T.c.owner, T.c.document).where(T.c.seq.in_(chunk))
            for row in conn.execute(query):
                doc = json.loads(row.document)
                req = Request.from_requirements(Requirements.of(doc), row.owner, doc)
                cache.put(row.seq, req)
                out[row.seq] = req
    return out


def load_state(store: TaskStore, settings: Settings, now: datetime | None = None) -> RoutingState:
    """The routing state as the database has it now.

    Each part is one narrow query: active attempts per target are counted by the
    database; recent failures read finished attempts of the degraded window only;
    budgets read only attempts on the targets they can match (active ones, and finished
    ones on paid targets when a budget has a dollar limit); wall times are read only for
    targets whose slots are all taken. Task documents are read for budgets and full
    targets only, each at most once per store (:class:`_RequestCache`)."""
    now_dt = now or datetime.now(UTC)
    now_s = now_dt.timestamp()
    policy = settings.routing
    configs = {t.name: t for t in settings.targets}
    cloud = {n: is_cloud(c.kind, c.routing) for n, c in configs.items()}
    cutoff = datetime.fromtimestamp(now_s - policy.degraded_window_s, UTC)
    a = ATTEMPTS.c
    active = a.finished.is_(False)
    with store.engine.connect() as conn:
        counted = conn.execute(
            select(a.target, func.count()).where(active).group_by(a.target)
        ).all()
        per_target = {t: int(n) for t, n in counted if t in configs}
        failures: dict[str, list[float]] = defaultdict(list)
        finished = conn.execute(
            select(a.target, a.end_time, a.status, a.outcome).where(
                a.finished.is_(True), a.end_time >= cutoff
            )
        )
        for r in finished:
            end = _epoch(r.end_time)
            if r.target not in configs or end is None:
                continue
            if outcome_of(json.loads(r.status or "{}"), r.outcome) in FAILED_OUTCOMES:
                failures[r.target].append(end)

        full = sorted(
            name
            for name, cfg in configs.items()
            if (limit := cfg.setting("max_parallel")) is not None
            and per_target.get(name, 0) >= limit
        )
        # Targets some budget can match: only those attempts need owner and tags.
        budgeted = sorted(
            name
            for name in configs
            if any(b.covers_target(name, cloud[name]) for b in settings.budgets)
        )
        paid_usd = any(b.usd is not None for b in settings.budgets)
        rows: Sequence[Any] = []
        if budgeted or full:
            wanted = []
            if budgeted:
                wanted.append(and_(active, a.target.in_(budgeted)))
                paid = [n for n in budgeted if cloud[n]]
                if paid_usd and paid:
                    wanted.append(and_(a.finished.is_(True), a.target.in_(paid)))
            if full:
                wanted.append(and_(active, a.target.in_(full)))
            cols = (a.task_seq, a.target, a.finished, a.submitted_time, a.start_time, a.end_time)
            rows = conn.execute(select(*cols).where(or_(*wanted))).all()
    requests = _requests(store, {r.task_seq for r in rows}) if rows else {}

    spent: dict[str, float] = defaultdict(float)
    running: dict[str, int] = defaultdict(int)
    remaining: dict[str, list[float]] = defaultdict(list)
    full_set = set(full)
    for r in rows:
        cfg = configs[r.target]
        req = requests.get(r.task_seq)
        if req is None:
            continue
        if not r.finished and r.target in full_set:
            begun = _epoch(r.start_time) or _epoch(r.submitted_time) or now_s
            wall = req.wall_time_s or policy.default_wall_time_s
            remaining[r.target].append(max(60.0, begun + wall - now_s))
        on_cloud = cloud[r.target]
        end = _epoch(r.end_time)
        for b in settings.budgets:
            if not b.matches(req.owner, req.tags, cfg.name, on_cloud):
                continue
            if not r.finished:
                running[b.name] += 1
            if b.usd is not None and on_cloud:
                spent[b.name] += _spend(req, cfg, settings, r, end, now_s)
    extra = {name: min(remaining[name]) for name in full if remaining[name]}
    return RoutingState(
        now=now_s,
        spent_usd=dict(spent),
        running=dict(running),
        running_per_target=per_target,
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
