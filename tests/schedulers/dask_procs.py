"""A Dask scheduler and its workers as processes of their own (``dask scheduler`` and
``dask worker`` from this environment), on free ports of 127.0.0.1.

The scheduler runs with ``allowed_failures=0``, as the backend's documentation asks of
a scheduler it is given by address, so a job whose worker dies is reported, not rerun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))
ENV = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dask scheduler exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"dask scheduler not listening on {port} after {timeout} s")


@dataclass
class DaskProcs:
    """A scheduler process and worker processes; :meth:`stop` ends them all."""

    log_dir: Path
    port: int = field(default_factory=free_port)
    scheduler: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.log_dir / log, "ab")  # noqa: SIM115 -- lives as long as the process
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )

    def start_scheduler(self) -> None:
        argv = [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
        self.scheduler = self._spawn([*argv, "--no-dashboard"], "scheduler.log")
        _wait_listening(self.port, self.scheduler)

    def add_worker(self, nthreads: int = 1, cpus: int = 1, memory_mb: int = 2000) -> None:
        argv = [DASK, "worker", self.address, "--host", "127.0.0.1", "--no-dashboard"]
        argv += ["--nthreads", str(nthreads), "--resources", f"cpus={cpus},memory_mb={memory_mb}"]
        self.workers.append(self._spawn(argv, f"worker{len(self.workers)}.log"))

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait(30)

    def stop(self) -> None:
        procs = [*self.workers, *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(15)


@contextlib.contextmanager
def dask_processes(log_dir: Path, workers: int = 1, **worker: int) -> Iterator[DaskProcs]:
    procs = DaskProcs(log_dir)
    try:
        procs.start_scheduler()
        for _ in range(workers):
            procs.add_worker(**worker)
        procs.wait_for_workers(workers)
        yield procs
    finally:
        procs.stop()
