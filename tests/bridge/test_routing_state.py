"""The router's per-turn read: the same state whether task documents are cached or not."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.config import Settings, TargetConfig
from bridge.db import make_engine, upgrade
from bridge.routing_policy import Budget, TargetRouting
from bridge.routing_state import load_state
from bridge.store import TaskStore

pytestmark = pytest.mark.router


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        targets=[
            TargetConfig.model_validate({"name": "hpc", "kind": "local", "max_parallel": 3}),
            TargetConfig(name="cloud", kind="local", routing=TargetRouting(cloud=True)),
        ],
        budgets=[
            Budget(name="p1", tag="project=p1", usd=100.0),
            Budget(name="alice", user="alice", covers="all"),
        ],
    )


def _store_with_tasks(settings: Settings, tasks: list[tuple[str, str, str]]) -> TaskStore:
    """A store with one active attempt per ``(owner, project, target)``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    store = TaskStore(engine)
    docs = [
        (
            {
                "tags": {"project": project},
                "resources": {"cpu_cores": 2},
                "executors": [{"image": "alpine", "command": ["true"]}],
            },
            owner,
        )
        for owner, project, _ in tasks
    ]
    store.create_many(docs)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO attempts (task_seq, number, target, submitted_time, status,"
                " finished, phase, reason, outcome)"
                " VALUES (:s, 1, :t, CURRENT_TIMESTAMP, '{}', 0, 'submitted', '', '')"
            ),
            [{"s": i + 1, "t": target} for i, (_, _, target) in enumerate(tasks)],
        )
    return store


def test_state_is_the_same_from_cached_documents(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "a")
    tasks = [
        ("alice", "p1", "cloud"),
        ("bob", "p1", "cloud"),
        ("bob", "p2", "cloud"),
        ("alice", "p2", "hpc"),
        ("bob", "p1", "hpc"),
        ("bob", "p1", "hpc"),
    ]
    store = _store_with_tasks(settings, tasks)
    cold = load_state(store, settings)
    warm = load_state(store, settings)
    assert cold.running_per_target == warm.running_per_target == {"cloud": 3, "hpc": 3}
    assert cold.running == warm.running == {"p1": 2, "alice": 2}
    assert cold.spent_usd.keys() == warm.spent_usd.keys() == {"p1"}
    assert cold.spent_usd["p1"] == pytest.approx(warm.spent_usd["p1"])
    # "hpc" has all its 3 slots taken: the broker's own wait estimate applies to it.
    assert set(cold.extra_wait_s) == set(warm.extra_wait_s) == {"hpc"}
    store.engine.dispose()


def test_two_databases_in_one_process_do_not_share_cached_documents(tmp_path: Path) -> None:
    settings_a = _settings(tmp_path / "a")
    settings_b = _settings(tmp_path / "b")
    a = _store_with_tasks(settings_a, [("alice", "p1", "cloud")])
    b = _store_with_tasks(settings_b, [("bob", "p2", "cloud")])  # same seq, other task
    assert load_state(a, settings_a).running == {"p1": 1, "alice": 1}
    assert load_state(b, settings_b).running == {}
    a.engine.dispose()
    b.engine.dispose()
