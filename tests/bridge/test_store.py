from __future__ import annotations

import threading

import pytest

from bridge.states import InvalidTransition, State
from bridge.store import BadPageToken, ListQuery, TaskNotFound, TaskStore

DOC = {"executors": [{"image": "alpine", "command": ["true"]}]}


def doc(name: str, **tags: str) -> dict:
    return {**DOC, "name": name, "tags": tags}


def test_create_get_and_events(store: TaskStore) -> None:
    task_id = store.create(doc("one", workflow="w1"), owner="alice")
    row = store.get(task_id)
    assert (row.name, row.state, row.owner) == ("one", State.QUEUED, "alice")
    assert store.transition(task_id, State.INITIALIZING, "placed on local")
    assert store.transition(task_id, State.RUNNING, "started")
    assert not store.transition(task_id, State.RUNNING, "again")  # same state: no-op
    events = store.events(task_id)
    assert [(e["from"], e["to"]) for e in events] == [
        ("UNKNOWN", "QUEUED"),
        ("QUEUED", "INITIALIZING"),
        ("INITIALIZING", "RUNNING"),
    ]
    assert events[1]["reason"] == "placed on local"


def test_forbidden_transition_is_refused_and_leaves_no_event(store: TaskStore) -> None:
    task_id = store.create(doc("x"))
    store.transition(task_id, State.CANCELED, "user")
    with pytest.raises(InvalidTransition):
        store.transition(task_id, State.RUNNING, "late")
    assert store.get(task_id).state == State.CANCELED
    assert len(store.events(task_id)) == 2


def test_owner_scoping(store: TaskStore) -> None:
    task_id = store.create(doc("mine"), owner="alice")
    with pytest.raises(TaskNotFound):
        store.get(task_id, owner="bob")
    assert store.get(task_id, owner="alice").id == task_id
    ids, _ = store.list_minimal(ListQuery(owner="bob"))
    assert ids == []


def test_keyset_paging_visits_every_task_once(store: TaskStore) -> None:
    created = [store.create(doc(f"t{i:02d}")) for i in range(25)]
    seen: list[str] = []
    token = None
    while True:
        page, token = store.list_minimal(ListQuery(page_size=7, page_token=token))
        seen += [task_id for task_id, _ in page]
        if token is None:
            break
    assert seen == list(reversed(created))  # newest first, no gaps, no repeats


def test_filters_name_prefix_state_and_tags(store: TaskStore) -> None:
    a = store.create(doc("align-1", workflow="w1", sample="s1"))
    b = store.create(doc("align_2", workflow="w1", sample="s2"))
    c = store.create(doc("call-1", workflow="w2"))
    store.transition(c, State.CANCELED, "x")

    def ids(**kw: object) -> set[str]:
        return {i for i, _ in store.list_minimal(ListQuery(**kw))[0]}  # type: ignore[arg-type]

    assert ids(name_prefix="align") == {a, b}
    assert ids(name_prefix="align_") == {b}  # '_' is not a wildcard
    assert ids(state=State.CANCELED) == {c}
    assert ids(tags={"workflow": "w1"}) == {a, b}
    assert ids(tags={"workflow": "w1", "sample": "s2"}) == {b}
    assert ids(tags={"sample": ""}) == {a, b}  # empty value: any value
    assert ids(tags={"workflow": "w3"}) == set()


def test_page_token_from_nowhere_is_rejected(store: TaskStore) -> None:
    with pytest.raises(BadPageToken):
        store.list_minimal(ListQuery(page_token="not-a-token"))


def test_cancel_before_submission_is_immediate(store: TaskStore) -> None:
    task_id = store.create(doc("c"))
    assert store.request_cancel(task_id) == State.CANCELED
    assert store.request_cancel(task_id) == State.CANCELED  # no-op on a finished task


def test_cancel_of_a_submitted_task_goes_through_canceling(store: TaskStore) -> None:
    task_id = store.create(doc("c"))
    store.start_attempt(store.get(task_id), "local")
    store.transition(task_id, State.INITIALIZING, "placed")
    assert store.request_cancel(task_id) == State.CANCELING


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_claims_do_not_overlap_between_brokers(store: TaskStore) -> None:
    # Several brokers share a database only on PostgreSQL (SKIP LOCKED claims).
    for i in range(40):
        store.create(doc(f"q{i}"))
    results: dict[str, list[str]] = {}

    def claim(broker: str) -> None:
        got: list[str] = []
        for _ in range(4):
            for task in store.claim(broker, [State.QUEUED], 5, lease_s=60):
                store.transition(task.id, State.INITIALIZING, f"placed by {broker}")
                got.append(task.id)
        results[broker] = got

    threads = [threading.Thread(target=claim, args=(f"b{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = results["b0"], results["b1"]
    assert not set(a) & set(b)
    assert len(set(a) | set(b)) == 40


def test_expired_lease_is_taken_over(store: TaskStore) -> None:
    task_id = store.create(doc("l"))
    assert [t.id for t in store.claim("dead", [State.QUEUED], 10, lease_s=-1)] == [task_id]
    assert [t.id for t in store.claim("alive", [State.QUEUED], 10, lease_s=60)] == [task_id]
    assert store.claim("dead", [State.QUEUED], 10, lease_s=60) == []


def test_attempts_are_kept_in_order(store: TaskStore) -> None:
    task_id = store.create(doc("a"))
    first = store.start_attempt(store.get(task_id), "local")
    store.record_submissions([(first, task_id, "123", "placed on local")])
    assert store.get(task_id).state == State.INITIALIZING
    store.update_attempt(first.id, {"state": "SYSTEM_ERROR"}, finished=True)
    second = store.start_attempt(store.get(task_id), "local")
    row = store.get(task_id)
    attempts = store.attempts_for([row.seq])[row.seq]
    assert [a.number for a in attempts] == [1, 2]
    assert attempts[0].backend_job_id == "123" and attempts[0].finished
    assert store.current_attempts([row])[task_id].id == second.id  # type: ignore[union-attr]
