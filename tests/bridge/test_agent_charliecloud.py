"""The agent running executors in a real Charliecloud container (``ch-run``).

The image is a root file system made on the spot from a static busybox, so nothing is
downloaded; the test skips where ``ch-run`` or a static busybox is missing (Debian:
``charliecloud-runtime``, ``busybox-static``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bridge.agent_fixtures import (
    agent_env,
    build_busybox_rootfs,
    make_workdir,
    run_agent,
    status_of,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    if shutil.which("ch-run") is None:
        pytest.skip("ch-run not found (Debian package charliecloud-runtime)")
    image = build_busybox_rootfs(tmp_path / "image")
    if image is None:
        pytest.skip("no static busybox to build an image from (Debian package busybox-static)")
    (image / "etc" / "image-marker").write_text("inside the image\n")
    return image


@pytest.mark.parametrize("requested", ["charliecloud", "auto"])
def test_executors_run_inside_the_image(tmp_path: Path, rootfs: Path, requested: str) -> None:
    results = tmp_path / "results"
    task = {
        "id": "ch-1",
        "inputs": [{"path": "/data/in.txt", "content": "a\nb\n"}],
        "outputs": [{"path": "/out/report.txt", "url": str(results / "report.txt")}],
        "executors": [
            {
                "image": str(rootfs),
                "command": [
                    "/bin/sh",
                    "-c",
                    # /etc/image-marker exists only in the image: proof the image was used
                    'cat /etc/image-marker && wc -l < /data/in.txt > /out/report.txt && echo "$GREETING" && pwd',
                ],
                "workdir": "/out",
                "env": {"GREETING": "hello from inside"},
            }
        ],
    }
    wd = make_workdir(tmp_path / "wd", task, {"container_runtime": requested})
    done = run_agent(str(wd), env=agent_env(tmp_path, {"USER": "root"}))
    status = status_of(str(wd))
    assert status["state"] == "COMPLETE", (status["system_logs"], status["executors"], done.stderr)
    assert status["executors"][0]["stdout"] == "inside the image\nhello from inside\n/out\n"
    assert (results / "report.txt").read_text().strip() == "2"
    assert status["metadata"]["container_runtime"] == "charliecloud"
    assert status["metadata"]["image_used"] == "true"
