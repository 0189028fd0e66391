"""The router's per-turn read of the database, with many tasks active (SQLite).

Every dispatch turn the broker reads what routing depends on: active attempts per
target, spend and running tasks per budget, recent failures. Budgets need each active
task's owner and tags, and a target whose slots are all taken needs its tasks' wall
times - all of which live in the task documents. Measured, with ``--tasks`` active
attempts (default 20,000) on a Slurm target and a cloud target, one dollar budget and
one ``max_parallel`` target:

- the peer: one query joining attempts to tasks and parsing every active task's
  document, every turn (how the state was read before documents were cached);
- ``load_state`` on its first turn (cold: every document read and parsed once);
- ``load_state`` on later turns (warm: documents already parsed).

Run: ``.venv/bin/python bench/routing_state.py [--tasks 20000] [--turns 10]``. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.config import Settings, TargetConfig  # noqa: E402
from bridge.db import make_engine, upgrade  # noqa: E402
from bridge.requirements import Requirements  # noqa: E402
from bridge.router import Request  # noqa: E402
from bridge.routing_policy import Budget, TargetRouting  # noqa: E402
from bridge.routing_state import load_state  # noqa: E402
from bridge.store import ATTEMPTS, T, TaskStore  # noqa: E402


def settings_for(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        targets=[
            TargetConfig.model_validate({"name": "hpc", "kind": "local", "max_parallel": 64}),
            TargetConfig(name="cloud", kind="local", routing=TargetRouting(cloud=True)),
        ],
        budgets=[Budget(name="lab", tag="project=p1", usd=1000.0)],
    )


def fill(store: TaskStore, count: int) -> None:
    batch = 2000
    for start in range(0, count, batch):
        items = []
        for i in range(start, min(count, start + batch)):
            doc = {
                "name": f"step-{i}",
                "tags": {"workflow": f"wf-{i // 100}", "project": f"p{i % 3}"},
                "resources": {"cpu_cores": 1 + i % 4, "ram_gb": 2.0},
                "executors": [{"image": "alpine", "command": ["true"]}],
                "inputs": [{"url": f"s3://data/in-{i}", "path": f"/in/{i}"}],
            }
            items.append((doc, ["alice", "bob"][i % 2]))
        store.create_many(items)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "s": seq,
            "t": "hpc" if seq % 2 else "cloud",
            "p": now - timedelta(seconds=seq % 600),
        }
        for seq in range(1, count + 1)
    ]
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO attempts (task_seq, number, target, submitted_time, status,"
                " finished, phase, placed_time, reason, outcome)"
                " VALUES (:s, 1, :t, :p, '{}', 0, 'submitted', :p, '', '')"
            ),
            rows,
        )
        conn.execute(text("ANALYZE"))


def peer_turn(store: TaskStore) -> int:
    """One query joining every active attempt to its task; every document parsed."""
    cols = (ATTEMPTS.c.target, ATTEMPTS.c.status, T.c.owner, T.c.document)
    query = (
        select(*cols).join(T, T.c.seq == ATTEMPTS.c.task_seq).where(ATTEMPTS.c.finished.is_(False))
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    n = 0
    for r in rows:
        json.loads(r.status or "{}")
        doc = json.loads(r.document)
        Request.from_requirements(Requirements.of(doc), r.owner, doc)
        n += 1
    return n


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--turns", type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp))
        engine = make_engine(settings.effective_database_url)
        upgrade(engine)
        store = TaskStore(engine)
        fill(store, a.tasks)
        state = load_state(store, settings)
        assert sum(state.running_per_target.values()) == a.tasks, state.running_per_target
        # A fresh store object: the cache starts empty.
        store = TaskStore(engine)
        peer, warm = [], []
        cold = timed(lambda: load_state(store, settings))
        for _ in range(a.turns):  # interleaved, so load hits both alike
            peer.append(timed(lambda: peer_turn(store)))
            warm.append(timed(lambda: load_state(store, settings)))
        engine.dispose()
    peer_ms = statistics.median(peer)
    warm_ms = statistics.median(warm)
    print(f"peer (parse every document each turn): {peer_ms:.1f} ms per turn")
    print(f"load_state, first turn (cold):           {cold:.1f} ms")
    print(f"load_state, later turns (warm):          {warm_ms:.1f} ms per turn")
    result = {
        "tasks": a.tasks,
        "peer_ms": round(peer_ms, 1),
        "cold_ms": round(cold, 1),
        "warm_ms": round(warm_ms, 1),
        "warm_vs_peer_speedup": round(peer_ms / warm_ms, 2) if warm_ms else 0.0,
        "cold_vs_peer": round(cold / peer_ms, 2) if peer_ms else 0.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
