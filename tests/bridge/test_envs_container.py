"""A task asking for pip and Debian packages for ``x86_64_v3`` gets an image built once.

Real services: the broker and API in a thread, the Docker daemon and the OCI registry
started by ``scripts/services/dockerd.sh`` and ``scripts/services/registry.sh``.  Each
test pushes to its own repository, so every run builds and pushes (Docker's layer cache
makes a repeated build quick; the first one on a machine takes a minute or two).  The
first task waits in INITIALIZING on the build, then runs in the pushed image with the
docker runtime; a second identical task runs in the same image without a second build;
a task asking for an arm target on these x86 nodes is refused before anything is built.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.client import BridgeClient, TaskFailed
from bridge.config import Settings, TargetConfig
from bridge.db import make_engine
from bridge.envs_config import EnvsConfig
from bridge.envs_store import EnvBuildStore
from bridge.server import free_port, serve_in_thread
from tests.conftest import SERVICES, read_env_file

pytestmark = [pytest.mark.envs, pytest.mark.docker, pytest.mark.slow]


def _service(name: str, script: str) -> dict[str, str]:
    path = SERVICES / f"{name}.env"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run scripts/services/{script} (scripts/test does)")
    return read_env_file(path)


@pytest.fixture
def docker_env() -> dict[str, str]:
    env = _service("docker", "dockerd.sh")
    return {"DOCKER_HOST": env["DOCKER_HOST"], "BRIDGE_BASE_IMAGE": env["BRIDGE_BASE_IMAGE"]}


@pytest.fixture
def registry() -> str:
    return _service("registry", "registry.sh")["BRIDGE_REGISTRY"]


def _ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts (TLS may be intercepted on the way out)."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    return None


@pytest.fixture
def live(
    tmp_path: Path, docker_env: dict[str, str], registry: str
) -> Iterator[tuple[BridgeClient, Settings]]:
    docker = {"DOCKER_HOST": docker_env["DOCKER_HOST"]}
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        targets=[TargetConfig(name="local", kind="local", container_runtime="docker", env=docker)],
        envs=EnvsConfig(
            registry=registry,
            repository=f"bridge-env-test-{uuid.uuid4().hex[:10]}",
            base_image=docker_env["BRIDGE_BASE_IMAGE"],
            engine="docker",
            env=docker,
            build_ca_bundle=_ca_bundle(),
        ),
    )
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        yield client, settings


def _task(arch: str) -> dict[str, Any]:
    script = (
        "python3 -c \"import six; print('six', six.__version__)\" && jq --version && "
        'echo "target=$BRIDGE_TARGET" && echo "cflags=$CFLAGS"'
    )
    return {
        "name": "env-task",
        "resources": {
            "backend_parameters": {
                "bridge.pip": "six",
                "bridge.apt": "jq",
                "bridge.arch": arch,
            }
        },
        "executors": [{"image": "debian:bookworm", "command": ["sh", "-c", script]}],
    }


def _reasons(client: BridgeClient, task_id: str) -> list[str]:
    return [str(e.get("reason", "")) for e in client.events(task_id)]


def test_an_image_is_built_once_pushed_and_reused(
    live: tuple[BridgeClient, Settings], registry: str
) -> None:
    client, settings = live
    first = client.submit(_task("x86_64_v3"))
    task = first.wait(timeout=500)
    assert task["state"] == "COMPLETE", (task, _reasons(client, first.id))
    log = task["logs"][-1]
    stdout = log["logs"][0]["stdout"]
    assert "six " in stdout and "jq-" in stdout
    assert "target=x86_64_v3" in stdout and "-march=x86-64-v3" in stdout
    assert log["metadata"]["container_runtime"] == "docker"
    assert log["metadata"]["image_used"] == "true"
    assert any(r.startswith("waiting for build") for r in _reasons(client, first.id))

    builds = EnvBuildStore(make_engine(settings.effective_database_url)).list()
    assert [(b.status, b.target, b.format) for b in builds] == [("ready", "x86_64_v3", "container")]
    build = builds[0]
    image = build.artifact["image"]
    assert image.startswith(f"{registry}/{settings.envs.repository}@sha256:")
    tags = httpx.get(f"http://{registry}/v2/{settings.envs.repository}/tags/list").json()
    assert tags["tags"] == [build.artifact["reference"].rsplit(":", 1)[1]]

    second = client.submit(_task("x86_64_v3"))
    again = second.result(timeout=120)
    assert "target=x86_64_v3" in again["logs"][-1]["logs"][0]["stdout"]
    assert not any(r.startswith("waiting for build") for r in _reasons(client, second.id))
    after = EnvBuildStore(make_engine(settings.effective_database_url)).list()
    assert [(b.key, b.updated_time, b.artifact) for b in after] == [
        (build.key, build.updated_time, build.artifact)
    ]


def test_an_impossible_target_is_refused_before_building(
    live: tuple[BridgeClient, Settings], docker_env: dict[str, str]
) -> None:
    client, settings = live
    future = client.submit(_task("neoverse_v1"))
    with pytest.raises(TaskFailed) as failed:
        future.result(timeout=60)
    reason = _reasons(client, future.id)[-1]
    assert failed.value.task["state"] == "SYSTEM_ERROR"
    assert "neoverse_v1" in reason and "cannot run" in reason  # refused at placement
    assert EnvBuildStore(make_engine(settings.effective_database_url)).list() == []
