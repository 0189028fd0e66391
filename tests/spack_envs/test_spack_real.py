"""Real Spack: environments pinned to CPU targets, built from a local mirror, used by tasks.

Needs a real ``spack`` (on PATH or ``$SPACK_ROOT/bin/spack``, README: Spack 1.1.0 with the
``v2025.11.0`` recipes) whose mirror has bzip2's source; skips with that reason where
there is none.  Nothing here replays recorded output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.db import make_engine
from bridge.envs_store import EnvBuildStore
from bridge.server import free_port, serve_in_thread
from spack_envs import targets
from spack_envs.requests import EnvRequest
from spack_envs.spack import SpackBuilder, find_spack, lock_targets

# A concretization over the whole recipe repository takes minutes on two busy cores.
pytestmark = [pytest.mark.envs, pytest.mark.spack, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture
def spack() -> SpackBuilder:
    if find_spack(os.environ) is None:
        pytest.skip(
            "spack not found: not on PATH and no $SPACK_ROOT/bin/spack "
            "(README, 'Spack versions', says how to set up Spack 1.1.0)"
        )
    return SpackBuilder(env=dict(os.environ), timeout=900)


@pytest.mark.parametrize("pair", [("x86_64_v2", "x86_64_v3")])
def test_one_environment_concretized_for_two_targets(
    spack: SpackBuilder, tmp_path: Path, pair: tuple[str, str]
) -> None:
    locks = {}
    for name in pair:
        request = EnvRequest(target=name, format="spack", specs=("bzip2",))
        env_dir = spack.create(request, tmp_path / name)
        locks[name] = spack.concretize(env_dir, tmp_path / name / "build.log")
    for name, lock in locks.items():
        assert lock.is_file()
        assert lock_targets(lock) == {name}, lock.read_text()[:2000]
    assert locks[pair[0]].read_bytes() != locks[pair[1]].read_bytes()


@pytest.fixture
def live(tmp_path: Path, spack: SpackBuilder) -> Iterator[tuple[BridgeClient, Settings]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        targets=[TargetConfig(name="local", kind="local", container_runtime="none")],
    )
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        yield client, settings


def test_a_task_runs_with_bzip2_built_for_the_hosts_target(
    live: tuple[BridgeClient, Settings],
) -> None:
    client, settings = live
    host = targets.host_microarchitecture()
    script = 'command -v bzip2 && echo "$LD_LIBRARY_PATH" && echo hello | bzip2 | bzip2 -d'
    future = client.submit(
        {
            "name": "bzip2-task",
            "resources": {"backend_parameters": {"bridge.spack": "bzip2"}},
            "executors": [{"image": "debian:bookworm", "command": ["sh", "-c", script]}],
        }
    )
    task = future.wait(timeout=1700)
    builds = EnvBuildStore(make_engine(settings.effective_database_url)).list()
    assert task["state"] == "COMPLETE", [b.log_tail(30) for b in builds]
    assert [(b.status, b.target, b.format) for b in builds] == [("ready", host, "spack")]
    view = builds[0].artifact["view"]
    out = task["logs"][-1]["logs"][0]["stdout"].splitlines()
    assert out[0] == f"{view}/bin/bzip2"
    assert out[1].startswith(f"{view}/lib")
    assert out[2] == "hello"

    # The lock pins the host's target, and Spack built the library with its flags.
    assert lock_targets(Path(builds[0].artifact["lock"])) == {host}
    library = next(Path(view, "lib").glob("libbz2.so*")).resolve()
    prefix = library.parent.parent
    recorded = (prefix / ".spack" / "spack-build-env.txt").read_text()
    flags = targets.compiler_flags(host, "gcc", "12")
    march = next(f for f in flags.split() if f.startswith(("-march=", "-mcpu=")))
    target_args = [line for line in recorded.splitlines() if "SPACK_TARGET_ARGS" in line]
    assert target_args and all(march in line for line in target_args), target_args


def test_containerize_writes_a_recipe_pinned_to_the_target(
    spack: SpackBuilder, tmp_path: Path
) -> None:
    request = EnvRequest(target="x86_64_v3", format="spack", specs=("bzip2",))
    env_dir = spack.create(request, tmp_path / "c")
    recipe = spack.containerize(env_dir, tmp_path / "c" / "build.log")
    assert "FROM " in recipe
    assert "target=x86_64_v3" in recipe and "bzip2" in recipe
