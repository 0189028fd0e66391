"""What every :class:`schedulers.base.Backend` must do, as one test class.

Each backend's test module subclasses :class:`BackendConformance` and provides the
``backend`` fixture (an async fixture, run by anyio on asyncio); the tests here then run
against that backend unchanged.  Jobs are tiny shell commands writing into
``workdir``, which every backend here shares with the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from schedulers.base import Backend, JobSpec, JobState, JobStatus, Resources


async def wait_finished(
    backend: Backend, job_ids: Sequence[str], timeout: float = 90.0, want_running: bool = False
) -> Mapping[str, JobStatus]:
    deadline = time.monotonic() + timeout
    last: Mapping[str, JobStatus] = {}
    while time.monotonic() < deadline:
        last = await backend.status(job_ids)
        states = [s.state for s in last.values()]
        if want_running and all(s is JobState.RUNNING for s in states):
            return last
        if not want_running and all(s.finished for s in states):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"jobs did not get there in {timeout} s: {last}")


def spec(workdir: Path, name: str, script: str, **resources: object) -> JobSpec:
    return JobSpec(
        name=name,
        argv=["sh", "-c", script],
        workdir=str(workdir),
        resources=Resources(**resources),  # type: ignore[arg-type]
        stdout_path=str(workdir / f"{name}.out"),
        stderr_path=str(workdir / f"{name}.err"),
    )


@pytest.mark.anyio
class BackendConformance:
    """Subclass and provide a ``backend`` fixture yielding the backend under test."""

    async def test_a_job_runs_its_argv_and_completes(self, backend: Backend, workdir: Path) -> None:
        job = await backend.submit(
            spec(workdir, "ok", "echo out; echo err >&2; echo done > marker")
        )
        states = await wait_finished(backend, [job])
        assert states[job].state is JobState.COMPLETED, states
        assert (workdir / "marker").read_text() == "done\n"
        assert (workdir / "ok.out").read_text().strip().endswith("out")

    async def test_a_failing_job_reports_failed(self, backend: Backend, workdir: Path) -> None:
        job = await backend.submit(spec(workdir, "bad", "exit 3"))
        states = await wait_finished(backend, [job])
        assert states[job].state is JobState.FAILED, states
        assert states[job].exit_code in (3, None)  # some sites only know "failed"

    async def test_an_unknown_job_is_lost(self, backend: Backend) -> None:
        unknown = self.unknown_job_id()
        states = await backend.status([unknown])
        assert states[unknown].state is JobState.LOST

    async def test_cancel_stops_a_running_job(self, backend: Backend, workdir: Path) -> None:
        job = await backend.submit(spec(workdir, "long", "sleep 60; echo late > late"))
        await wait_finished(backend, [job], want_running=True)
        started = time.monotonic()
        await backend.cancel([job])
        states = await wait_finished(backend, [job], timeout=30)
        assert states[job].state in (JobState.CANCELLED, JobState.FAILED), states
        assert time.monotonic() - started < 30
        assert not (workdir / "late").exists()

    async def test_an_array_runs_every_spec(self, backend: Backend, workdir: Path) -> None:
        specs = [spec(workdir, f"el{i}", f"echo {i} > result{i}") for i in range(4)]
        jobs = await backend.submit_array(specs)
        assert len(set(jobs)) == 4
        states = await wait_finished(backend, jobs)
        assert all(s.state is JobState.COMPLETED for s in states.values()), states
        assert [(workdir / f"result{i}").read_text() for i in range(4)] == [
            f"{i}\n" for i in range(4)
        ]

    async def test_probe_describes_the_target(self, backend: Backend) -> None:
        info = await backend.probe()
        assert info.healthy, info.detail
        assert info.cpus and info.cpus >= 1
        assert info.microarchitecture  # an archspec name such as x86_64_v3

    def unknown_job_id(self) -> str:
        return "999999999"
