"""The broker's build table: tasks wait on one build, fail with its log, can be cancelled.

A real broker and API in a thread.  The failing build is a real ``docker build`` whose
base image cannot be pulled (its registry port is closed); the webhook is a real HTTP
server in the test.  The waiting task waits on a build another broker holds (a row
this broker did not start, as in a shared database).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.client import BridgeClient
from bridge.config import Settings, TargetConfig
from bridge.db import make_engine, upgrade
from bridge.envs_config import EnvsConfig
from bridge.envs_store import EnvBuildStore
from bridge.server import free_port, serve_in_thread
from spack_envs.requests import request_from_parameters
from tests.conftest import SERVICES, read_env_file

pytestmark = pytest.mark.envs


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()


def _serve(settings: Settings) -> Any:
    settings.broker.poll_interval_s = 0.2
    return serve_in_thread(settings)


def _task(params: dict[str, str]) -> dict[str, Any]:
    return {
        "resources": {"backend_parameters": params},
        "executors": [{"image": "debian:bookworm", "command": ["true"]}],
    }


@pytest.mark.docker
def test_a_failed_build_fails_every_task_waiting_on_it_with_the_log(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    path = SERVICES / "docker.env"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run scripts/services/dockerd.sh (scripts/test does)")
    docker = {"DOCKER_HOST": read_env_file(path)["DOCKER_HOST"]}
    url, received = webhook
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        targets=[TargetConfig(name="local", kind="local", container_runtime="docker", env=docker)],
        envs=EnvsConfig(
            base_image=f"127.0.0.1:{_closed_port()}/nothing:here",
            engine="docker",
            env=docker,
            webhook_url=url,
        ),
    )
    with _serve(settings) as api, BridgeClient(api) as client:
        params = {"bridge.apt": "jq", "bridge.arch": "x86_64"}
        futures = [client.submit(_task(params)) for _ in range(2)]
        tasks = [f.wait(timeout=120) for f in futures]
        reasons = [client.events(f.id)[-1]["reason"] for f in futures]
    assert [t["state"] for t in tasks] == ["SYSTEM_ERROR", "SYSTEM_ERROR"]
    builds = EnvBuildStore(make_engine(settings.effective_database_url)).list()
    assert [b.status for b in builds] == ["failed"]
    tail = builds[0].log_tail(3).splitlines()[-1]
    for reason in reasons:
        assert reason.startswith(f"build {builds[0].key} (apt:jq for x86_64, container) failed")
        assert tail in reason
    assert "docker build" in builds[0].log
    assert received and received[-1]["key"] == builds[0].key
    assert received[-1]["status"] == "failed" and received[-1]["log_tail"]


def test_a_task_waits_on_a_build_held_elsewhere_and_can_be_cancelled(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        targets=[TargetConfig(name="local", kind="local", container_runtime="none")],
    )
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    params = {"bridge.pip": "six", "bridge.arch": "x86_64_v2"}
    request = request_from_parameters(
        params, placement_target="x86_64_v2", base_image=settings.envs.base_image
    )
    assert request is not None
    builds = EnvBuildStore(engine)
    builds.claim(
        request.key,
        target=request.target,
        fmt=request.format,
        request=request.canonical(),
        description=request.describe(),
        builder="another-broker",
    )
    with _serve(settings) as api, BridgeClient(api) as client:
        future = client.submit(_task(params))
        end = time.monotonic() + 60
        while time.monotonic() < end and future.state != "INITIALIZING":
            time.sleep(0.1)
        assert future.state == "INITIALIZING"
        waiting = client.events(future.id)[-1]["reason"]
        assert waiting.startswith(f"waiting for build {request.key}")
        future.cancel()
        task = future.wait(timeout=60)
        assert task["state"] == "CANCELED"
    row = builds.get(request.key)
    assert row is not None and (row.status, row.builder) == ("building", "another-broker")
