"""The Slurm backend against the real single-node cluster, locally and over SSH.

Every test here submits real jobs with ``sbatch`` and reads them back with
``squeue`` / ``sacct --completion``; the ``slurm`` fixture runs each test once with a
:class:`LocalRunner` and once through the :class:`SSHRunner` (marker ``ssh``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import archspec.cpu
import pytest

from schedulers.base import Backend, JobSpec, JobState, Resources
from schedulers.errors import BackendUnavailable, SubmitError
from schedulers.slurm import MICROARCH_WAIT_S, SlurmBackend
from schedulers.transport import CommandResult, CommandRunner, LocalRunner

from .conftest import REPO, SERVICES, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slurm]

RUNNING_OR_DONE = frozenset(
    {JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
)


def sleeper(workdir: Path, name: str, seconds: int = 300) -> JobSpec:
    return JobSpec(name, ["sleep", str(seconds)], str(workdir))


async def test_backend_satisfies_the_protocol(slurm: SlurmBackend) -> None:
    assert isinstance(slurm, Backend)
    assert slurm.name == "test-slurm"


async def test_job_runs_its_argv_with_env_resources_and_output_files(
    slurm: SlurmBackend, workdir: Path
) -> None:
    spec = JobSpec(
        name="hello job",
        argv=["sh", "-c", 'echo "out $GREETING"; echo "err line" >&2; pwd'],
        workdir=str(workdir),
        env={"GREETING": "hi there; $HOME 'quoted'"},
        stdout_path=str(workdir / "job.out"),
        stderr_path=str(workdir / "job.err"),
        resources=Resources(cpus=1, memory_mb=64, wall_time_s=300, constraint="x86_64"),
    )
    job_id = await slurm.submit(spec)
    assert job_id.isdigit()
    status = (await wait_until(slurm, [job_id]))[job_id]
    assert status.state is JobState.COMPLETED, status
    assert status.exit_code == 0
    assert (workdir / "job.out").read_text() == f"out hi there; $HOME 'quoted'\n{workdir}\n"
    assert (workdir / "job.err").read_text() == "err line\n"


async def test_failing_job_reports_its_exit_code(slurm: SlurmBackend, workdir: Path) -> None:
    job_id = await slurm.submit(JobSpec("fails", ["sh", "-c", "exit 7"], str(workdir)))
    status = (await wait_until(slurm, [job_id]))[job_id]
    assert status.state is JobState.FAILED
    assert status.exit_code == 7
    assert "exit code 7" in status.reason


async def test_array_runs_each_elements_own_command(slurm: SlurmBackend, workdir: Path) -> None:
    specs = []
    for i in range(5):
        (workdir / f"t{i}").mkdir()
        argv = ["sh", "-c", f"echo element {i} > result; echo said {i}; exit {3 if i == 2 else 0}"]
        out = str(workdir / f"t{i}" / "out")
        specs.append(JobSpec(f"el{i}", argv, str(workdir / f"t{i}"), stdout_path=out))
    ids = await slurm.submit_array(specs)
    base = ids[0].split("_")[0]
    assert ids == [f"{base}_{i}" for i in range(5)]
    states = await wait_until(slurm, ids)
    assert [states[j].state for j in ids] == [
        JobState.COMPLETED,
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.COMPLETED,
        JobState.COMPLETED,
    ]
    assert states[ids[2]].exit_code == 3
    for i in range(5):
        assert (workdir / f"t{i}" / "result").read_text() == f"element {i}\n"
        assert (workdir / f"t{i}" / "out").read_text() == f"said {i}\n"


async def test_arrays_are_bounded_and_grouped_by_resources(
    slurm_runner: CommandRunner, workdir: Path
) -> None:
    backend = SlurmBackend(slurm_runner, max_array_size=2)
    small = Resources(cpus=1)
    other = Resources(cpus=1, memory_mb=32)
    specs = [JobSpec(f"s{i}", ["true"], str(workdir), resources=small) for i in range(5)]
    specs.append(JobSpec("lonely", ["true"], str(workdir), resources=other))
    ids = await backend.submit_array(specs)
    bases = [j.split("_")[0] for j in ids[:5]]
    assert bases[0] == bases[1] and bases[2] == bases[3]
    assert len(set(bases)) == 3  # 2 + 2 + 1 elements
    assert "_" not in ids[4] and "_" not in ids[5]  # a chunk of one is a plain job
    states = await wait_until(backend, ids)
    assert {s.state for s in states.values()} == {JobState.COMPLETED}


async def test_cancel_by_the_backend(slurm: SlurmBackend, workdir: Path) -> None:
    job_id = await slurm.submit(sleeper(workdir, "to-cancel"))
    await wait_until(slurm, [job_id], done=RUNNING_OR_DONE)
    await slurm.cancel([job_id, "999999"])  # unknown ids are ignored
    status = (await wait_until(slurm, [job_id]))[job_id]
    assert status.state is JobState.CANCELLED
    assert "outside the broker" not in status.reason


async def test_array_element_cancelled_alone(slurm: SlurmBackend, workdir: Path) -> None:
    ids = await slurm.submit_array([sleeper(workdir, f"a{i}", 2) for i in range(3)])
    await slurm.cancel([ids[1]])
    states = await wait_until(slurm, ids)
    assert states[ids[1]].state is JobState.CANCELLED
    assert states[ids[0]].state is JobState.COMPLETED
    assert states[ids[2]].state is JobState.COMPLETED


async def test_scancel_outside_the_broker_shows_the_reason(
    slurm: SlurmBackend, slurm_env: Mapping[str, str], workdir: Path
) -> None:
    job_id = await slurm.submit(sleeper(workdir, "killed-outside"))
    await wait_until(slurm, [job_id], done=RUNNING_OR_DONE)
    subprocess.run(["scancel", job_id], env={**os.environ, **slurm_env}, check=True)
    status = (await wait_until(slurm, [job_id]))[job_id]
    assert status.state is JobState.CANCELLED
    assert "cancelled outside the broker" in status.reason
    assert status.native_state == "CANCELLED"


async def test_bad_partition_is_a_clear_error_not_a_hang(
    slurm: SlurmBackend, workdir: Path
) -> None:
    spec = JobSpec("bad", ["true"], str(workdir), resources=Resources(partition="nosuchpart"))
    started = time.monotonic()
    with pytest.raises(SubmitError, match="partition 'nosuchpart'"):
        await slurm.submit(spec)
    assert time.monotonic() - started < 15


async def test_target_defaults_apply_to_jobs_without_their_own(
    slurm_runner: CommandRunner, workdir: Path
) -> None:
    backend = SlurmBackend(slurm_runner, partition="nosuchdefault")
    with pytest.raises(SubmitError, match="partition 'nosuchdefault'"):
        await backend.submit(JobSpec("d", ["true"], str(workdir)))
    own = Resources(partition="debug")
    job_id = await backend.submit(JobSpec("d", ["true"], str(workdir), resources=own))
    assert (await wait_until(backend, [job_id]))[job_id].state is JobState.COMPLETED


async def test_bad_constraint_is_a_submit_error(slurm: SlurmBackend, workdir: Path) -> None:
    spec = JobSpec("bad", ["true"], str(workdir), resources=Resources(constraint="no_such_cpu"))
    with pytest.raises(SubmitError, match="Invalid feature"):
        await slurm.submit(spec)


async def test_unknown_job_is_lost(slurm: SlurmBackend) -> None:
    status = (await slurm.status(["987654321"]))["987654321"]
    assert status.state is JobState.LOST
    assert "987654321" in status.reason


async def test_probe_reports_capacity_queue_and_microarchitecture(slurm: SlurmBackend) -> None:
    info = await slurm.probe()
    assert info.kind == "slurm"
    assert info.healthy
    assert "debug" in info.partitions
    assert info.cpus == os.cpu_count()
    assert info.memory_mb and info.memory_mb > 100
    assert info.pending_jobs >= 0 and info.queue_wait_s >= 0
    # The compute node is this machine, so archspec must agree with the probe job.
    assert info.microarchitecture == archspec.cpu.host().name
    assert "job states through CLI" in info.detail

    async def no_second_probe_job() -> str:
        raise AssertionError("the microarchitecture probe job ran again")

    slurm._probe_microarchitecture = no_second_probe_job  # type: ignore[method-assign]
    again = await slurm.probe()  # cached: no second probe job
    assert again.microarchitecture == info.microarchitecture


async def test_a_busy_cluster_does_not_hold_up_the_probe(slurm_env: Mapping[str, str]) -> None:
    """The microarchitecture probe job waits for a node in the background; the probe
    answers without it meanwhile and picks its answer up once the job ran."""

    def partition(state: str) -> None:
        subprocess.run(
            ["scontrol", "update", "PartitionName=debug", f"State={state}"],
            env={**os.environ, **slurm_env},
            check=True,
        )

    backend = SlurmBackend(LocalRunner(env=slurm_env), name="busy")
    partition("DOWN")  # jobs queue, none starts: what a full cluster looks like to srun
    try:
        started = time.monotonic()
        info = await backend.probe()
        took = time.monotonic() - started
        assert took < MICROARCH_WAIT_S + 15, f"the probe took {took:.1f} s"
        assert info.microarchitecture is None
        assert "still waiting for a node" in info.detail
    finally:
        partition("UP")
    try:
        deadline = time.monotonic() + 90
        while (info := await backend.probe()).microarchitecture is None:
            assert time.monotonic() < deadline, info.detail
        assert info.microarchitecture == archspec.cpu.host().name
    finally:
        await backend.close()


class RecordingRunner:
    """A real runner that also records each argv it ran."""

    def __init__(self, inner: CommandRunner) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    async def run(self, argv: Sequence[str], **kwargs: object) -> CommandResult:
        self.calls.append(list(argv))
        return await self.inner.run(argv, **kwargs)  # type: ignore[arg-type]

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await self.inner.write_file(path, data, mode)

    async def read_file(self, path: str) -> bytes:
        return await self.inner.read_file(path)

    async def close(self) -> None:
        await self.inner.close()


async def test_status_of_many_jobs_costs_one_squeue(
    slurm_env: Mapping[str, str], workdir: Path
) -> None:
    runner = RecordingRunner(LocalRunner(env=slurm_env))
    backend = SlurmBackend(runner)
    ids = await backend.submit_array([JobSpec(f"ok{i}", ["true"], str(workdir)) for i in range(6)])
    ids.append(await backend.submit(JobSpec("plain", ["true"], str(workdir))))
    await wait_until(backend, ids)
    runner.calls.clear()
    states = await backend.status(ids)
    assert {s.state for s in states.values()} == {JobState.COMPLETED}
    assert [c[0] for c in runner.calls] == ["squeue"]
    failed = await backend.submit(JobSpec("bad", ["false"], str(workdir)))
    await wait_until(backend, [failed])
    runner.calls.clear()
    states = await backend.status([*ids, failed])
    assert states[failed].exit_code == 1
    # one squeue for all, one accounting call for the failed job's exit code
    assert [c[0] for c in runner.calls] == ["squeue", "sacct"]
    assert "--completion" in runner.calls[1]


async def test_without_accounting_exit_codes_come_from_scontrol(
    slurm_env: Mapping[str, str], workdir: Path
) -> None:
    runner = RecordingRunner(LocalRunner(env=slurm_env))
    backend = SlurmBackend(runner)
    config = await backend.config()
    config["JobCompType"] = "jobcomp/none"  # a site with neither slurmdbd nor a jobcomp file
    failed = await backend.submit(JobSpec("bad", ["sh", "-c", "exit 6"], str(workdir)))
    status = (await wait_until(backend, [failed]))[failed]
    assert status.state is JobState.FAILED and status.exit_code == 6
    assert ["scontrol", "-o", "show", "job"] in runner.calls
    assert not any(c[0] == "sacct" for c in runner.calls)


def _stop_slurmctld() -> None:
    pid = int((SERVICES / "slurm" / "run" / "slurmctld.pid").read_text())
    os.kill(pid, 15)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("slurmctld did not stop")


@pytest.mark.slow
async def test_jobs_survive_a_slurmctld_restart(slurm: SlurmBackend, workdir: Path) -> None:
    ids = await slurm.submit_array([sleeper(workdir, f"r{i}", 4) for i in range(3)])
    ids.append(await slurm.submit(sleeper(workdir, "plain", 4)))
    # Right after the other runner's restart, new jobs may first wait out a BeginTime.
    await wait_until(slurm, ids, done=RUNNING_OR_DONE, timeout=300)
    # Slurm's clients retry for ~20 s before giving up on a dead controller; a short
    # command timeout shows the same BackendUnavailable sooner.
    impatient = SlurmBackend(slurm.runner, command_timeout=3)
    await impatient.config()
    try:
        await asyncio.to_thread(_stop_slurmctld)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await impatient.status(ids)
        assert time.monotonic() - started < 10
    finally:
        # the script restarts only what is missing, and waits for the node
        script = str(REPO / "scripts" / "services" / "slurm.sh")
        await asyncio.to_thread(subprocess.run, [script], check=True, timeout=60)
    # Jobs Slurm requeued across the restart wait out its requeue delay (BeginTime).
    states = await wait_until(slurm, ids, timeout=300)
    assert {j: s.state for j, s in states.items()} == {j: JobState.COMPLETED for j in ids}
