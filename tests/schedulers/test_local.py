"""The local backend runs real processes; these tests start and signal real ones."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import archspec.cpu
import pytest

from schedulers.base import Backend, JobSpec, JobState, JobStatus
from schedulers.errors import BackendUnavailable, SubmitError
from schedulers.local import LocalBackend, parse_job_id, proc_start_time

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


def wait_finished(backend: LocalBackend, job_id: str, timeout: float = 10.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(backend.status([job_id]))[job_id]
        if status.state.finished:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{job_id} still running after {timeout}s")


def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def gone_or_zombie(pid: int) -> bool:
    info = proc_start_time(pid)
    return info is None or info[1] == "Z"


def spec(tmp_path: Path, *argv: str, **kw: object) -> JobSpec:
    return JobSpec(
        name="t",
        argv=list(argv),
        workdir=str(tmp_path),
        stdout_path=str(tmp_path / "out.log"),
        stderr_path=str(tmp_path / "err.log"),
        **kw,  # type: ignore[arg-type]
    )


def test_is_a_backend() -> None:
    assert isinstance(LocalBackend(), Backend)


def test_runs_argv_with_env_cwd_and_output_files(tmp_path: Path) -> None:
    backend = LocalBackend()
    script = 'echo "$FOO $HOME"; pwd; echo oops >&2; exit 3'
    job_id = run(backend.submit(spec(tmp_path, "sh", "-c", script, env={"FOO": "bar"})))
    status = wait_finished(backend, job_id)
    assert status.state is JobState.FAILED
    assert status.exit_code == 3
    out = (tmp_path / "out.log").read_text().splitlines()
    assert out == [f"bar {os.environ['HOME']}", str(tmp_path)]  # env merged over os.environ
    assert (tmp_path / "err.log").read_text() == "oops\n"


def test_success_and_shared_output_file(tmp_path: Path) -> None:
    backend = LocalBackend()
    job = JobSpec(
        name="t",
        argv=["sh", "-c", "echo a; echo b >&2"],
        workdir=str(tmp_path),
        stdout_path=str(tmp_path / "both.log"),
        stderr_path=str(tmp_path / "both.log"),
    )
    status = wait_finished(backend, run(backend.submit(job)))
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    assert sorted((tmp_path / "both.log").read_text().split()) == ["a", "b"]


def test_job_id_is_pid_and_start_time(tmp_path: Path) -> None:
    backend = LocalBackend()
    job_id = run(backend.submit(spec(tmp_path, "sleep", "5")))
    try:
        parsed = parse_job_id(job_id)
        assert parsed is not None
        pid, start = parsed
        info = proc_start_time(pid)
        assert info is not None and info[0] == start
        assert os.getpgid(pid) == pid  # its own session and process group
    finally:
        run(backend.cancel([job_id]))


def test_a_restarted_backend_sees_running_then_lost(tmp_path: Path) -> None:
    first = LocalBackend()
    job_id = run(first.submit(spec(tmp_path, "sleep", "0.6")))
    second = LocalBackend()  # a broker restart: no handle on the process
    assert run(second.status([job_id]))[job_id].state is JobState.RUNNING
    status = wait_finished(second, job_id)
    assert status.state is JobState.LOST
    # the backend that started it still has the exit code
    assert wait_finished(first, job_id).state is JobState.COMPLETED


def test_pid_reuse_is_not_mistaken_for_the_job() -> None:
    backend = LocalBackend()
    states = run(backend.status([f"{os.getpid()}:1", "999999999:5", "garbage"]))
    assert {s.state for s in states.values()} == {JobState.LOST}


def test_cancel_terminates_the_process_group(tmp_path: Path) -> None:
    backend = LocalBackend()
    pidfile = tmp_path / "child.pid"
    job_id = run(
        backend.submit(spec(tmp_path, "sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"))
    )
    child = int(wait_for_file(pidfile))
    started = time.monotonic()
    run(backend.cancel([job_id]))
    assert time.monotonic() - started < 3
    status = wait_finished(backend, job_id)
    assert status.state is JobState.CANCELLED
    deadline = time.monotonic() + 3
    while not gone_or_zombie(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone_or_zombie(child), "the job's background child survived the cancel"


def test_cancel_escalates_to_sigkill(tmp_path: Path) -> None:
    backend = LocalBackend()
    backend.kill_grace_s = 0.5
    ready = tmp_path / "ready"
    script = f"trap '' TERM; echo yes > {ready}; while true; do sleep 0.1; done"
    job_id = run(backend.submit(spec(tmp_path, "sh", "-c", script)))
    wait_for_file(ready)
    started = time.monotonic()
    run(backend.cancel([job_id]))
    assert time.monotonic() - started >= 0.5
    status = wait_finished(backend, job_id)
    assert status.state is JobState.CANCELLED
    assert status.exit_code == 128 + 9 and "SIGKILL" in status.reason


def test_cancel_ignores_unknown_and_finished_jobs(tmp_path: Path) -> None:
    backend = LocalBackend()
    job_id = run(backend.submit(spec(tmp_path, "true")))
    wait_finished(backend, job_id)
    run(backend.cancel([job_id, "123:456", "nonsense"]))
    assert run(backend.status([job_id]))[job_id].state is JobState.COMPLETED


def test_max_parallel_refuses_more_until_a_slot_frees(tmp_path: Path) -> None:
    backend = LocalBackend(max_parallel=1)
    first = run(backend.submit(spec(tmp_path, "sleep", "0.4")))
    with pytest.raises(BackendUnavailable, match="1 of 1"):
        run(backend.submit(spec(tmp_path, "true")))
    wait_finished(backend, first)
    second = run(backend.submit(spec(tmp_path, "true")))
    assert wait_finished(backend, second).state is JobState.COMPLETED


def test_submit_array_one_by_one(tmp_path: Path) -> None:
    backend = LocalBackend()
    specs = [
        JobSpec(
            name=f"j{i}", argv=["sh", "-c", f"echo {i} > {tmp_path}/{i}"], workdir=str(tmp_path)
        )
        for i in range(3)
    ]
    ids = run(backend.submit_array(specs))
    assert len(set(ids)) == 3
    for i, job_id in enumerate(ids):
        assert wait_finished(backend, job_id).state is JobState.COMPLETED
        assert (tmp_path / str(i)).read_text() == f"{i}\n"


def test_missing_program_is_a_submit_error(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="no-such-program"):
        run(LocalBackend().submit(spec(tmp_path, "no-such-program-here")))


def test_probe_reports_this_host() -> None:
    info = run(LocalBackend(name="laptop").probe())
    assert info.name == "laptop" and info.kind == "local"
    assert info.cpus == len(os.sched_getaffinity(0))
    meminfo = Path("/proc/meminfo").read_text().split()
    assert info.memory_mb == int(meminfo[meminfo.index("MemTotal:") + 1]) // 1024
    assert info.microarchitecture == archspec.cpu.host().name
