"""One workflow, three kinds of machine: the router places each task by policy.

Three targets share one object-store work directory (moto's S3):

* ``hpc``, the test Slurm cluster: cheap (the internal core-hour rate) but a batch
  job costs a start-up latency;
* ``pool``, a Dask local cluster: warm workers, for tasks up to 10 minutes;
* ``cloud``, AWS Batch (moto; its jobs run on the FAKE compute node of
  ``tests/bridge/batch_node.py``, since container-less moto runs nothing): on-demand
  dearer than the HPC rate, spot far cheaper.

A short task goes to the warm pool (earliest start), a long one to Slurm (cheapest of
what may take it) and a long preemptible one to Batch spot (cheapest); each task's
placement reason says why.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.routing_policy import Prices, RoutingPolicy, TargetRouting
from bridge.server import serve_in_thread
from schedulers.dask_settings import DaskSettings, LocalClusterSettings
from tests.bridge.batch_node import FakeNode
from tests.bridge.test_broker_batch import batch_env, batch_settings, node  # noqa: F401
from tests.bridge.test_broker_slurm import slurm_target
from tests.schedulers.aws_batch_env import BatchEnvironment

pytestmark = [
    pytest.mark.router,
    pytest.mark.slurm,
    pytest.mark.batch,
    pytest.mark.dask,
    pytest.mark.slow,
]


def wait_for_usable_node(env: dict[str, str]) -> None:
    """Another test may just have restarted Slurm: wait until its node takes jobs, so the
    broker's first probe sees a healthy cluster."""
    deadline = time.monotonic() + 120
    while True:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        ).stdout.split()
        if any(s in ("idle", "mix", "alloc") for s in states):
            return
        assert time.monotonic() < deadline, f"no usable Slurm node after 120 s: {states}"
        time.sleep(1)


def hybrid_settings(tmp_path: Path, env: BatchEnvironment) -> Settings:
    base = batch_settings(tmp_path, env)
    batch = base.targets[0]
    # One queue (the one the fake node watches); the routing prices say what spot costs.
    cloud = batch.model_copy(
        update={
            "name": "cloud",
            "backend": batch.backend.model_copy(update={"spot_job_queue": None}),
            "routing": TargetRouting(
                cloud=True, prices=Prices(cpu_hour=0.05), spot=Prices(cpu_hour=0.001)
            ),
        }
    )
    slurm = slurm_target("local")
    wait_for_usable_node(slurm.env)
    hpc = TargetConfig(
        name="hpc",
        kind="slurm",
        container_runtime="none",
        fusion="stage",
        env={**slurm.env, **cloud.env},
        routing=TargetRouting(boot_latency_s=60),
    )
    pool = TargetConfig(
        name="pool",
        kind="dask",
        container_runtime="none",
        fusion="stage",
        env=cloud.env,
        dask=DaskSettings(local=LocalClusterSettings(n_workers=1)),
        routing=TargetRouting(max_wall_time_s=600),
    )
    policy = RoutingPolicy(internal_core_hour_usd=0.01)
    settings = base.model_copy(update={"targets": [hpc, pool, cloud], "routing": policy})
    settings.broker.poll_interval_s = 0.3
    return settings


def task(name: str, wall: str, preemptible: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "tags": {"workflow": "hybrid"},
        "resources": {
            "cpu_cores": 1,
            "preemptible": preemptible,
            "backend_parameters": {"bridge.wall_time": wall},
        },
        "executors": [{"image": "debian", "command": ["echo", f"{name} ran"]}],
    }


def test_one_workflow_runs_on_slurm_dask_and_batch_by_policy(
    tmp_path: Path,
    batch_env: BatchEnvironment,  # noqa: F811
    node: FakeNode,  # noqa: F811
) -> None:
    settings = hybrid_settings(tmp_path, batch_env)
    wanted = {"short": "pool", "long": "hpc", "long-spot": "cloud"}
    with serve_in_thread(settings) as url, BridgeClient(url) as api:
        ids = {
            "short": api.submit(task("short", "300")).id,
            "long": api.submit(task("long", "1:00:00")).id,
            "long-spot": api.submit(task("long-spot", "1:00:00", preemptible=True)).id,
        }
        deadline = time.monotonic() + 300
        done: dict[str, dict[str, Any]] = {}
        while len(done) < len(ids):
            assert time.monotonic() < deadline, f"not finished: {set(ids) - set(done)}"
            for name, task_id in ids.items():
                view = api.get(task_id, view="FULL")
                if view["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
                    done[name] = view
            time.sleep(1)
        events = {name: api.events(task_id) for name, task_id in ids.items()}
    for name, target in wanted.items():
        view = done[name]
        assert view["state"] == "COMPLETE", (name, view.get("logs"), events[name])
        assert view["logs"][-1]["logs"][0]["stdout"] == f"{name} ran\n"
        placed = [e["reason"] for e in events[name] if e["to"] == "INITIALIZING"]
        assert placed and placed[0].startswith(f"placed on {target}:"), (name, placed)
    reasons = {name: [e["reason"] for e in events[name]] for name in wanted}
    assert any("cheapest" in r or "est. start" in r for r in reasons["short"]), reasons["short"]
    assert any("not pool" in r and "wall time" in r for r in reasons["long"]), reasons["long"]
    assert any("spot" in r for r in reasons["long-spot"]), reasons["long-spot"]
