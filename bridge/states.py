"""TES task states and the one table of allowed transitions.

Every state change goes through :func:`bridge.store.TaskStore.transition`, which
checks it against :data:`TRANSITIONS` and appends an event row in the same
transaction.  States, as GA4GH TES v1.1 defines them:

- ``QUEUED``: stored, waiting to be placed and submitted.
- ``INITIALIZING``: placed on a target and submitted; the environment is being
  prepared or the job waits in the target's queue; the agent stages inputs.
- ``RUNNING``: the first executor has started.
- ``PAUSED``: not produced by any backend today; accepted for completeness.
- ``COMPLETE``: every executor exited 0 (or was ``ignore_error``) and outputs are
  uploaded.
- ``EXECUTOR_ERROR``: an executor exited non-zero.
- ``SYSTEM_ERROR``: anything else failed: staging, the backend, the node.
- ``CANCELING``: the user cancelled; the backend job is being removed.
- ``CANCELED``: cancelled and nothing of it is left running.
- ``PREEMPTED``: the target reclaimed the node; a retry moves it back to QUEUED.
- ``UNKNOWN``: never stored by this broker; the safe default for clients.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


TERMINAL: frozenset[State] = frozenset(
    {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED}
)
ACTIVE: frozenset[State] = frozenset(
    {State.QUEUED, State.INITIALIZING, State.RUNNING, State.PAUSED, State.CANCELING}
)

_ENDINGS = {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR}

TRANSITIONS: dict[State, frozenset[State]] = {
    State.UNKNOWN: frozenset(set(State) - {State.UNKNOWN}),
    State.QUEUED: frozenset(
        {State.INITIALIZING, State.RUNNING, State.CANCELING, State.CANCELED} | _ENDINGS
    ),
    State.INITIALIZING: frozenset(
        {State.QUEUED, State.RUNNING, State.PREEMPTED, State.CANCELING, State.CANCELED} | _ENDINGS
    ),
    State.RUNNING: frozenset(
        {State.QUEUED, State.PAUSED, State.PREEMPTED, State.CANCELING, State.CANCELED} | _ENDINGS
    ),
    State.PAUSED: frozenset({State.RUNNING, State.CANCELING, State.CANCELED, State.SYSTEM_ERROR}),
    State.CANCELING: frozenset({State.CANCELED}),
    State.PREEMPTED: frozenset({State.QUEUED, State.SYSTEM_ERROR}),
    State.COMPLETE: frozenset(),
    State.EXECUTOR_ERROR: frozenset(),
    State.SYSTEM_ERROR: frozenset(),
    State.CANCELED: frozenset(),
}


class InvalidTransition(ValueError):
    """A state change the table does not allow."""

    def __init__(self, task_id: str, current: State, wanted: State) -> None:
        self.task_id = task_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"task {task_id}: {current} -> {wanted} is not an allowed transition")


def can_transition(current: State, wanted: State) -> bool:
    return wanted in TRANSITIONS[current]
