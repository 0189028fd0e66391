"""The reconcile table, the orphan table and the agent's claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.agent import claim
from bridge.agent.workdir import LocalWorkDir, write_status
from bridge.attempts import (
    Facts,
    OrphanAction,
    OrphanFacts,
    Verdict,
    decide,
    decide_orphan,
    job_name,
)
from bridge.states import State
from schedulers.base import JobState, JobStatus


def facts(**changes: object) -> Facts:
    base: dict[str, object] = {
        "task_state": State.INITIALIZING,
        "agent_state": None,
        "agent_last_log": "",
        "executor_exit_codes": (),
        "job": JobStatus(JobState.RUNNING),
        "job_label": "hpc job 7",
        "silent_for_s": 0.0,
        "claim_live": False,
        "attempt": 1,
        "retries": 1,
    }
    base.update(changes)
    return Facts(**base)  # type: ignore[arg-type]


ENDED = JobStatus(JobState.COMPLETED, exit_code=0)
LOST = JobStatus(JobState.LOST, reason="node died")
PREEMPTED = JobStatus(JobState.PREEMPTED)
CANCELLED = JobStatus(JobState.CANCELLED, reason="scancel")

RECONCILE_CASES = [
    # (case, facts, verdict, state)
    ("agent says complete", facts(agent_state="COMPLETE"), Verdict.FINISH, State.COMPLETE),
    (
        "agent says executor error, job ended",
        facts(agent_state="EXECUTOR_ERROR", job=ENDED),
        Verdict.FINISH,
        State.EXECUTOR_ERROR,
    ),
    (
        "agent's word beats a lost job",
        facts(agent_state="COMPLETE", job=LOST),
        Verdict.FINISH,
        State.COMPLETE,
    ),
    ("agent canceled outside", facts(agent_state="CANCELED"), Verdict.FINISH, State.SYSTEM_ERROR),
    ("first executor started", facts(agent_state="RUNNING"), Verdict.STARTED, State.RUNNING),
    (
        "already running",
        facts(agent_state="RUNNING", task_state=State.RUNNING),
        Verdict.WAIT,
        None,
    ),
    ("job pending, no status", facts(job=JobStatus(JobState.PENDING)), Verdict.WAIT, None),
    ("backend could not answer", facts(job=None), Verdict.WAIT, None),
    ("ended, inside the grace", facts(job=ENDED, silent_for_s=1.0), Verdict.WAIT, None),
    (
        "ended, another live agent holds it",
        facts(job=ENDED, silent_for_s=60.0, claim_live=True),
        Verdict.WAIT,
        None,
    ),
    (
        "ended silently",
        facts(job=ENDED, silent_for_s=5.0),
        Verdict.FINISH,
        State.SYSTEM_ERROR,
    ),
    ("lost, retries left", facts(job=LOST, silent_for_s=5.0), Verdict.RETRY, State.QUEUED),
    (
        "preempted, retries left",
        facts(job=PREEMPTED, silent_for_s=5.0),
        Verdict.RETRY,
        State.QUEUED,
    ),
    (
        "lost, no retries left",
        facts(job=LOST, silent_for_s=5.0, attempt=2),
        Verdict.FINISH,
        State.SYSTEM_ERROR,
    ),
    (
        "cancelled outside the broker",
        facts(job=CANCELLED, silent_for_s=5.0),
        Verdict.FINISH,
        State.SYSTEM_ERROR,
    ),
]


@pytest.mark.parametrize(("case", "f", "verdict", "state"), RECONCILE_CASES)
def test_reconcile_table(case: str, f: Facts, verdict: Verdict, state: State | None) -> None:
    decision = decide(f)
    assert (decision.verdict, decision.state) == (verdict, state), case
    if verdict in (Verdict.FINISH, Verdict.RETRY):
        assert decision.reason and decision.outcome


def test_reasons_say_what_happened() -> None:
    lost = decide(facts(job=LOST, silent_for_s=5.0))
    assert "hpc job 7 ended LOST: node died before the agent reported" in lost.reason
    assert "retrying (attempt 2)" in lost.reason
    cancelled = decide(facts(job=CANCELLED, silent_for_s=5.0))
    assert "cancelled outside the broker" in cancelled.reason
    failed = decide(facts(agent_state="EXECUTOR_ERROR", executor_exit_codes=(0, 3)))
    assert "[0, 3]" in failed.reason


def orphan(**changes: object) -> OrphanFacts:
    base: dict[str, object] = {
        "known_job_id": None,
        "settled": True,
        "agent_state": None,
        "claim_live": False,
        "claim_seen": False,
    }
    base.update(changes)
    return OrphanFacts(**base)  # type: ignore[arg-type]


ORPHAN_CASES = [
    ("backend knows it", orphan(known_job_id="12", settled=False), OrphanAction.ADOPT),
    ("agent finished it", orphan(agent_state="COMPLETE"), OrphanAction.FOLLOW),
    ("a live agent runs it", orphan(claim_live=True, claim_seen=True), OrphanAction.FOLLOW),
    ("submission may be in flight", orphan(settled=False), OrphanAction.WAIT),
    ("agent started and died", orphan(claim_seen=True, agent_state="RUNNING"), OrphanAction.LOST),
    ("never started", orphan(), OrphanAction.RESUBMIT),
]


@pytest.mark.parametrize(("case", "f", "action"), ORPHAN_CASES)
def test_orphan_table(case: str, f: OrphanFacts, action: OrphanAction) -> None:
    assert decide_orphan(f)[0] == action, case


def test_job_names_are_a_pure_function_of_task_and_attempt() -> None:
    assert job_name("abc", 2) == "bridge-abc-2" == job_name("abc", 2)
    assert job_name("abc", 1) != job_name("abc", 2)


# -- the claim: real processes, a real work directory --------------------------------


def test_a_second_agent_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    wd = LocalWorkDir(tmp_path)
    held = claim.acquire(wd, 1)
    try:
        with pytest.raises(claim.ClaimRefused, match="held by a live agent"):
            claim.acquire(wd, 1, claim.Holder("other", 1, "1", "bridge-t-1"))
        assert claim.claim_is_live(wd, 1)
        assert list(tmp_path.glob("attempts/1/refused-*.json"))
    finally:
        held.release()
    assert not claim.claim_is_live(wd, 1)


def test_a_dead_holders_claim_is_taken_over(tmp_path: Path) -> None:
    wd = LocalWorkDir(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    start = "999999"  # whatever it was, that process is gone
    stale = claim.Claim(wd, 1, claim.Holder(os.uname().nodename, dead.pid, start, "j"))
    assert wd.create_exclusive(claim.claim_name(1), stale.document())
    assert not claim.claim_is_live(wd, 1)
    taken = claim.acquire(wd, 1)
    try:
        doc = json.loads((tmp_path / claim.claim_name(1)).read_text())
        assert doc["holder"]["pid"] == os.getpid()
        assert doc["took_over"]["pid"] == dead.pid
    finally:
        taken.release()


def test_a_finished_attempt_is_never_run_again(tmp_path: Path) -> None:
    wd = LocalWorkDir(tmp_path)
    first = claim.acquire(wd, 1)
    write_status(wd, 1, {"state": "COMPLETE"})
    first.release()
    with pytest.raises(claim.ClaimRefused, match="already ended COMPLETE"):
        claim.acquire(wd, 1)


def test_a_holder_on_another_host_is_live_while_its_heartbeat_is_fresh() -> None:
    now = time.time()
    doc = {"holder": {"host": "elsewhere", "pid": 1, "start": "1"}, "heartbeat_at": now - 5}
    assert claim.holder_alive(doc, now)
    assert not claim.holder_alive(doc, now + claim.STALE_S)
    assert not claim.holder_alive({**doc, "released": True}, now)


def test_two_agents_on_one_attempt_run_it_once(tmp_path: Path) -> None:
    from bridge.agent.workdir import read_status, write_task

    wd = LocalWorkDir(tmp_path / "work")
    ledger = tmp_path / "ran"
    command = f"echo run >> {ledger} && sleep 8"
    task = {"id": "t1", "executors": [{"image": "debian", "command": ["sh", "-c", command]}]}
    write_task(wd, task, {"container_runtime": "none", "attempt": 1})
    agent = [sys.executable, "-m", "bridge.agent.main", "run", str(tmp_path / "work")]
    first = subprocess.Popen(agent)
    deadline = time.monotonic() + 30
    while not (tmp_path / "work" / claim.claim_name(1)).exists():
        assert time.monotonic() < deadline, "the first agent never claimed the attempt"
        time.sleep(0.05)
    second = subprocess.run(agent, capture_output=True, text=True, timeout=60)
    assert second.returncode == claim.EXIT_REFUSED, second.stderr
    # refused while the first runs, or (on a slow machine) because it has finished
    assert "held by a live agent" in second.stderr or "already ended" in second.stderr
    assert first.wait(60) == 0
    assert ledger.read_text() == "run\n"
    assert (read_status(wd, 1) or {})["state"] == "COMPLETE"


def test_one_list_of_runtime_names() -> None:
    from typing import get_args

    from bridge.agent.task import RUNTIME_NAMES
    from bridge.config import ContainerRuntime

    assert get_args(ContainerRuntime) == RUNTIME_NAMES
