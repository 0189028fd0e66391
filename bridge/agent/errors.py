"""Typed errors of the node agent.

::

    AgentError(RuntimeError)
    ├── TaskFileError(AgentError, ValueError)    task.json is missing or malformed
    ├── WorkDirError(AgentError, OSError)        the work directory cannot be read or written
    ├── StagingError(AgentError)                 an input could not be fetched / an output stored
    └── RuntimeUnavailable(AgentError)           the requested container runtime cannot run here

    TaskCanceled(BaseException)                  SIGTERM/SIGINT arrived: stop, report CANCELED

``TaskCanceled`` derives from :class:`BaseException` on purpose (like
:class:`KeyboardInterrupt` and :class:`asyncio.CancelledError`): it is raised from the
signal handler in the middle of arbitrary code, and an ``except Exception`` in staging
or in a library must not swallow it.

Every failure that is not the executor's own fault ends the attempt as ``SYSTEM_ERROR``
with the error's message as a system log line, so messages are written for people and
never contain credentials (see :mod:`bridge.agent.redact`).
"""

from __future__ import annotations


class AgentError(RuntimeError):
    """Base of every error the agent raises on purpose."""


class TaskFileError(AgentError, ValueError):
    """``task.json`` is missing, not JSON, or not a usable TES task."""


class WorkDirError(AgentError, OSError):
    """The work directory could not be read or written (other than a missing file)."""


class StagingError(AgentError):
    """An input could not be fetched or an output could not be stored."""


class RuntimeUnavailable(AgentError):
    """The container runtime asked for is not usable on this node."""


class TaskCanceled(BaseException):
    """The agent was asked to stop (SIGTERM or SIGINT)."""
