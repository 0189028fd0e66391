"""What every :class:`schedulers.base.Backend` must do, as one test class.

Each backend's test module subclasses :class:`BackendConformance` and provides the
``backend`` fixture (an async fixture, run by anyio on asyncio); the tests here then run
against that backend unchanged.  Jobs are tiny shell commands writing into
``workdir``, which every backend here shares with the test.  The agent tests run
``bridge-agent`` as the job, once per container runtime (``none``, and ``sandbox``
where bubblewrap works), so each backend is checked with the runtimes tasks use.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from schedulers.base import Backend, JobSpec, JobState, JobStatus, Resources

AGENT = str(Path(sys.executable).with_name("bridge-agent"))
AGENT_RUNTIMES = ["none", pytest.param("sandbox", marks=pytest.mark.sandbox)]


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


def unique(name: str) -> str:
    """Job names are identities (a backend adopts by name, Dask dedupes by it): agent
    jobs of different tests get their own, as the broker's ``bridge-<task>-<n>`` are."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def spec(workdir: Path, name: str, script: str, **resources: object) -> JobSpec:
    return JobSpec(
        name=name,
        argv=["sh", "-c", script],
        workdir=str(workdir),
        resources=Resources(**resources),  # type: ignore[arg-type]
        stdout_path=str(workdir / f"{name}.out"),
        stderr_path=str(workdir / f"{name}.err"),
    )


def agent_spec(workdir: Path, name: str, runtime: str, task: dict[str, object]) -> JobSpec:
    """A job running ``bridge-agent`` on a task written to ``workdir/name``."""
    if runtime == "sandbox" and shutil.which("bwrap") is None:
        pytest.skip("bwrap not found (Debian package bubblewrap; scripts/test installs it)")
    taskdir = workdir / name
    taskdir.mkdir()
    doc = {"task": task, "runtime": {"container_runtime": runtime}}
    (taskdir / "task.json").write_text(json.dumps(doc))
    return JobSpec(
        name=unique(name),
        argv=[AGENT, "run", str(taskdir)],
        workdir=str(workdir),
        env={"BRIDGE_SCRATCH_DIR": str(workdir / "scratch")},
        stdout_path=str(workdir / f"{name}.out"),
        stderr_path=str(workdir / f"{name}.err"),
    )


def agent_status(workdir: Path, name: str) -> dict[str, object]:
    path = workdir / name / "attempts" / "1" / "status.json"
    doc: dict[str, object] = json.loads(path.read_text())
    return doc


def processes_named(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


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
        # "&&": a shell that outlives its killed sleep by a moment must not write "late"
        job = await backend.submit(spec(workdir, "long", "sleep 60 && echo late > late"))
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

    # Why the agent tests below cannot run on this backend here ("" if they can): they
    # start this checkout's bridge-agent as the job's command.
    agent_not_runnable = ""

    @pytest.mark.parametrize("runtime", AGENT_RUNTIMES)
    async def test_an_agent_task_runs_in_each_runtime(
        self, backend: Backend, workdir: Path, runtime: str
    ) -> None:
        if self.agent_not_runnable:
            pytest.skip(self.agent_not_runnable)
        task = {
            "id": f"conformance-{runtime}",
            "inputs": [{"path": "/data/in.txt", "content": "from the input\n"}],
            "outputs": [{"path": "/out/r.txt", "url": str(workdir / "r.txt")}],
            "executors": [
                {
                    "image": "alpine",
                    "command": ["sh", "-c", "cat in.txt > /out/r.txt && echo ok"],
                    "workdir": "/data",
                }
            ],
        }
        job = await backend.submit(agent_spec(workdir, "agent", runtime, task))
        states = await wait_finished(backend, [job])
        err = (workdir / "agent.err").read_text() if (workdir / "agent.err").exists() else ""
        assert states[job].state is JobState.COMPLETED, (states, err)
        status = agent_status(workdir, "agent")
        assert status["state"] == "COMPLETE", status
        assert status["metadata"]["container_runtime"] == runtime  # type: ignore[index]
        assert (workdir / "r.txt").read_text() == "from the input\n"

    @pytest.mark.parametrize("runtime", AGENT_RUNTIMES)
    async def test_cancel_stops_an_agent_task_and_its_processes(
        self, backend: Backend, workdir: Path, runtime: str
    ) -> None:
        if self.agent_not_runnable:
            pytest.skip(self.agent_not_runnable)
        marker = f"conformance-{uuid.uuid4().hex[:12]}"
        # runtime none can only signal the executor's process group; a sandbox also
        # ends processes that left it (its PID namespace dies with it)
        leaver = "setsid " if runtime == "sandbox" else ""
        script = f"sh -c 'sleep 300' {marker} & {leaver}sh -c 'sleep 300' {marker} & wait"
        task = {"id": "cancel", "executors": [{"image": "alpine", "command": ["sh", "-c", script]}]}
        job = await backend.submit(agent_spec(workdir, "agent", runtime, task))
        deadline = time.monotonic() + 90
        while len([p for p in processes_named(marker) if self._is_task_process(p)]) < 2:
            assert time.monotonic() < deadline, "the task's processes did not start"
            await asyncio.sleep(0.2)
        await backend.cancel([job])
        states = await wait_finished(backend, [job], timeout=60)
        assert states[job].state in (JobState.CANCELLED, JobState.FAILED), states
        deadline = time.monotonic() + 60
        while [p for p in processes_named(marker) if self._is_task_process(p)]:
            assert time.monotonic() < deadline, "processes of the canceled task are left"
            await asyncio.sleep(0.2)

    @staticmethod
    def _is_task_process(pid: int) -> bool:
        """A ``sh -c 'sleep 300' <marker>`` of the task (not bwrap or the outer shell)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return argv[:3] == [b"sh", b"-c", b"sleep 300"]

    def unknown_job_id(self) -> str:
        return "999999999"
