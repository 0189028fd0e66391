"""The image builder on a real Docker daemon and registry: the node agent is added to a
task's image once per image digest."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from spack_envs.containers import AGENT_LABEL, ImageBuilder
from tests.conftest import SERVICES, read_env_file

pytestmark = [pytest.mark.envs, pytest.mark.docker]


def _service(name: str, script: str) -> dict[str, str]:
    path = SERVICES / f"{name}.env"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run scripts/services/{script} (scripts/test does)")
    return read_env_file(path)


def test_the_agent_is_added_once_per_image_digest(tmp_path: Path) -> None:
    docker = _service("docker", "dockerd.sh")
    registry = _service("registry", "registry.sh")["BRIDGE_REGISTRY"]
    env = {"DOCKER_HOST": docker["DOCKER_HOST"]}
    builder = ImageBuilder(
        engine="docker",
        registry=registry,
        repository=f"bridge-agent-test-{uuid.uuid4().hex[:10]}",
        env=env,
    )
    base = docker["BRIDGE_BASE_IMAGE"]
    digest = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", base],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    agent = tmp_path / "agent"
    (agent / "bin").mkdir(parents=True)
    script = agent / "bin" / "bridge-agent"
    script.write_text("#!/bin/sh\necho agent-here\n")
    script.chmod(0o755)

    first = builder.add_agent(base, digest, agent, tmp_path / "b1")
    second = builder.add_agent(base, digest, agent, tmp_path / "b2")
    assert first.reference == second.reference
    assert first.digest.startswith("sha256:") and second.digest == first.digest
    assert (tmp_path / "b1" / "build.log").is_file()
    assert not (tmp_path / "b2" / "build.log").exists()  # nothing was built the second time
    labels = builder.labels(first.reference)
    assert labels[AGENT_LABEL] == digest
    out = subprocess.run(
        ["docker", "run", "--rm", first.reference, "bridge-agent"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "agent-here\n"
    tags = json.loads(
        subprocess.run(
            ["curl", "-sf", f"http://{registry}/v2/{builder.repository}-agent/tags/list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert tags["tags"] == [first.reference.rsplit(":", 1)[1]]
