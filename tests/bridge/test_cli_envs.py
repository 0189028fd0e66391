"""``bridge envs build|list|show|logs`` on a real Docker daemon and registry."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from bridge.cli import main
from tests.conftest import SERVICES, read_env_file

pytestmark = [pytest.mark.envs, pytest.mark.docker, pytest.mark.slow]


def _service(name: str, script: str) -> dict[str, str]:
    path = SERVICES / f"{name}.env"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run scripts/services/{script} (scripts/test does)")
    return read_env_file(path)


def test_build_list_show_and_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docker = _service("docker", "dockerd.sh")
    registry = _service("registry", "registry.sh")["BRIDGE_REGISTRY"]
    ca = next(
        (
            os.environ[v]
            for v in ("PIP_CERT", "SSL_CERT_FILE")
            if Path(os.environ.get(v, "")).is_file()
        ),
        None,
    )
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[envs]\n"
        f'registry = "{registry}"\n'
        f'repository = "bridge-env-cli-{uuid.uuid4().hex[:10]}"\n'
        f'base_image = "{docker["BRIDGE_BASE_IMAGE"]}"\n'
        'engine = "docker"\n'
        + (f'build_ca_bundle = "{ca}"\n' if ca else "")
        + f'env = {{ DOCKER_HOST = "{docker["DOCKER_HOST"]}" }}\n'
    )
    common = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    build = ["envs", "build", *common, "--pip", "six", "--apt", "jq", "--arch", "x86_64_v3"]
    assert main(build) == 0
    out = capsys.readouterr().out
    key = out.split()[0]
    artifact = json.loads(out[out.index("{") :])
    assert artifact["target"] == "x86_64_v3" and "@sha256:" in artifact["image"]

    assert main(["envs", "list", *common]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["KEY", "STATUS", "TARGET"]
    assert listing[1].split()[:3] == [key, "ready", "x86_64_v3"]

    assert main(["envs", "show", *common, key]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["artifact"] == artifact and shown["request"]["pip"] == ["six"]

    assert main(["envs", "logs", *common, key]) == 0
    assert "docker build" in capsys.readouterr().out

    assert main(["envs", "build", *common, "--pip", "six", "--arch", "neoverse_v1"]) == 2
    assert "aarch64" in capsys.readouterr().err
    assert main(["envs", "show", *common, "nope"]) == 1
