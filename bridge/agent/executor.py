"""Running one executor and keeping its output.

The executor is started with :class:`subprocess.Popen` on an argv list (never a
shell), in its own session so that cancellation can signal its whole process group.
Its stdout/stderr go straight to files — the file the task named (``stdout``/``stderr``
in the executor, mapped to the host) or else the attempt's
``executor-<i>.stdout``/``.stderr`` — so output of any size costs no memory; the last
:data:`TAIL_BYTES` of each are read back for ``status.json``.

Exit codes follow the shell: a process killed by a signal reports ``128 + signal``; a
program that cannot be found reports 127 and one that cannot be executed 126, with the
reason written to its stderr file (that is the executor's failure, not the node's).

The process is reaped with :func:`os.wait4`, which hands back its resource usage:
peak resident set size and CPU time (user + system) go into ``usage`` for the
task's report.  Under a container runtime whose client detaches from the workload
(docker, podman) these figures are the client's, not the container's.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.agent.cancel import KILL_GRACE_S, CancelToken, signal_group
from bridge.agent.errors import StagingError
from bridge.agent.runtime import Launch

TAIL_BYTES = 64 * 1024
POLL_S = 0.1
CLEANUP_TIMEOUT_S = 20.0


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file as text ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = text.lstrip("\ufffd")  # a multi-byte character cut by the limit
    return text


@dataclass(frozen=True)
class Streams:
    """Host files for one executor's standard streams."""

    stdin: Path | None
    stdout: Path
    stderr: Path


@contextlib.contextmanager
def _open_streams(streams: Streams) -> Iterator[tuple[int, int, int]]:
    with contextlib.ExitStack() as stack:
        stdin_fd: int = subprocess.DEVNULL
        if streams.stdin is not None:
            try:
                stdin_fd = stack.enter_context(streams.stdin.open("rb")).fileno()
            except OSError as err:
                raise StagingError(f"stdin {streams.stdin}: {err.strerror}") from err
        for path in (streams.stdout, streams.stderr):
            path.parent.mkdir(parents=True, exist_ok=True)
        fout = stack.enter_context(streams.stdout.open("wb"))
        ferr = (
            fout
            if streams.stderr == streams.stdout
            else stack.enter_context(streams.stderr.open("wb"))
        )
        yield stdin_fd, fout.fileno(), ferr.fileno()


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def usage_of(ru: resource.struct_rusage) -> dict[str, Any]:
    """Peak RSS (bytes; Linux reports KiB) and CPU seconds of a reaped process."""
    return {
        "peak_rss_bytes": int(ru.ru_maxrss) * 1024,
        "cpu_time_s": round(ru.ru_utime + ru.ru_stime, 3),
    }


def _reap(proc: subprocess.Popen[bytes], timeout: float, usage: dict[str, Any]) -> int | None:
    """Wait up to ``timeout`` for ``proc``; its return code, or None if still running.

    Polls ``wait4(WNOHANG)`` rather than ``Popen.wait`` so the kernel's accounting of
    the child is not lost when it is reaped.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: no accounting left to read
            return proc.wait(timeout=timeout)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            usage.update(usage_of(ru))
            return proc.returncode
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def run_launch(
    launch: Launch,
    streams: Streams,
    token: CancelToken,
    *,
    grace_s: float = KILL_GRACE_S,
    usage: dict[str, Any] | None = None,
) -> int:
    """Run one executor to completion (or cancellation) and return its exit code.

    On cancellation the process group gets SIGTERM, then SIGKILL after ``grace_s``;
    the exit code is returned and the caller raises via ``token.check()``.  When
    ``usage`` is given it receives ``peak_rss_bytes`` and ``cpu_time_s``.
    """
    usage = {} if usage is None else usage
    with _open_streams(streams) as (fin, fout, ferr):
        with token.critical():
            try:
                proc = subprocess.Popen(
                    launch.argv,
                    stdin=fin,
                    stdout=fout,
                    stderr=ferr,
                    cwd=launch.cwd,
                    env=launch.env,
                    start_new_session=True,
                )
            except OSError as err:
                code = 127 if isinstance(err, FileNotFoundError) else 126
                os.write(
                    ferr, f"bridge-agent: cannot run {launch.argv[0]!r}: {err.strerror}\n".encode()
                )
                return code
            token.process = proc
        try:
            deadline: float | None = None
            while True:
                reaped = _reap(proc, POLL_S, usage)
                if reaped is not None:
                    returncode = reaped
                    break
                if not token.requested:
                    continue
                if deadline is None:
                    signal_group(proc, signal.SIGTERM)
                    deadline = time.monotonic() + grace_s
                elif time.monotonic() > deadline:
                    signal_group(proc, signal.SIGKILL)
        finally:
            token.process = None
    if token.requested:
        signal_group(proc, signal.SIGKILL)  # stragglers left in the group
        if launch.cleanup_argv:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    launch.cleanup_argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=CLEANUP_TIMEOUT_S,
                    check=False,
                )
    return _exit_code(returncode)
