from __future__ import annotations

import pytest

from bridge.states import ACTIVE, TERMINAL, TRANSITIONS, State, can_transition


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize("final", sorted(TERMINAL))
def test_terminal_states_never_change(final: State) -> None:
    assert not TRANSITIONS[final]
    assert all(not can_transition(final, other) for other in State)


def test_cancel_is_reachable_from_every_active_state() -> None:
    for state in ACTIVE - {State.CANCELING}:
        assert can_transition(state, State.CANCELING) or can_transition(state, State.CANCELED)
    assert TRANSITIONS[State.CANCELING] == {State.CANCELED}


def test_a_finished_task_cannot_be_requeued() -> None:
    assert not can_transition(State.COMPLETE, State.QUEUED)
    assert can_transition(State.PREEMPTED, State.QUEUED)
    assert can_transition(State.RUNNING, State.QUEUED)  # a retry
