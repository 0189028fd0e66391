"""Typed errors raised by backends and command runners.

::

    SchedulerError(RuntimeError)
    ├── SubmitError          the backend refused a job (bad partition, quota, ...)
    ├── BackendUnavailable   the backend cannot be reached right now (retry later)
    │   └── NotSubmitted     ...and the job was certainly not submitted (e.g. target full)
    └── CommandFailed        a command run through a runner exited non-zero
        └── HostKeyMismatch  (also raised as-is by the SSH runner before any command)
"""

from __future__ import annotations

from collections.abc import Sequence


class SchedulerError(RuntimeError):
    """Base of every error raised by :mod:`schedulers`."""


class SubmitError(SchedulerError):
    """The backend refused the job; the message says why in the backend's words."""


class BackendUnavailable(SchedulerError):
    """The backend could not be reached; the caller may retry later."""


class NotSubmitted(BackendUnavailable):
    """The job was certainly not submitted (the target is full); try again later.

    Plain :class:`BackendUnavailable` during a submission leaves it open whether the
    job exists (the connection dropped after ``sbatch`` ran): the broker then adopts
    by name instead of submitting again.
    """


class CommandFailed(SchedulerError):
    """A command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip().splitlines()
        tail = detail[-1] if detail else "no output"
        super().__init__(f"{argv[0] if argv else '?'} exited {returncode}: {tail}")


class HostKeyMismatch(SchedulerError):
    """The SSH server's host key is unknown or differs from known_hosts."""
