"""The Dask backend on real clusters: a LocalCluster, a scheduler and workers running as
processes of their own, and workers started as jobs on the test Slurm cluster."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import archspec.cpu
import pytest
from pydantic import ValidationError

from schedulers.base import Backend, JobSpec, JobState, Resources
from schedulers.dask_cluster import CAPABILITIES, DaskBackend, create
from schedulers.dask_settings import DaskSettings, LocalClusterSettings, SlurmClusterSettings
from schedulers.dask_states import job_status, most_generic
from schedulers.errors import BackendUnavailable, SubmitError
from tests.conftest import service_env
from tests.schedulers.conformance import BackendConformance, spec, wait_finished
from tests.schedulers.dask_procs import DaskProcs, dask_processes

pytestmark = [pytest.mark.dask, pytest.mark.anyio]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


async def read_pid(path: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never written")


async def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive after {timeout} s"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcs]:
    """One scheduler process with one worker of 2 threads declaring 2 cpus."""
    with dask_processes(tmp_path_factory.mktemp("dask"), nthreads=2, cpus=2) as running:
        yield running


@pytest.fixture
async def remote(procs: DaskProcs) -> AsyncIterator[DaskBackend]:
    backend = create("remote", DaskSettings(address=procs.address, kill_grace_s=1))
    yield backend
    await backend.close()


class TestDaskLocalCluster(BackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[DaskBackend]:
        local = LocalClusterSettings(n_workers=2, processes=False)
        backend = create("laptop", DaskSettings(local=local))
        yield backend
        await backend.close()


class TestDaskSchedulerProcess(BackendConformance):
    @pytest.fixture
    async def backend(self, remote: DaskBackend) -> DaskBackend:
        return remote


def test_settings_take_one_cluster_and_sane_bounds() -> None:
    assert DaskSettings().mode == "local"
    assert DaskSettings(address="tcp://h:1").mode == "address"
    with pytest.raises(ValidationError, match="one of address, local, slurm"):
        DaskSettings(address="tcp://h:1", local=LocalClusterSettings())
    with pytest.raises(ValidationError, match="min_workers"):
        SlurmClusterSettings(min_workers=3, max_workers=2)
    with pytest.raises(ValidationError, match="extra"):
        DaskSettings.model_validate({"kind": "dask", "adress": "tcp://h:1"})


def test_declares_its_capabilities() -> None:
    assert CAPABILITIES.submit_many and CAPABILITIES.adopt_by_name
    assert not CAPABILITIES.native_arrays and not CAPABILITIES.gpus
    assert isinstance(create("x", DaskSettings()), Backend)


async def test_a_restarted_broker_adopts_its_jobs_by_name(procs: DaskProcs, workdir: Path) -> None:
    first = create("a", DaskSettings(address=procs.address))
    [job] = await first.submit_many([spec(workdir, "bridge-adopt-1", "sleep 1; echo x > done")])
    assert job == "bridge-adopt-1"
    await first.close()  # the broker goes away; the scheduler keeps the job
    second = create("a", DaskSettings(address=procs.address))
    try:
        found = await second.adopt(["bridge-adopt-1", "bridge-never-1"])
        assert found == {"bridge-adopt-1": "bridge-adopt-1"}
        states = await wait_finished(second, [job])
        assert states[job].state is JobState.COMPLETED
        # the same name again is the same job: it does not run a second time
        (workdir / "done").unlink()
        assert await second.submit(spec(workdir, "bridge-adopt-1", "echo x > done")) == job
        assert (await wait_finished(second, [job]))[job].state is JobState.COMPLETED
        assert not (workdir / "done").exists()
    finally:
        await second.close()


async def test_cancel_kills_the_whole_job_on_the_worker(remote: DaskBackend, workdir: Path) -> None:
    """The job ignores SIGTERM and starts a child in a session of its own (as the agent
    runs executors): both are gone after the cancel's grace period."""
    script = "trap '' TERM; setsid sleep 300 & echo $! > child; echo $$ > pid; wait"
    job = await remote.submit(spec(workdir, "stubborn", script))
    pid, child = await read_pid(workdir / "pid"), await read_pid(workdir / "child")
    await remote.cancel([job])
    states = await wait_finished(remote, [job], timeout=30)
    assert states[job].state is JobState.CANCELLED, states
    await wait_gone(pid)
    await wait_gone(child)


async def test_cancel_before_start_never_runs(remote: DaskBackend, workdir: Path) -> None:
    blockers = [spec(workdir, f"block{i}", "sleep 3", cpus=2) for i in range(2)]
    late = spec(workdir, "late", "echo ran > ran", cpus=2)
    ids = await remote.submit_many([*blockers, late])
    await remote.cancel(["late"])
    states = await wait_finished(remote, ids)
    assert states["late"].state is JobState.CANCELLED
    assert not (workdir / "ran").exists()


