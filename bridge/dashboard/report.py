"""A workflow's report: one self-contained HTML file (inline CSS and SVG, no script).

For every task tagged ``key=value``: where each attempt ran and why, its duration, CPU
time and peak memory (as the agent measured each executor), the bytes it read from and
published to object storage through Fusion (as the agent's mount counted them), cost,
and for failures the tail of their logs -- across every backend, since it reads only
the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment

from bridge.dashboard import charts
from bridge.store import utcnow
from bridge.store_reads import FAILED, TaskTimes

LOG_TAIL = 2000


@dataclass
class TaskSummary:
    id: str
    name: str
    state: str
    target: str
    attempts: int
    reason: str
    start: datetime | None
    end: datetime | None
    duration_s: float
    cpu_s: float
    peak_rss: int
    cost: float
    tails: list[tuple[str, str]]  # (label, text) for failed tasks
    # Bytes read from and published to object storage through Fusion (all attempts)
    fusion_read: int = 0
    fusion_published: int = 0


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def summarise(task: TaskTimes, rates: dict[str, float]) -> TaskSummary:
    now = utcnow()
    cpu_s = 0.0
    peak = 0
    cost = 0.0
    fusion_read = fusion_published = 0
    start: datetime | None = None
    end: datetime | None = None
    cpus = float((task.document.get("resources") or {}).get("cpu_cores") or 1)
    for a in task.attempts:
        a_start = _parse(a.status.get("start_time")) or a.start_time or a.submitted_time
        a_end = _parse(a.status.get("end_time")) or a.end_time
        if a_start is not None:
            start = a_start if start is None else min(start, a_start)
            span_end = a_end or now
            end = span_end if end is None else max(end, span_end)
            cost += (span_end - a_start).total_seconds() / 3600 * cpus * rates.get(a.target, 0.0)
        for ex in a.status.get("executors", []):
            cpu_s += float(ex.get("cpu_time_s") or 0)
            peak = max(peak, int(ex.get("peak_rss_bytes") or 0))
        fusion = a.status.get("fusion")
        if isinstance(fusion, dict):
            fusion_read += _count(fusion.get("bytes_read"))
            fusion_published += _count(fusion.get("bytes_published"))
    tails: list[tuple[str, str]] = []
    if task.line.state in FAILED and task.attempts:
        last = task.attempts[-1]
        for i, ex in enumerate(last.status.get("executors", [])):
            for stream in ("stderr", "stdout"):
                text = str(ex.get(stream) or "")
                if text:
                    tails.append((f"executor {i} {stream}", text[-LOG_TAIL:]))
        system = [str(s) for s in last.status.get("system_logs", [])]
        if system:
            tails.append(("system log", "\n".join(system)[-LOG_TAIL:]))
    duration = (end - start).total_seconds() if start and end else 0.0
    return TaskSummary(
        id=task.line.id,
        name=task.line.name,
        state=task.line.state,
        target=task.line.target or "",
        attempts=len(task.attempts),
        reason=task.placement_reason,
        start=start,
        end=end,
        duration_s=duration,
        cpu_s=cpu_s,
        peak_rss=peak,
        cost=cost,
        tails=tails,
        fusion_read=fusion_read,
        fusion_published=fusion_published,
    )


def _count(value: Any) -> int:
    """A counter from an agent's report: a non-negative int, anything else is 0."""
    return value if isinstance(value, int) and value > 0 else 0


def render(
    env: Environment, key: str, value: str, tasks: list[TaskTimes], rates: dict[str, float]
) -> str:
    rows = [summarise(t, rates) for t in tasks]
    rows.sort(key=lambda r: (r.state not in FAILED, r.start or utcnow()))
    spans = [
        charts.Span(r.name or r.id[:8], r.start, r.end, r.state)
        for r in sorted(rows, key=lambda r: r.start or utcnow())
        if r.start and r.end
    ]
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    starts = [r.start for r in rows if r.start]
    ends = [r.end for r in rows if r.end]
    return env.get_template("report.html").render(
        key=key,
        value=value,
        rows=rows,
        states=states,
        generated=utcnow(),
        wall_s=(max(ends) - min(starts)).total_seconds() if starts and ends else 0.0,
        cpu_s=sum(r.cpu_s for r in rows),
        cost=sum(r.cost for r in rows),
        fusion_read=sum(r.fusion_read for r in rows),
        fusion_published=sum(r.fusion_published for r in rows),
        timeline=charts.gantt(spans),
        durations=charts.horizontal_bars(
            [(r.name or r.id[:8], r.duration_s, charts.colour(r.state)) for r in rows], " s"
        ),
        cpu_chart=charts.horizontal_bars(
            [(r.name or r.id[:8], r.cpu_s, "#1565c0") for r in rows], " s"
        ),
        mem_chart=charts.horizontal_bars(
            [(r.name or r.id[:8], r.peak_rss / 2**20, "#6a1b9a") for r in rows], " MiB"
        ),
        failures=[r for r in rows if r.state in FAILED],
    )
