"""The shared backend conformance suite, run against every backend available here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schedulers.local import LocalBackend
from schedulers.slurm import SlurmBackend
from schedulers.transport import CommandRunner
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
