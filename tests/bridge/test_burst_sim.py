"""bench/burst_sim.py: the HPC scheduler it models, and the policies it compares.

The SWF files under tests/data/swf/ were written for these tests: ``easy_backfill.swf``
by hand, ``synthetic_128c_2d.swf`` by ``burst_sim.py --write-swf`` (seed 3).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.router

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "swf"


def load_sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("burst_sim", REPO / "bench" / "burst_sim.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["burst_sim"] = module
    spec.loader.exec_module(module)
    return module


sim = load_sim()


def test_swf_reading_skips_jobs_that_never_ran() -> None:
    jobs, cores = sim.read_swf(DATA / "easy_backfill.swf", None, seed=1, preemptible=0.0)
    assert cores == 4
    assert [(j.submit, j.cores, j.runtime, j.req) for j in jobs] == [
        (0, 3, 100, 100),
        (1, 4, 100, 100),
        (2, 1, 50, 50),
        (3, 1, 200, 200),
    ]


def test_easy_backfilling_never_delays_the_head() -> None:
    # 3 of 4 cores busy until t=100; job 2 (4 cores) reserves t=100.  Job 3 (1 core,
    # 50 s) fits in the hole and ends before the reservation: it starts at once.  Job 4
    # (1 core, 200 s) would delay job 2, so it waits until job 2 ends at t=200.
    jobs, cores = sim.read_swf(DATA / "easy_backfill.swf", None, seed=1, preemptible=0.0)
    sim.simulate(jobs, cores, "hpc-only", 0.0, sim.Cloud(), seed=1)
    assert [j.start for j in jobs] == [0, 100, 2, 200]
    assert all(j.where == "hpc" for j in jobs)


@pytest.mark.parametrize("cores", [4, 2])
def test_machine_size_can_be_scaled(cores: int) -> None:
    jobs, machine = sim.read_swf(DATA / "easy_backfill.swf", cores, seed=1, preemptible=0.0)
    assert machine == cores
    assert max(j.cores for j in jobs) <= cores
    figures = sim.simulate(jobs, machine, "hpc-only", 0.0, sim.Cloud(), seed=1)
    assert figures["jobs"] == 4 and figures["cost_usd"] == 0


def test_policies_on_a_loaded_machine() -> None:
    jobs, cores = sim.read_swf(DATA / "synthetic_128c_2d.swf", None, seed=3, preemptible=0.7)
    out = {}
    for policy, threshold in (("hpc-only", 0), ("cloud-only", 0), ("burst-10m", 600)):
        sim._reset(jobs)
        out[policy] = sim.simulate(jobs, cores, policy, threshold, sim.Cloud(), seed=3)
    hpc, cloud, burst = out["hpc-only"], out["cloud-only"], out["burst-10m"]
    assert hpc["cost_usd"] == 0 and hpc["cloud_fraction"] == 0
    assert cloud["hpc_core_hours"] == 0 and cloud["cloud_fraction"] == 1
    assert 0 < burst["cloud_fraction"] < 1
    # The goal: at least half the wait gone, at most a fifth of cloud-only's spend.
    assert burst["mean_wait_min"] <= 0.5 * hpc["mean_wait_min"], out
    assert burst["cost_usd"] <= 0.2 * cloud["cost_usd"], out


def test_spot_interruptions_are_retried_by_the_retry_policy() -> None:
    jobs, cores = sim.read_swf(DATA / "synthetic_128c_2d.swf", None, seed=3, preemptible=1.0)
    sim._reset(jobs)
    cloud = sim.Cloud(spot_rate_per_h=2.0)  # frequent reclaims
    sim.simulate(jobs, cores, "cloud-only", 0.0, cloud, seed=3)
    preempted = [j for j in jobs if j.attempts]
    assert preempted, "no job was interrupted at 2 reclaims per hour"
    for j in preempted:
        assert j.attempts[0].outcome == "PREEMPTED" and j.attempts[0].target == "aws-spot"
        assert j.where == "aws"  # after one preemption: on-demand, the spot queue avoided
        assert j.start >= j.attempts[-1].end_time
    assert all(j.end > 0 for j in jobs)


def test_the_cli_ends_with_one_json_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "burst_sim.py"),
            "--swf",
            str(DATA / "synthetic_128c_2d.swf"),
            "--thresholds",
            "10,60",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(last["policies"]) == {"hpc-only", "cloud-only", "burst-10m", "burst-60m"}
    keys = {
        "makespan_h",
        "mean_wait_min",
        "p95_wait_min",
        "mean_bounded_slowdown",
        "cost_usd",
        "hpc_core_hours",
        "cloud_fraction",
    }
    for figures in last["policies"].values():
        assert keys <= set(figures)
    assert "== burst-60m ==" in result.stdout
