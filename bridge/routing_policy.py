"""What the router is told by configuration: prices, burst thresholds, budgets, retries.

``bridge.toml`` carries three pieces, all optional::

    [routing]                       # Settings.routing -- global policy
    burst_wait_s = 600              # burst only while the wait on HPC passes this
    burst_wait_by_partition = { gpu = 300 }
    internal_core_hour_usd = 0.01   # what an HPC core-hour is worth (shown, never billed)
    egress_usd_per_gb = 0.09        # moving inputs out of their bucket's region
    bucket_regions = { "genomes" = "us-east-1", "scratch" = "site-a" }

    [[budgets]]                     # Settings.budgets -- dollars and concurrency
    name = "proj-x"
    tag = "project=proj-x"          # or user = "alice", or target = "aws-spot"
    usd = 50.0
    max_running = 100

    [[targets]]
    name = "aws-spot"
    kind = "aws_batch"
    routing = { burst = true, cloud = true, boot_latency_s = 120, region = "us-east-1",
                prices = { cpu_hour = 0.04, gb_hour = 0.005 },
                spot = { cpu_hour = 0.012, gb_hour = 0.0015 } }

Everything here is plain data; :mod:`bridge.router` reads it and stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Prices(BaseModel):
    """Dollars per hour of one CPU, one GB of memory, one GPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_hour: float = Field(default=0.0, ge=0)
    gb_hour: float = Field(default=0.0, ge=0)
    gpu_hour: float = Field(default=0.0, ge=0)

    def hourly(self, cpus: int, ram_gb: float, gpus: int) -> float:
        return cpus * self.cpu_hour + ram_gb * self.gb_hour + gpus * self.gpu_hour


class TargetRouting(BaseModel):
    """One target's routing facts (``[[targets]] routing = {...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Paid by the hour in real money (a cloud); otherwise an internal machine whose
    # core-hours are valued at ``[routing] internal_core_hour_usd``.  Default: aws_batch.
    cloud: bool | None = None
    # Takes work only while the other targets' wait passes the burst threshold.
    burst: bool = False
    boot_latency_s: float = Field(default=0.0, ge=0)
    region: str | None = None  # cloud region or site name, for data locality
    max_wall_time_s: int | None = Field(default=None, gt=0)
    prices: Prices = Field(default_factory=lambda: Prices())
    spot: Prices | None = None  # prices for preemptible tasks, when it has spot capacity
    spot_only: bool = False  # only spot capacity: takes preemptible tasks only
    arch: str | None = None  # archspec name when its probe cannot tell (cloud queues)


class RetryPolicy(BaseModel):
    """How PREEMPTED and LOST attempts are tried again (``[routing.retry]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int | None = Field(default=None, ge=0)  # None: [broker] max_retries
    backoff_s: float = Field(default=5.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_backoff_s: float = Field(default=600.0, ge=0)
    # After this many preemptions a task stops asking for spot capacity (0: never stops).
    spot_preemptions: int = Field(default=1, ge=0)


class RoutingPolicy(BaseModel):
    """Global routing settings (``[routing]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    burst_wait_s: float = Field(default=600.0, ge=0)
    burst_wait_by_partition: dict[str, float] = Field(default_factory=dict)
    # Scoring: a placement's score is its estimated cost plus its estimated start
    # priced at this many dollars per hour of waiting (per task).
    # 0.40 sends small and short jobs out first: on a loaded machine they gain the
    # most wait per dollar (see bench/burst_sim.py).
    wait_usd_per_hour: float = Field(default=0.4, ge=0)
    internal_core_hour_usd: float = Field(default=0.0, ge=0)
    default_wall_time_s: float = Field(default=3600.0, gt=0)  # cost estimate without a wall time
    egress_usd_per_gb: float = Field(default=0.09, ge=0)
    default_input_gb: float = Field(default=1.0, ge=0)  # size assumed for an input of unknown size
    bucket_regions: dict[str, str] = Field(default_factory=dict)
    # Degraded targets: this many SYSTEM_ERRORs within the window sidelines a target
    # until degraded_for_s after its last one.
    degraded_after: int = Field(default=3, ge=1)
    degraded_window_s: float = Field(default=900.0, gt=0)
    degraded_for_s: float = Field(default=600.0, ge=0)
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy())

    def burst_threshold(self, partition: str | None) -> float:
        if partition and partition in self.burst_wait_by_partition:
            return self.burst_wait_by_partition[partition]
        return self.burst_wait_s


class Budget(BaseModel):
    """A cap on spend and concurrency for the tasks it matches (``[[budgets]]``).

    A budget matches a task on a target when every selector it sets matches: the
    task's owner (``user``), one of its tags (``tag``: ``key`` or ``key=value``), the
    target (``target``).  ``covers = "cloud"`` (the default) counts only targets paid in
    real money, so a task over budget still runs on the HPC side.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    user: str | None = None
    tag: str | None = None
    target: str | None = None
    usd: float | None = Field(default=None, ge=0)
    max_running: int | None = Field(default=None, ge=0)
    covers: Literal["cloud", "all"] = "cloud"

    def covers_target(self, target: str, cloud: bool) -> bool:
        """Whether tasks on ``target`` can count against this budget at all."""
        if self.covers == "cloud" and not cloud:
            return False
        return self.target is None or target == self.target

    def matches(self, owner: str, tags: Mapping[str, str], target: str, cloud: bool) -> bool:
        if not self.covers_target(target, cloud):
            return False
        if self.user is not None and owner != self.user:
            return False
        if self.tag is not None:
            key, sep, value = self.tag.partition("=")
            if key not in tags or (sep and tags[key] != value):
                return False
        return True


def is_cloud(kind: str, routing: TargetRouting) -> bool:
    """Whether a target bills real money by the hour."""
    return routing.cloud if routing.cloud is not None else kind == "aws_batch"
