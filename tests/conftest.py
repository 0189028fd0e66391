"""Shared fixtures: settings on a temporary data dir, databases, a live server.

Databases: ``db_url`` runs a test once on SQLite and once on the PostgreSQL server
started by ``scripts/services/postgres.sh`` (each test gets a fresh database).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bridge.config import Settings, TargetConfig
from bridge.db import make_engine, upgrade
from bridge.store import TaskStore

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / ".services"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def service_env(name: str) -> dict[str, str]:
    """What scripts/services/<name>.sh wrote to .services/<name>/env, or {} if not started."""
    path = SERVICES / name / "env"
    return read_env_file(path) if path.is_file() else {}


def slurm_ping(env: dict[str, str], wait_s: float = 60.0) -> str | None:
    """``None`` once ``scontrol ping`` says the controller is up, else its last answer.

    Waits up to ``wait_s``: a test before this one may have restarted slurmctld (the
    restart tests do), and a controller coming back should not turn a test into a skip.
    """
    deadline = time.monotonic() + wait_s
    while True:
        ping = subprocess.run(
            ["scontrol", "ping"], env={**os.environ, **env}, capture_output=True, text=True
        )
        if "is UP" in ping.stdout:
            return None
        if time.monotonic() >= deadline:
            return ping.stdout.strip() or ping.stderr.strip()
        time.sleep(1.0)


def postgres_admin_url() -> str | None:
    return os.environ.get("BRIDGE_TEST_POSTGRES_URL") or service_env("postgres").get(
        "BRIDGE_TEST_POSTGRES_URL"
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin = postgres_admin_url()
    if not admin:
        pytest.skip(
            "PostgreSQL is not running: scripts/services/postgres.sh writes "
            ".services/postgres/env when it is"
        )
    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(
        admin.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        targets=[TargetConfig(name="local", kind="local", container_runtime="none")],
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[TaskStore]:
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    yield TaskStore(engine)
    engine.dispose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that touches the one Slurm cluster runs on one xdist worker (some
    restart slurmctld); the rest spread over the others (``--dist loadgroup``).

    Not enough alone: with pytest 9, xdist 3.8 cannot rename the grouped tests (it
    sets an attribute pytest no longer reads), so they spread over both workers all
    the same. :func:`_one_slurm_test_at_a_time` is what holds."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(autouse=True)
def _one_slurm_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """A Slurm test waits for the one running on another worker: some stop slurmctld,
    and a test submitting meanwhile fails with "Unable to contact slurm controller"."""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    SERVICES.mkdir(exist_ok=True)
    with open(SERVICES / "slurm-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
