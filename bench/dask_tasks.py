"""N no-op tasks on Dask: through the broker versus ``distributed`` used directly.

Both cases run on the same ``LocalCluster`` (started here: ``--workers`` worker
processes of one thread, declaring the ``cpus``/``memory_mb`` resources the backend asks
for), with the same payload per task -- the node agent running one executor (``true``)
from a prepared work directory -- so the difference is how the work reaches Dask:

* ``direct`` -- the work directories are written beforehand, then ``client.map`` runs
  ``bridge-agent run <dir> --attempt 1`` in a subprocess on the workers, and
  ``client.gather`` waits for all (what a script without a broker does);
* ``direct_runner`` -- the same, but each task is the backend's own worker-side runner
  (:func:`schedulers.dask_worker.run_job`): distributed plus the way the backend starts
  processes, without the broker -- what isolates the broker's own cost;
* ``broker`` -- N TES tasks POSTed to ``bridge serve`` (its own process) with one Dask
  target at the cluster's address; timed from the first POST until the API shows every
  task finished.

Rate: tasks/s end to end, over ``--rounds`` rounds that alternate the two cases (so a
busy moment of the machine weighs on all).  ``ratio`` = broker ÷ direct (goal ≥ 0.8);
``ratio_vs_direct_runner`` = broker ÷ direct_runner.

    .venv/bin/python bench/dask_tasks.py [--tasks 100] [--workers 2] [--rounds 2]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.slurm_submit import start_broker  # noqa: E402
from bridge import workspace  # noqa: E402
from bridge.client import BridgeClient  # noqa: E402
from schedulers.dask_worker import run_job  # noqa: E402

AGENT = str(Path(sys.executable).with_name("bridge-agent"))
PAYLOAD = {"image": "alpine", "command": ["true"]}
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


def run_agent(url: str) -> int:
    """On a worker: the agent for one prepared work directory."""
    with open(Path(url) / "agent.log", "ab") as log:
        argv = [AGENT, "run", url, "--attempt", "1"]
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=url,
            check=False,
        ).returncode


def direct(client: object, n: int, root: Path, runner: bool = False) -> dict[str, float]:
    urls = []
    for i in range(n):
        url = str(root / f"task{i}")
        workspace.write_task(
            url,
            {"id": f"direct{i}", "executors": [PAYLOAD]},
            {"container_runtime": "none", "attempt": 1},
        )
        urls.append(url)
    started = time.monotonic()
    if runner:  # the backend's own runner on the workers, without the broker
        from distributed import wait

        futures = [
            client.submit(  # type: ignore[attr-defined]
                run_job,
                f"{root.name}-{i}",
                [AGENT, "run", url, "--attempt", "1"],
                url,
                {},
                f"{url}/agent.log",
                f"{url}/agent.log",
                10.0,
                key=f"{root.name}-{i}",
                resources={"cpus": 1},
            )
            for i, url in enumerate(urls)
        ]
        wait(futures)
        codes = [0 if "bridge-job-exit 0 " in str(f.exception()) else 1 for f in futures]
    else:
        futures = client.map(run_agent, urls, resources={"cpus": 1})  # type: ignore[attr-defined]
        codes = client.gather(futures)  # type: ignore[attr-defined]
    total = time.monotonic() - started
    done = sum(
        json.loads((Path(u) / "attempts/1/status.json").read_text())["state"] == "COMPLETE"
        for u in urls
    )
    assert codes.count(0) == n, codes
    return {"end_to_end_s": total, "completed": done}


def through_broker(n: int, data_dir: Path, address: str) -> dict[str, float]:
    target = {"name": "dask", "kind": "dask", "container_runtime": "none"}
    target["dask"] = {"address": address}  # type: ignore[assignment]
    proc, url = start_broker(data_dir, target)
    run = data_dir.name

    async def post_all() -> float:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=url + "/ga4gh/tes/v1", limits=limits) as http:
            await http.get("/service-info")
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with gate:
                    body = {"name": f"{run}-{i}", "tags": {"bench": run}, "executors": [PAYLOAD]}
                    (await http.post("/tasks", json=body)).raise_for_status()

            started = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            return started

    try:
        with BridgeClient(url) as watcher:
            started = asyncio.run(post_all())
            while True:
                tasks = watcher.list_tasks(tags={"bench": run}, page_size=2000)["tasks"]
                states = [t["state"] for t in tasks]
                if len(states) == n and all(s in FINAL for s in states):
                    break
                time.sleep(0.1)
            total = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
    return {"end_to_end_s": total, "completed": states.count("COMPLETE")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n = args.tasks
    from distributed import Client, LocalCluster

    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    memory_mb //= args.workers
    print(f"{n} tasks (the agent running `true`) on a LocalCluster of {args.workers} workers")
    results: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=f"{memory_mb}MiB",
            resources={"cpus": 1, "memory_mb": memory_mb},
        ) as cluster,
        Client(cluster) as client,
    ):
        root = Path(tmp)
        direct(client, min(n, 4), root / "warm")  # worker imports, page cache
        cases = {
            "direct": lambda r: direct(client, n, root / f"direct{r}"),
            "direct_runner": lambda r: direct(client, n, root / f"runner{r}", runner=True),
            "broker": lambda r: through_broker(n, root / f"broker{r}", cluster.scheduler_address),
        }
        totals = {name: {"end_to_end_s": 0.0, "completed": 0.0} for name in cases}
        for r in range(args.rounds):  # alternate, so a busy moment hurts both alike
            for name, case in cases.items():
                figures = case(r)
                for key in totals[name]:
                    totals[name][key] += figures[key]
                print(
                    f"round {r + 1} {name:<7} {figures['end_to_end_s']:7.2f} s  "
                    f"{n / figures['end_to_end_s']:7.2f} tasks/s  "
                    f"({int(figures['completed'])}/{n} COMPLETE)"
                )
        for name, figures in totals.items():
            figures["tasks_per_s"] = n * args.rounds / figures["end_to_end_s"]
            results[name] = {k: round(v, 3) for k, v in figures.items()}
    ratio = results["broker"]["tasks_per_s"] / results["direct"]["tasks_per_s"]
    ratio_runner = results["broker"]["tasks_per_s"] / results["direct_runner"]["tasks_per_s"]
    print(f"broker / direct: {ratio:.2f} (goal >= 0.8)")
    print(f"broker / direct with the backend's runner: {ratio_runner:.2f}")
    print(
        json.dumps(
            {
                "tasks": n,
                "workers": args.workers,
                "rounds": args.rounds,
                "load_average_1m": round(os.getloadavg()[0], 2),
                "direct_tasks_per_s": results["direct"]["tasks_per_s"],
                "broker_tasks_per_s": results["broker"]["tasks_per_s"],
                "direct_runner_tasks_per_s": results["direct_runner"]["tasks_per_s"],
                "ratio": round(ratio, 3),
                "ratio_vs_direct_runner": round(ratio_runner, 3),
                "cases": results,
            }
        )
    )


if __name__ == "__main__":
    main()
