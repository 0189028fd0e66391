"""The router and the retry policy as pure functions: tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import TargetConfig
from bridge.retry_policy import PastAttempt, backoff_s, next_attempt, should_retry
from bridge.router import (
    Candidate,
    Request,
    RoutingState,
    estimated_cost_usd,
    route,
)
from bridge.routing_policy import Budget, Prices, RetryPolicy, RoutingPolicy, TargetRouting
from schedulers.base import TargetInfo

pytestmark = pytest.mark.router


def cand(
    name: str,
    kind: str = "slurm",
    wait: float = 0.0,
    cpus: int = 64,
    arch: str | None = "x86_64_v4",
    healthy: bool = True,
    routing: dict[str, Any] | None = None,
    **cfg: Any,
) -> Candidate:
    if kind == "aws_batch":
        cfg.setdefault("job_queue", "spot")
    return Candidate(
        TargetConfig(name=name, kind=kind, routing=TargetRouting(**(routing or {})), **cfg),  # type: ignore[arg-type]
        TargetInfo(
            name=name,
            kind=kind,
            cpus=cpus,
            memory_mb=256_000,
            microarchitecture=arch,
            queue_wait_s=wait,
            healthy=healthy,
        ),
    )


def cloud(name: str = "aws", **routing: Any) -> Candidate:
    base: dict[str, Any] = {
        "burst": True,
        "boot_latency_s": 120,
        "prices": {"cpu_hour": 0.05},
        "region": "us-east-1",
    }
    return cand(name, kind="aws_batch", arch=None, routing={**base, **routing})


def test_the_shorter_queue_wins_and_the_reason_says_so() -> None:
    placement = route(
        Request(cpus=4), [cand("hpc", wait=1800), cand("cloud", kind="local", wait=60)]
    )
    assert placement.target == "cloud"
    assert "est. start in 1 min vs 30 min on hpc" in placement.reason


def test_of_two_targets_alike_the_one_with_the_software_built_wins() -> None:
    targets = [cand("hpc-a", arch="zen3"), cand("hpc-b", arch="icelake")]
    building_on_a = Request(build_wait_s={"hpc-a": 600.0})
    p = route(building_on_a, targets)
    assert p.target == "hpc-b"
    assert "its software is built" in p.reason
    assert "10 min on hpc-a" in p.reason
    assert route(Request(build_wait_s={"hpc-b": 600.0}), targets).target == "hpc-a"
    # Without a build anywhere, the order is the usual one (the name breaks the tie).
    assert route(Request(), targets).target == "hpc-a"


def test_a_build_is_worth_it_when_the_built_target_queues_longer() -> None:
    targets = [cand("busy", wait=3 * 3600), cand("idle", arch="icelake")]
    p = route(Request(build_wait_s={"idle": 600.0}), targets)
    assert p.target == "idle"
    assert "software build for it est. 10 min" in p.reason
    assert p.est_start_s == 600.0


def test_hard_filters_explain_every_rejection() -> None:
    placement = route(
        Request(cpus=128, arch="x86_64_v4"),
        [cand("small", cpus=16), cand("old", cpus=256, arch="haswell"), cand("big", cpus=256)],
    )
    assert placement.target == "big"
    assert placement.rejected == {
        "small": "128 CPUs requested, it has 16",
        "old": "its CPUs are haswell, which cannot run x86_64_v4 code",
    }
    assert "not small: 128 CPUs requested" in placement.reason
    assert not placement.wait


@pytest.mark.parametrize(
    ("request_", "targets", "winner", "words"),
    [
        # newer hosts run older code
        (Request(arch="haswell"), [cand("a", arch="icelake")], "a", "the only target"),
        # an arch the probe cannot tell comes from the config
        (
            Request(arch="x86_64_v3"),
            [cand("c", arch=None, routing={"arch": "x86_64_v4"})],
            "c",
            "the only target",
        ),
        # wall time against the target's limit
        (
            Request(wall_time_s=48 * 3600),
            [cand("short", routing={"max_wall_time_s": 86400}), cand("long")],
            "long",
            "not short: wall time 48.0 h exceeds its limit of 24.0 h",
        ),
        # spot-only capacity takes preemptible tasks only
        (
            Request(),
            [cloud("spot", burst=False, spot_only=True), cand("hpc", wait=7200)],
            "hpc",
            "not spot: spot capacity only",
        ),
        # cost breaks ties
        (
            Request(),
            [
                cand(
                    "dear",
                    cost_per_cpu_hour=0.5,
                    routing={"cloud": True, "prices": {"cpu_hour": 0.5}},
                ),
                cand("cheap", routing={"cloud": True, "prices": {"cpu_hour": 0.1}}),
            ],
            "cheap",
            "cheapest of 2 usable targets",
        ),
    ],
)
def test_rule_table(request_: Request, targets: list[Candidate], winner: str, words: str) -> None:
    placement = route(request_, targets)
    assert placement.target == winner, placement.reason
    assert words in placement.reason


def test_no_fit_names_each_target() -> None:
    placement = route(Request(ram_gb=10_000), [cand("a"), cand("b", healthy=False)])
    assert placement.target is None and not placement.wait
    assert "a: 10000 GB RAM requested" in placement.reason
    assert "b: 10000 GB RAM requested" in placement.reason  # unfit, whatever its health


def test_a_task_only_an_unhealthy_target_can_run_waits_for_it() -> None:
    placement = route(Request(cpus=4), [cand("a", cpus=2), cand("b", healthy=False)])
    assert placement.target is None and placement.wait
    assert "b: unhealthy" in placement.reason and "a: 4 CPUs requested" in placement.reason
    healthy_elsewhere = route(Request(cpus=1), [cand("a"), cand("b", healthy=False)])
    assert healthy_elsewhere.target == "a" and "not b: unhealthy" in healthy_elsewhere.reason


def test_a_named_target_and_allowed_users() -> None:
    targets = [cand("a"), cand("b", allowed_users=["alice"])]
    assert route(Request(target="b", owner="alice"), targets).target == "b"
    refused = route(Request(target="b", owner="bob"), targets)
    assert refused.target is None and "user 'bob' may not use it" in refused.reason


@pytest.mark.parametrize(
    ("hpc_wait_s", "threshold", "by_partition", "partition", "winner"),
    [
        (42 * 60, 600, {}, None, "aws"),  # past the global threshold: burst
        (5 * 60, 600, {}, None, "hpc"),  # under it: stay
        (5 * 60, 600, {"gpu": 120}, "gpu", "aws"),  # the partition's own threshold
        (42 * 60, 600, {"long": 7200}, "long", "hpc"),
    ],
)
def test_burst_threshold_table(
    hpc_wait_s: float,
    threshold: float,
    by_partition: dict[str, float],
    partition: str | None,
    winner: str,
) -> None:
    policy = RoutingPolicy(burst_wait_s=threshold, burst_wait_by_partition=by_partition)
    placement = route(
        Request(cpus=2, wall_time_s=600, partition=partition),
        [cand("hpc", wait=hpc_wait_s), cloud()],
        policy,
    )
    assert placement.target == winner, placement.reason
    if winner == "aws":
        assert placement.reason.startswith("aws: hpc wait ")
    else:
        assert "not aws: hpc wait" in placement.reason


def test_the_burst_reason_reads_like_an_admin_would_write_it() -> None:
    budgets = [Budget(name="proj-x", tag="project=proj-x", usd=20.0)]
    state = RoutingState(spent_usd={"proj-x": 7.60})
    placement = route(
        Request(cpus=2, wall_time_s=1080, tags={"project": "proj-x"}),
        [cand("hpc", wait=42 * 60), cloud("aws-spot")],
        RoutingPolicy(burst_wait_s=600),
        budgets,
        state,
    )
    assert placement.target == "aws-spot"
    assert placement.reason == (
        "aws-spot: hpc wait 42 min > 10 min; est. $0.03; budget proj-x $12.40 left"
    )
    assert placement.est_cost_usd == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("budget", "spent", "running", "words"),
    [
        (Budget(name="proj-x", tag="project=proj-x", usd=10.0), 9.99, 0, "budget proj-x exhausted"),
        (Budget(name="alice", user="alice", usd=5.0), 5.0, 0, "budget alice exhausted"),
        (Budget(name="cap", target="aws", max_running=3), 0.0, 3, "budget cap: 3 of 3 tasks"),
    ],
)
def test_a_budget_out_keeps_the_task_on_hpc(
    budget: Budget, spent: float, running: int, words: str
) -> None:
    state = RoutingState(spent_usd={budget.name: spent}, running={budget.name: running})
    req = Request(cpus=4, wall_time_s=3600, owner="alice", tags={"project": "proj-x"})
    placement = route(req, [cand("hpc", wait=3 * 3600), cloud()], RoutingPolicy(), [budget], state)
    assert placement.target == "hpc"
    assert f"not aws: {words}" in placement.reason


def test_without_hpc_a_budget_out_makes_the_task_wait() -> None:
    budget = Budget(name="proj-x", usd=1.0)
    placement = route(
        Request(cpus=4, wall_time_s=3600),
        [cloud(burst=False)],
        RoutingPolicy(),
        [budget],
        RoutingState(spent_usd={"proj-x": 1.0}),
    )
    assert placement.target is None and placement.wait
    assert "budget proj-x exhausted: est. $0.20 needed, $0.00 left" in placement.reason


def test_a_budget_that_does_not_match_does_not_count() -> None:
    budget = Budget(name="bob", user="bob", usd=0.0)
    placement = route(
        Request(owner="alice", wall_time_s=60),
        [cand("hpc", wait=3600), cloud()],
        RoutingPolicy(),
        [budget],
    )
    assert placement.target == "aws"


def test_a_degraded_target_is_avoided_for_a_while() -> None:
    policy = RoutingPolicy(degraded_after=3, degraded_window_s=600, degraded_for_s=300)
    targets = [cand("flaky", cost_per_cpu_hour=0.0), cand("steady", wait=60)]
    failures = {"flaky": (1000.0, 1100.0, 1200.0)}
    during = route(Request(), targets, policy, state=RoutingState(now=1300, failures=failures))
    assert during.target == "steady"
    assert "not flaky: degraded (3 system errors in 10 min; avoided for 3 min more)" in (
        during.reason
    )
    after = route(Request(), targets, policy, state=RoutingState(now=1600, failures=failures))
    assert after.target == "flaky"
    alone = route(Request(), targets[:1], policy, state=RoutingState(now=1300, failures=failures))
    assert alone.target is None and alone.wait


def test_spot_prices_for_preemptible_tasks_and_internal_core_hours() -> None:
    policy = RoutingPolicy(internal_core_hour_usd=0.01)
    spot = cloud(prices={"cpu_hour": 0.04}, spot={"cpu_hour": 0.01}).config
    hpc = cand("hpc").config
    hour = Request(cpus=10, wall_time_s=3600)
    assert estimated_cost_usd(hour, spot, policy) == pytest.approx(0.4)
    spot_req = Request(cpus=10, wall_time_s=3600, preemptible=True)
    assert estimated_cost_usd(spot_req, spot, policy) == pytest.approx(0.1)
    assert estimated_cost_usd(hour, hpc, policy) == pytest.approx(0.1)


def test_moving_inputs_out_of_their_region_costs() -> None:
    policy = RoutingPolicy(
        bucket_regions={"genomes": "site-a"}, egress_usd_per_gb=0.1, burst_wait_s=0
    )
    req = Request(wall_time_s=60, inputs=(("s3://genomes/big.bam", 50 * 10**9),))
    near = cand("near", kind="aws_batch", routing={"cloud": True, "region": "site-a"}, wait=600)
    far = cand("far", kind="aws_batch", routing={"cloud": True, "region": "us-east-1"})
    assert estimated_cost_usd(req, far.config, policy) == pytest.approx(5.0)
    placement = route(req, [near, far], policy)
    assert placement.target == "near"  # 10 min of waiting is cheaper than $5 of egress


def test_avoided_targets_are_used_only_when_nothing_else_fits() -> None:
    req = Request(avoid=frozenset({"aws"}))
    assert route(req, [cloud(burst=False), cand("hpc", wait=9999)]).target == "hpc"
    assert route(req, [cloud(burst=False)]).target == "aws"


def test_prices_hourly() -> None:
    assert Prices(cpu_hour=1, gb_hour=0.5, gpu_hour=3).hourly(2, 4, 1) == 7


# -- retry policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "number", "limit", "retry"),
    [
        ("PREEMPTED", 1, 2, True),
        ("LOST", 2, 2, True),
        ("LOST", 3, 2, False),
        ("SYSTEM_ERROR", 1, 5, False),
        ("EXECUTOR_ERROR", 1, 5, False),
    ],
)
def test_should_retry_table(outcome: str, number: int, limit: int, retry: bool) -> None:
    assert should_retry(outcome, number, limit).retry is retry


def test_backoff_grows_to_a_cap() -> None:
    policy = RetryPolicy(backoff_s=10, backoff_factor=3, max_backoff_s=60)
    assert [backoff_s(n, policy) for n in (1, 2, 3, 4)] == [10, 30, 60, 60]


def test_a_preempted_spot_task_goes_elsewhere_on_demand() -> None:
    policy = RetryPolicy(backoff_s=5, spot_preemptions=1)
    advice = next_attempt([PastAttempt(1, "aws-spot", "PREEMPTED", 100.0)], policy)
    assert advice.avoid == {"aws-spot"}
    assert advice.not_before == 105.0
    assert not advice.preemptible_ok
    assert "on-demand after 1 preemption" in advice.note
    # routed with that advice, it lands on on-demand capacity or on HPC
    req = Request(cpus=2, wall_time_s=600, preemptible=advice.preemptible_ok, avoid=advice.avoid)
    targets = [
        cand("hpc", wait=3600),
        cloud("aws-spot", spot_only=True, spot={"cpu_hour": 0.01}),
        cloud("aws"),
    ]
    placement = route(req, targets)
    assert placement.target == "aws" and not placement.preemptible


def test_clean_history_gives_no_advice() -> None:
    assert next_attempt([], RetryPolicy()).avoid == frozenset()
    done = [PastAttempt(1, "hpc", "COMPLETE", 5.0)]
    assert next_attempt(done, RetryPolicy()).not_before == 0.0


def test_routing_budgets_and_target_prices_load_from_toml(tmp_path: Any) -> None:
    from bridge.config import ConfigError, load_settings

    path = tmp_path / "bridge.toml"
    path.write_text(
        """
[routing]
burst_wait_s = 300
burst_wait_by_partition = { gpu = 60 }

[routing.retry]
backoff_s = 1

[[budgets]]
name = "proj-x"
tag = "project=proj-x"
usd = 12.5

[[targets]]
name = "aws-spot"
kind = "aws_batch"
job_queue = "spot"
routing = { burst = true, spot_only = true, prices = { cpu_hour = 0.04 }, spot = { cpu_hour = 0.01 } }
"""
    )
    settings = load_settings(path, env={})
    assert settings.routing.burst_threshold("gpu") == 60
    assert settings.routing.retry.backoff_s == 1
    assert settings.budgets[0].usd == 12.5
    spot = settings.targets[0].routing
    assert spot.burst and spot.spot is not None and spot.spot.cpu_hour == 0.01
    path.write_text('[[budgets]]\nname = "x"\nusd = -1\n')
    with pytest.raises(ConfigError, match="budgets"):
        load_settings(path, env={})
