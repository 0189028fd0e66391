"""Dashboard latency with 100,000 tasks stored (goal: p95 under 300 ms).

The broker's app runs in a uvicorn thread (no broker loop) on a SQLite store filled
with 100,000 tasks: 1,000 workflows of 100 tasks, spread over every state and two
targets, finished over the last 12 hours.  Measured, each N times after a warm-up:

- ``overview``: ``GET /`` (targets, tasks per state, per-target counts, hourly chart,
  the newest active tasks);
- ``tasks_filtered``: ``GET /tasks?state=COMPLETE&target=slurm&tag=workflow=wf-7``;
- ``tasks_state``: ``GET /tasks?state=EXECUTOR_ERROR&user=alice``;
- the peer: the TES API's own list, ``GET /v1/tasks?state=COMPLETE&view=BASIC&page_size=50``,
  the same store and server, as the reference for one page of tasks.

Run: ``.venv/bin/python bench/dashboard.py [--tasks 100000] [--n 60]``.  The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from bridge.config import Settings, TargetConfig
from bridge.db import make_engine, upgrade
from bridge.server import free_port, serve_in_thread
from bridge.store import TaskStore

STATES = (
    ["COMPLETE"] * 70
    + ["EXECUTOR_ERROR"] * 8
    + ["SYSTEM_ERROR"] * 2
    + ["CANCELED"] * 3
    + ["RUNNING"] * 7
    + ["QUEUED"] * 5
    + ["INITIALIZING"] * 5
)


def fill(data_dir: Path, count: int) -> None:
    settings = Settings(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    store = TaskStore(engine)
    users = ["alice", "bob", "carol", "dave"]
    batch = 2000
    for start in range(0, count, batch):
        items = []
        for i in range(start, min(count, start + batch)):
            doc = {
                "name": f"step-{i % 100}",
                "tags": {"workflow": f"wf-{i // 100}"},
                "resources": {"cpu_cores": 1},
                "executors": [{"image": "alpine", "command": ["true"]}],
            }
            items.append((doc, users[i % len(users)]))
        store.create_many(items)
    rng = random.Random(7)
    now = datetime.now(UTC)
    rows = []
    for seq in range(1, count + 1):
        state = rng.choice(STATES)
        target = None if state == "QUEUED" else rng.choice(["local", "slurm"])
        when = now - timedelta(seconds=rng.uniform(0, 12 * 3600))
        rows.append({"s": seq, "st": state, "t": target, "u": when.replace(tzinfo=None)})
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET state = :st, target = :t, updated_time = :u WHERE seq = :s"),
            rows,
        )
        conn.execute(text("ANALYZE"))
    engine.dispose()


def measure(client: httpx.Client, path: str, n: int) -> dict[str, float]:
    for _ in range(3):
        client.get(path).raise_for_status()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "max_ms": round(times[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        started = time.perf_counter()
        fill(data_dir, args.tasks)
        print(f"stored {args.tasks} tasks in {time.perf_counter() - started:.1f} s")
        settings = Settings(
            data_dir=data_dir,
            port=free_port(),
            targets=[
                TargetConfig(name="local", kind="local"),
                TargetConfig(name="slurm", kind="slurm"),
            ],
        )
        pages = {
            "overview": "/",
            "tasks_filtered": "/tasks?state=COMPLETE&target=slurm&tag=workflow%3Dwf-7",
            "tasks_state": "/tasks?state=EXECUTOR_ERROR&user=alice",
            "tes_list_peer": "/v1/tasks?state=COMPLETE&view=BASIC&page_size=50",
        }
        results = {}
        with (
            serve_in_thread(settings, with_broker=False) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            for name, path in pages.items():
                results[name] = measure(client, path, args.n)
                print(f"{name:<16} {path:<62} {results[name]}")
    peer = results["tes_list_peer"]["p95_ms"] or 1.0
    for name in ("overview", "tasks_filtered", "tasks_state"):
        print(
            f"{name}: p95 {results[name]['p95_ms']} ms = {results[name]['p95_ms'] / peer:.2f}x the TES list page"
        )
    summary = {
        "tasks": args.tasks,
        "requests_each": args.n,
        **{f"{k}_{m}": v[m] for k, v in results.items() for m in ("p50_ms", "p95_ms")},
        "goal_p95_ms": 300,
        "overview_meets_goal": results["overview"]["p95_ms"] < 300,
        "tasks_filtered_meets_goal": results["tasks_filtered"]["p95_ms"] < 300,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
