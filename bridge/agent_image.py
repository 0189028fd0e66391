"""Build (and push) the agent image an AWS Batch target's jobs run.

The recipe is ``deploy/agent-image/Containerfile``; this module stages its build
context and runs ``docker build --network none`` so the build needs no registry:

* ``debs/``: ``python3`` and ``python3-venv`` with whatever the base image lacks,
  resolved by apt against the *base image's* package database and downloaded by the
  host's apt (same Debian release);
* ``wheels/``: the project's wheel, plus wheels of the agent's own dependencies
  (:data:`AGENT_REQUIREMENTS`; the broker's web and database stack stays out);
* ``docker``: the host's Docker client binary.

With a ``registry`` the image is tagged ``<registry>/<agent_image>`` and pushed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "deploy" / "agent-image" / "Containerfile"
AGENT_REQUIREMENTS = ("boto3>=1.34", "httpx>=0.27")
DEBIAN_PACKAGES = ("python3", "python3-venv")


class ImageBuildError(RuntimeError):
    """A step of the build failed; the message names it and carries its output."""


def _run(argv: list[str], env: Mapping[str, str] | None = None, **kw: object) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, **kw)  # type: ignore[call-overload]
    if result.returncode:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise ImageBuildError(f"{' '.join(argv[:3])} failed: {output}")
    return str(result.stdout)


def stage_debs(base: str, dest: Path, env: Mapping[str, str]) -> None:
    """Download the .debs ``DEBIAN_PACKAGES`` need on top of the base image."""
    status = dest / "status"
    status.write_text(_run(["docker", "run", "--rm", base, "cat", "/var/lib/dpkg/status"], env))
    archives = dest / "debs"
    (archives / "partial").mkdir(parents=True)
    _run(
        [
            "apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends",
            "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache::archives={archives}",
            "-o", "Debug::NoLocking=1", *DEBIAN_PACKAGES,
        ],
        env,
    )  # fmt: skip
    shutil.rmtree(archives / "partial")
    status.unlink()
    if not list(archives.glob("*.deb")):
        raise ImageBuildError(f"apt found nothing to download for {DEBIAN_PACKAGES}")


def stage_wheels(root: Path, dest: Path) -> None:
    wheels = dest / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)])
    _run([*pip, "download", "-q", "--only-binary", ":all:", "-d", str(wheels), *AGENT_REQUIREMENTS])
    (wheels / "requirements.txt").write_text("\n".join(AGENT_REQUIREMENTS) + "\n")


def build_agent_image(
    tag: str, base: str, push: bool = False, env: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Build ``tag`` from ``base``; push it when ``push``.  Returns the tag and size."""
    root = RECIPE.parent.parent.parent
    env = {**os.environ, **(env or {})}
    docker = shutil.which("docker", path=env.get("PATH"))
    if docker is None:
        raise ImageBuildError("the docker client is not installed here")
    with tempfile.TemporaryDirectory(prefix="bridge-agent-image-") as tmp:
        ctx = Path(tmp)
        stage_debs(base, ctx, env)
        stage_wheels(root, ctx)
        shutil.copy(docker, ctx / "docker")
        shutil.copy(RECIPE, ctx / "Containerfile")
        build_env = {**env, "DOCKER_BUILDKIT": "0"}
        _run(
            ["docker", "build", "--network", "none", "--build-arg", f"BASE={base}",
             "-t", tag, "-f", str(ctx / "Containerfile"), str(ctx)],
            build_env,
        )  # fmt: skip
    if push:
        _run(["docker", "push", tag], env)
    size = json.loads(_run(["docker", "image", "inspect", tag, "--format", "{{json .Size}}"], env))
    return {"image": tag, "size_bytes": int(size), "pushed": push}
