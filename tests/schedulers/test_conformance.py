"""The shared backend conformance suite, run against every backend available here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schedulers.aws_batch import AwsBatchBackend
from schedulers.aws_batch_settings import AwsBatchSettings
from schedulers.local import LocalBackend
from schedulers.slurm import SlurmBackend
from schedulers.transport import CommandRunner
from tests.conftest import REPO, read_env_file
from tests.schedulers.aws_batch_env import client, make_environment, moto_url
from tests.schedulers.conformance import BackendConformance


class TestLocalBackend(BackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[LocalBackend]:
        backend = LocalBackend(name="local")
        yield backend
        await backend.close()

    def unknown_job_id(self) -> str:
        return "999999999:1"


@pytest.mark.slurm
class TestSlurmBackend(BackendConformance):
    @pytest.fixture
    async def backend(self, slurm_runner: CommandRunner) -> AsyncIterator[SlurmBackend]:
        backend = SlurmBackend(slurm_runner, name="conformance")
        yield backend
        await backend.close()


@pytest.mark.batch
@pytest.mark.docker
class TestAwsBatchBackend(BackendConformance):
    """moto's Batch in docker mode: each job runs in a container of the offline base image
    on the private dockerd, with the test's temporary directories mounted at their paths."""

    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[AwsBatchBackend]:
        url = moto_url("MOTO_DOCKER_URL")
        image = read_env_file(REPO / ".services" / "docker.env").get("BRIDGE_BASE_IMAGE", "")
        env = make_environment(url)
        settings = AwsBatchSettings(
            endpoint_url=url,
            job_queue=env.queue,
            agent_image=image,
            docker_socket=None,
            scratch_dir=str(tmp_path),
            node_mounts=[str(tmp_path)],
        )
        backend = AwsBatchBackend("conformance", settings, client=client("batch", url))
        yield backend
        await backend.close()

    agent_not_runnable = (
        "a Batch job runs in a container of the job's image, which does not hold this "
        "checkout's bridge-agent; the agent inside the agent image is tested end to end "
        "in tests/bridge/test_batch_docker.py"
    )

    def unknown_job_id(self) -> str:
        return "00000000-0000-0000-0000-000000000000"
