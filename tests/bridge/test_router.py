from __future__ import annotations

from bridge.config import TargetConfig
from bridge.router import Candidate, Request, route
from schedulers.base import TargetInfo


def cand(
    name: str,
    kind: str = "slurm",
    wait: float = 0.0,
    cpus: int = 64,
    arch: str | None = "x86_64_v4",
    healthy: bool = True,
    **cfg: object,
) -> Candidate:
    return Candidate(
        TargetConfig(name=name, kind=kind, **cfg),  # type: ignore[arg-type]
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


def test_the_shorter_queue_wins_and_the_reason_says_so() -> None:
    placement = route(
        Request(cpus=4), [cand("hpc", wait=1800), cand("cloud", kind="local", wait=60)]
    )
    assert placement.target == "cloud"
    assert "60 s vs 1800 s on hpc" in placement.reason


def test_hard_filters_explain_every_rejection() -> None:
    placement = route(
        Request(cpus=128, microarchitecture="x86_64_v4"),
        [cand("small", cpus=16), cand("old", cpus=256, arch="haswell"), cand("big", cpus=256)],
    )
    assert placement.target == "big"
    assert placement.rejected == {
        "small": "128 CPUs requested, it has 16",
        "old": "its CPUs are haswell, which cannot run x86_64_v4 code",
    }
    assert "not small: 128 CPUs requested" in placement.reason


def test_newer_hosts_run_older_code() -> None:
    assert route(Request(microarchitecture="haswell"), [cand("a", arch="icelake")]).target == "a"


def test_no_fit_names_each_target() -> None:
    placement = route(Request(ram_gb=10_000), [cand("a"), cand("b", healthy=False)])
    assert placement.target is None
    assert "a: 10000 GB RAM requested" in placement.reason
    assert "b: unhealthy" in placement.reason


def test_a_named_target_and_allowed_users() -> None:
    targets = [cand("a"), cand("b", allowed_users=["alice"])]
    assert route(Request(target="b", owner="alice"), targets).target == "b"
    refused = route(Request(target="b", owner="bob"), targets)
    assert refused.target is None and "user 'bob' may not use it" in refused.reason


def test_cost_breaks_ties() -> None:
    placement = route(
        Request(), [cand("dear", cost_per_cpu_hour=0.5), cand("cheap", cost_per_cpu_hour=0.1)]
    )
    assert placement.target == "cheap"
    assert "cheapest of 2" in placement.reason
