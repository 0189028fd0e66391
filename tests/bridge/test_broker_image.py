"""The broker image (deploy/broker-image/Containerfile) builds on the offline Debian base
and ``bridge serve`` in it answers service-info.

The base image ``bridge-base:bookworm`` is a debootstrap root imported by
``scripts/services/dockerd.sh``; the broker and its Python dependencies go in from a
directory of wheels built here, with pip told never to contact an index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.server import free_port
from tests.conftest import REPO, SERVICES, read_env_file

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker_env() -> dict[str, str]:
    env_file = SERVICES / "docker.env"
    if not env_file.is_file():
        pytest.skip(f"dockerd is not set up: {env_file} missing (run scripts/services/dockerd.sh)")
    values = read_env_file(env_file)
    env = {**os.environ, "DOCKER_HOST": values["DOCKER_HOST"], "DOCKER_BUILDKIT": "0"}
    ping = subprocess.run(["docker", "version"], env=env, capture_output=True, text=True)
    if ping.returncode != 0:
        pytest.skip(f"dockerd does not answer at {values['DOCKER_HOST']}: {ping.stderr.strip()}")
    base = values.get("BRIDGE_BASE_IMAGE", "bridge-base:bookworm")
    has_base = subprocess.run(["docker", "image", "inspect", base], env=env, capture_output=True)
    if has_base.returncode != 0:
        pytest.skip(f"the base image {base} is missing (scripts/services/dockerd.sh makes it)")
    return env


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def image(docker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    context = tmp_path_factory.mktemp("broker-image")
    src = tmp_path_factory.mktemp("src")
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    shutil.copy(REPO / "deploy" / "broker-image" / "Containerfile", context / "Containerfile")
    # the project's wheel and its dependencies' wheels (the image's Python is 3.11 too);
    # dependencies come from a wheelhouse kept between runs when it has them all
    wheels = context / "wheels"
    house = Path.home() / ".cache" / "converged-bridge-tests" / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels)]
    offline = subprocess.run(
        [*pip, "--no-index", "--find-links", str(house), str(src)], capture_output=True, timeout=600
    )
    if offline.returncode != 0:
        subprocess.run([*pip, str(src)], check=True, timeout=600)
        for wheel in wheels.glob("*.whl"):
            if not wheel.name.startswith("converged_bridge-"):
                shutil.copy(wheel, house / wheel.name)
        # what building the project needs, for the next offline run
        build_deps = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(house)]
        subprocess.run([*build_deps, "setuptools>=77", "wheel"], check=True, timeout=300)
    tag = f"converged-bridge-test:{uuid.uuid4().hex[:10]}"
    docker(
        docker_env,
        "build", "--network", "host", "-f", str(context / "Containerfile"), "-t", tag, str(context),
        timeout=900,
    )  # fmt: skip
    yield tag
    # --no-prune keeps the parent layers: the next build reuses the Debian packages layer
    subprocess.run(["docker", "rmi", "--no-prune", tag], env=docker_env, capture_output=True)


def test_bridge_serve_in_the_image_answers_service_info(
    docker_env: dict[str, str], image: str
) -> None:
    port = free_port()
    name = f"bridge-test-{uuid.uuid4().hex[:10]}"
    docker(
        docker_env,
        "run", "-d", "--name", name, "--network", "host",
        "-e", "BRIDGE_HOST=127.0.0.1", "-e", f"BRIDGE_PORT={port}", image,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/ga4gh/tes/v1/service-info", timeout=2
                )
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            state = docker(docker_env, "inspect", "-f", "{{.State.Status}}", name).strip()
            assert state == "running", docker(docker_env, "logs", name)
            assert time.monotonic() < deadline, docker(docker_env, "logs", name)
            time.sleep(0.5)
        info = response.json()
        assert info["type"]["artifact"] == "tes" and info["name"]
        user = docker(docker_env, "exec", name, "id", "-un").strip()
        assert user == "bridge"  # the broker does not run as root in its image
        docker(docker_env, "stop", "-t", "60", name, timeout=120)  # SIGTERM: a clean exit
        assert docker(docker_env, "inspect", "-f", "{{.State.ExitCode}}", name).strip() == "0"
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=docker_env, capture_output=True)