async def test_cpus_are_worker_resources(remote: DaskBackend, workdir: Path) -> None:
    """The worker declares 2 cpus and has 2 threads: jobs of 2 cpus run one at a time."""
    script = "date +%s.%N > {n}.start; sleep 0.5; date +%s.%N > {n}.end"
    specs = [spec(workdir, f"wide{i}", script.format(n=i), cpus=2) for i in range(3)]
    ids = await remote.submit_many(specs)
    states = await wait_finished(remote, ids)
    assert {s.state for s in states.values()} == {JobState.COMPLETED}
    spans = sorted(
        (float((workdir / f"{i}.start").read_text()), float((workdir / f"{i}.end").read_text()))
        for i in range(3)
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans
    await remote.probe()  # learns the largest worker
    [refused] = await remote.submit_many([spec(workdir, "huge", "true", cpus=3)])
    assert isinstance(refused, SubmitError) and "3 cpus" in str(refused)


async def test_probe_reports_workers_cores_memory_and_queue(
    remote: DaskBackend, workdir: Path
) -> None:
    ids = await remote.submit_many([spec(workdir, f"q{i}", "sleep 2", cpus=2) for i in range(3)])
    info = await remote.probe()
    assert info.healthy and info.kind == "dask"
    assert info.cpus == 2 and info.memory_mb == 2000
    assert info.microarchitecture == archspec.cpu.host().name  # probed on the worker
    assert "1 worker(s)" in info.detail and info.microarchitecture in info.detail
    assert info.pending_jobs >= 1
    await wait_finished(remote, ids)
    info = await remote.probe()
    assert info.pending_jobs == 0


async def test_a_silent_scheduler_is_unhealthy_and_its_jobs_lost(tmp_path: Path) -> None:
    with dask_processes(tmp_path) as own:
        settings = DaskSettings(address=own.address, timeout_s=2, lost_after_s=20)
        backend = create("doomed", settings)
        try:
            job = await backend.submit(spec(tmp_path, "victim", "echo $$ > pid; sleep 300"))
            pid = await read_pid(tmp_path / "pid")
            own.kill_scheduler()
            info = await backend.probe()
            assert not info.healthy
            assert any(
                w in info.detail for w in ("does not answer", "cannot reach", "did not answer")
            )
            with pytest.raises(BackendUnavailable):
                await backend.status([job])
            deadline = time.monotonic() + 60
            while True:
                try:
                    states = await backend.status([job])
                    break
                except BackendUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.5)
            assert states[job].state is JobState.LOST and "not answered" in states[job].reason
            await wait_gone(pid)  # its worker stopped the job: a retry cannot run twice
        finally:
            await backend.close()


async def test_a_job_whose_worker_died_is_lost(tmp_path: Path) -> None:
    with dask_processes(tmp_path) as own:
        backend = create("fragile", DaskSettings(address=own.address))
        try:
            job = await backend.submit(spec(tmp_path, "orphan", "echo $$ > pid; sleep 300"))
            pid = await read_pid(tmp_path / "pid")
            worker_pids = await backend._ask(lambda c: c.run(os.getpid))
            for worker_pid in worker_pids.values():
                os.kill(worker_pid, signal.SIGKILL)  # the nanny starts a new one
            states = await wait_finished(backend, [job], timeout=60)
            assert states[job].state is JobState.LOST, states
            assert "worker died" in states[job].reason
            await wait_gone(pid)  # killed with its worker process
        finally:
            await backend.close()


@pytest.mark.slurm
async def test_slurm_cluster_runs_a_job_on_a_worker_started_by_slurm(workdir: Path) -> None:
    env = service_env("slurm")
    if not env:
        pytest.skip("the Slurm test cluster is not set up: run scripts/services/slurm.sh")
    slurm = SlurmClusterSettings(
        max_workers=1,
        cores=1,
        memory_mb=512,
        walltime="00:10:00",
        host="127.0.0.1",
        worker_host="127.0.0.1",
        slurm_conf=env["SLURM_CONF"],
        log_directory=str(workdir / "logs"),
    )
    backend = create("hpc-dask", DaskSettings(slurm=slurm))
    try:
        info = await backend.probe()
        assert info.healthy and info.cpus == 1  # what it can grow to, before any worker
        job = await backend.submit(
            JobSpec(
                "bridge-slurm-dask-1",
                ["sh", "-c", 'echo "$SLURM_JOB_ID" > slurm_job'],
                str(workdir),
                resources=Resources(cpus=1, memory_mb=256),
            )
        )
        states = await wait_finished(backend, [job], timeout=120)
        assert states[job].state is JobState.COMPLETED, states
        slurm_job = (workdir / "slurm_job").read_text().strip()
        assert slurm_job.isdigit()  # ran inside a Slurm job
        assert list((workdir / "logs").glob(f"*{slurm_job}*"))  # the worker's own log
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("state", "text", "cancelled", "expected", "code"),
    [
        (None, "", False, JobState.LOST, None),
        (None, "", True, JobState.CANCELLED, None),
        ("queued", "", False, JobState.PENDING, None),
        ("no-worker", "", False, JobState.PENDING, None),
        ("processing", "", False, JobState.RUNNING, None),
        ("erred", "JobExit('bridge-job-exit 0 exited')", False, JobState.COMPLETED, 0),
        ("erred", "bridge-job-exit 3 exited", False, JobState.FAILED, 3),
        ("erred", "bridge-job-exit 143 cancelled", True, JobState.CANCELLED, 143),
        ("erred", "KilledWorker: 1 worker(s) died while running it", False, JobState.LOST, None),
        ("erred", "", False, JobState.FAILED, None),
        ("some-new-state", "", False, JobState.UNKNOWN, None),
    ],
)
def test_scheduler_states_map_to_job_states(
    state: str | None, text: str, cancelled: bool, expected: JobState, code: int | None
) -> None:
    status = job_status(state, text, cancelled)
    assert (status.state, status.exit_code) == (expected, code)


def test_the_target_advertises_the_most_generic_worker_cpu() -> None:
    assert most_generic(["x86_64_v4", "x86_64_v2", "haswell"]) == "x86_64_v2"
    assert most_generic([]) is None
