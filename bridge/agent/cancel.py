"""Turning SIGTERM/SIGINT into a clean ``CANCELED`` attempt.

Batch systems stop a job by sending SIGTERM and, after a grace period (Slurm's
``KillWait``, 30 s by default), SIGKILL.  In that window the agent must stop the
executor and write ``CANCELED`` to ``status.json``.

The handler does three things:

1. records the request (a second signal changes nothing);
2. leaves a running executor to the executor loop, which polls the flag every 0.1 s,
   sends SIGTERM to the executor's process group (executors run in their own session,
   so a shell script's children go too) and SIGKILL after :data:`KILL_GRACE_S`;
3. raises :class:`TaskCanceled` right away when nothing would notice the flag soon
   (e.g. during a long download), *unless* the agent is inside a critical section
   (writing ``status.json``, starting a process), in which case the exception is raised
   when the section ends.  Raising from a handler is what makes a multi-gigabyte
   download stop at once instead of at the next checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from types import FrameType

from bridge.agent.errors import TaskCanceled

KILL_GRACE_S = 10.0


def signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to ``proc``'s process group (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


class CancelToken:
    """Cancellation state shared by the signal handler and the agent's steps."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._critical = 0
        self._raised = False
        self.process: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self.process is not None:
            return  # the executor loop signals the process group and escalates
        if self._critical == 0:
            self._raise()

    def _raise(self) -> None:
        if not self._raised:
            self._raised = True
            raise TaskCanceled(self.signal_name)

    def check(self) -> None:
        """Raise :class:`TaskCanceled` if cancellation was requested."""
        if self.requested:
            self._raise()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer the cancellation exception until the block has finished."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self.requested and self.process is None:
            self._raise()

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Never raise inside the block (used while writing the final status)."""
        self._raised = True
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
