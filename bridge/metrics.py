"""Prometheus metrics.

Counters and histograms of what this process saw (submissions, finishes, queue waits,
placement decisions, backend errors, probe latency) live in one process-wide
registry and are bumped where the event happens.  Gauges of the stored state (tasks
by state and target) are read from the database at scrape time, so several brokers
sharing a database all report the same totals.

Fusion byte counts and cache hits are exported from the ``fusion`` section of an
agent's final ``status.json`` (``bytes_read``, ``bytes_written``, ``cache_hits``,
``cache_misses``: the counters its mount wrote when it ended, see
:mod:`fusion.io_stats`, or what copy-staging moved).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from bridge import store_reads

REGISTRY = CollectorRegistry(auto_describe=True)

SUBMISSIONS = Counter("bridge_task_submissions", "Tasks accepted by POST /tasks", registry=REGISTRY)
FINISHES = Counter(
    "bridge_task_finishes",
    "Tasks that reached a final state, by state and target",
    ["state", "target"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "bridge_queue_wait_seconds",
    "From submission to the backend accepting the job",
    ["target"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
    registry=REGISTRY,
)
PLACEMENTS = Counter(
    "bridge_placement_decisions",
    "Routing decisions, by the kind of reason",
    ["target", "kind"],
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter(
    "bridge_backend_errors",
    "Backend calls that failed (probe, submit, status, cancel)",
    ["target", "operation"],
    registry=REGISTRY,
)
PROBE_SECONDS = Histogram(
    "bridge_probe_seconds",
    "How long a target's health probe took",
    ["target"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, float("inf")),
    registry=REGISTRY,
)
FUSION_BYTES = Counter(
    "bridge_fusion_bytes",
    "Bytes moved through Fusion as reported by agents",
    ["target", "direction"],
    registry=REGISTRY,
)
FUSION_CACHE = Counter(
    "bridge_fusion_cache_lookups",
    "Fusion cache lookups reported by agents",
    ["target", "result"],
    registry=REGISTRY,
)


def placement_kind(reason: str) -> str:
    """A short, bounded label for a routing reason (free text is no label)."""
    if reason.startswith(("no target", "no targets")):
        return "no_target"
    if "named by the task" in reason:
        return "named"
    if "the only target that" in reason:
        return "only_fit"
    if "est. start in" in reason or "estimated start" in reason:
        return "earliest_start"
    if "burst" in reason or " > " in reason.split(";")[0]:
        return "burst"
    if "cheapest of" in reason:
        return "cheapest"
    return "other"


def record_fusion(target: str, status: dict[str, Any]) -> None:
    fusion = status.get("fusion")
    if not isinstance(fusion, dict):
        return
    for key, direction in (("bytes_read", "read"), ("bytes_written", "written")):
        if isinstance(fusion.get(key), int | float) and fusion[key] > 0:
            FUSION_BYTES.labels(target, direction).inc(fusion[key])
    for key, result in (("cache_hits", "hit"), ("cache_misses", "miss")):
        if isinstance(fusion.get(key), int | float) and fusion[key] > 0:
            FUSION_CACHE.labels(target, result).inc(fusion[key])


class StoredTasks(Collector):
    """Tasks by state and target, read from the database when scraped."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "bridge_tasks", "Stored tasks by state and target", labels=["state", "target"]
        )
        for state, target, count in store_reads.metrics_counts(self.engine):
            gauge.add_metric([state, target], count)
        yield gauge


def exposition(engine: Engine) -> bytes:
    """The text exposition of both the process registry and the stored state."""
    stored = CollectorRegistry(auto_describe=False)
    stored.register(StoredTasks(engine))
    return generate_latest(REGISTRY) + generate_latest(stored)
