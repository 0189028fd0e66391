"""Routing prefers a target whose build of the task's software is ready.

The build table is real (SQLite, as the broker keeps it); builds are rows another broker
finished or holds, so no image is built here. The broker test runs two real local
targets; one reports a generic x86-64 CPU instead of this machine's (see
:class:`GenericCpuBackend`), so that the same software has two builds, one per target.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import archspec.cpu
import pytest
from sqlalchemy import update

from bridge import workspace
from bridge.broker import Broker
from bridge.config import Settings, TargetConfig
from bridge.db import make_engine, upgrade
from bridge.envs_broker import EnvBroker
from bridge.envs_store import B, EnvBuildStore
from bridge.routing_policy import TargetRouting
from bridge.store import TaskStore, utcnow
from schedulers.base import TargetInfo
from schedulers.local import LocalBackend
from spack_envs.requests import EnvRequest, request_from_parameters

pytestmark = [pytest.mark.envs, pytest.mark.router]

PARAMS = {"bridge.pip": "six"}
HOST = archspec.cpu.host()


def _document() -> dict[str, Any]:
    return {
        "resources": {"backend_parameters": PARAMS},
        "executors": [{"image": "debian:bookworm", "command": ["true"]}],
    }


def _store(tmp_path: Path) -> tuple[Settings, TaskStore]:
    settings = Settings(
        data_dir=tmp_path / "data",
        targets=[
            TargetConfig(name="a-host", kind="local", container_runtime="none"),
            TargetConfig(name="b-generic", kind="local", container_runtime="none"),
        ],
    )
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return settings, TaskStore(engine)


def _request(settings: Settings, arch: str) -> EnvRequest:
    request = request_from_parameters(
        PARAMS, placement_target=arch, base_image=settings.envs.base_image
    )
    assert request is not None
    return request


def _claim(builds: EnvBuildStore, request: EnvRequest, builder: str = "another-broker") -> None:
    builds.claim(
        request.key,
        target=request.target,
        fmt=request.format,
        request=request.canonical(),
        description=request.describe(),
        builder=builder,
    )


def _info(name: str, arch: str | None) -> TargetInfo:
    return TargetInfo(name=name, kind="local", cpus=8, memory_mb=16_000, microarchitecture=arch)


def test_build_waits_per_target_from_the_build_table(tmp_path: Path) -> None:
    settings, store = _store(tmp_path)
    envs = EnvBroker(settings, store)
    builds = envs.builds
    try:
        ready, running = _request(settings, "x86_64_v3"), _request(settings, "x86_64_v2")
        _claim(builds, ready)
        # It took 20 minutes: the typical build of its format from now on.
        with builds.engine.begin() as conn:
            conn.execute(
                update(B)
                .where(B.c.key == ready.key)
                .values(created_time=utcnow() - timedelta(minutes=20))
            )
        builds.finish(ready.key, "ready", {"image": "bridge-env:x"}, "built")
        _claim(builds, running)  # started just now, by a broker still alive
        candidates = [
            (TargetConfig(name="v3", kind="local"), _info("v3", "x86_64_v3")),
            (TargetConfig(name="v2", kind="local"), _info("v2", "x86_64_v2")),
            (TargetConfig(name="v4", kind="local"), _info("v4", "x86_64_v4")),
            # Not probed yet: built for the CPUs its configuration declares.
            (
                TargetConfig(
                    name="declared", kind="local", routing=TargetRouting(arch="x86_64_v3")
                ),
                None,
            ),
        ]
        waits = envs.build_waits(_document(), candidates)
        assert set(waits) == {"v2", "v4"}  # v3 and the declared v3 are built
        assert 1100 <= waits["v2"] <= 1200  # 20 min typical, just started
        assert 1190 <= waits["v4"] <= 1210  # not started: the typical build
        # A dispatch turn shares one read per build among its tasks.
        turn: dict[str, float | None] = {}
        first = envs.build_waits(_document(), candidates, turn)
        assert set(turn) == {ready.key, running.key, _request(settings, "x86_64_v4").key}
        builds.delete(running.key)  # read already this turn: not read again
        assert envs.build_waits(_document(), candidates, turn) == first
        assert first.keys() == waits.keys()
        no_software = {"executors": [{"image": "alpine", "command": ["true"]}]}
        assert envs.build_waits(no_software, candidates) == {}
    finally:
        envs.close()


class GenericCpuBackend(LocalBackend):
    """FAKE, for what one machine cannot show: a second CPU microarchitecture. A real
    local backend that reports generic x86-64 CPUs instead of this machine's."""

    def _probe(self) -> TargetInfo:
        info = super()._probe()
        return TargetInfo(
            name=info.name,
            kind=info.kind,
            microarchitecture="x86_64",
            cpus=info.cpus,
            memory_mb=info.memory_mb,
            detail=info.detail,
        )


@pytest.mark.skipif(HOST.family.name != "x86_64", reason="needs an x86-64 machine")
def test_the_broker_places_a_task_where_its_software_is_built(tmp_path: Path) -> None:
    settings, store = _store(tmp_path)
    settings.broker.poll_interval_s = 0.2
    workspace.prepare_base(settings.effective_work_url)
    builds = EnvBuildStore(store.engine)
    built = _request(settings, "x86_64")
    _claim(builds, built)
    builds.finish(built.key, "ready", {"image": "bridge-env:generic"}, "built elsewhere")
    # On this machine's own CPUs the software was never built: a-host would come first
    # by name, and b-generic is where the build is ready.
    assert _request(settings, HOST.name).key != built.key

    async def main() -> tuple[str, str]:
        backends = {"a-host": LocalBackend("a-host"), "b-generic": GenericCpuBackend("b-generic")}
        broker = Broker(settings, store, backends)
        await broker.start()
        try:
            task_id = store.create(_document(), "alice")
            seq = store.get(task_id).seq
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                attempts = store.attempts_for([seq])[seq]
                reason = store.get(task_id).placement_reason
                if attempts:
                    return attempts[0].target, reason
                if reason.startswith("waiting for build"):  # placed where it must build
                    return "", reason
                await asyncio.sleep(0.1)
            raise AssertionError("the task was not placed within 60 s")
        finally:
            await broker.stop()

    target, reason = asyncio.run(main())
    assert target == "b-generic"
    assert reason.startswith("b-generic: its software is built")
    assert "(build not done there)" in reason
    # Nothing was built for a-host's CPUs: the preference did not start a build.
    assert builds.get(_request(settings, HOST.name).key) is None
