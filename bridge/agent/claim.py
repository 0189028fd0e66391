"""The attempt's claim: one live agent per attempt, whatever the broker did.

Before it touches anything, the agent claims ``attempts/<N>/claim.json`` with an
atomic create (``O_EXCL`` in a local work directory; a conditional ``PutObject``
(``If-None-Match: *``) on object storage, followed by a read-back, since not every
S3 server honours the condition).  While it runs it refreshes ``heartbeat_at`` every
:data:`HEARTBEAT_S` seconds.  A second agent started for the same attempt -- a
broker that died while ``sbatch`` was in flight and, after its restart, could not
see the job yet -- finds the claim and:

* refuses if the attempt already has a final status (it ran; it must not run again);
* refuses if the holder is alive: the same host and a living process with the same
  pid and start time, or, from another host, a heartbeat younger than
  :data:`STALE_S`;
* otherwise takes the stale claim over (the holder died; the attempt was lost).

A refusing agent writes nothing into the attempt's ``status.json`` (that belongs to
the holder); it records why in ``attempts/<N>/refused-<pid>.json`` and its own log, and
exits with :data:`EXIT_REFUSED`.  The broker reads the claim with
:func:`claim_is_live` before it believes a job ended without a report.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.agent.errors import AgentError
from bridge.agent.workdir import WorkDir, read_status

HEARTBEAT_S = 5.0
STALE_S = 30.0
EXIT_REFUSED = 75  # EX_TEMPFAIL: somebody else runs (or ran) this attempt
FINAL_STATES = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"})


def claim_name(attempt: int) -> str:
    return f"attempts/{attempt}/claim.json"


def refused_name(attempt: int, pid: int) -> str:
    return f"attempts/{attempt}/refused-{pid}.json"


class ClaimRefused(AgentError):
    """Another agent holds (or finished) this attempt."""


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    start: str
    job_name: str

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(
            socket.gethostname(),
            pid,
            _proc_start(pid) or "0",
            os.environ.get("BRIDGE_JOB_NAME", ""),
        )

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "start": self.start, "job": self.job_name}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Holder:
        return cls(
            str(doc.get("host", "")),
            int(doc.get("pid", 0) or 0),
            str(doc.get("start", "")),
            str(doc.get("job", "")),
        )


def _read(wd: WorkDir, attempt: int) -> dict[str, Any] | None:
    try:
        doc = json.loads(wd.read_bytes(claim_name(attempt)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def holder_alive(doc: dict[str, Any], now: float | None = None) -> bool:
    """Whether the agent that wrote this claim still runs (see the module docstring)."""
    if not doc or doc.get("released"):
        return False
    holder = Holder.from_json(doc.get("holder") or {})
    if holder.host == socket.gethostname() and holder.pid:
        return _proc_start(holder.pid) == holder.start
    beat = float(doc.get("heartbeat_at") or 0)
    return (now if now is not None else time.time()) - beat < STALE_S


def claim_is_live(wd: WorkDir, attempt: int) -> bool:
    """For the broker: does a live agent hold this attempt?"""
    try:
        doc = _read(wd, attempt)
    except OSError:
        return False
    return bool(doc) and holder_alive(doc or {})


def claim_exists(wd: WorkDir, attempt: int) -> bool:
    try:
        return _read(wd, attempt) is not None
    except OSError:
        return False


class Claim:
    """A held claim; :meth:`release` when the attempt's final status is written."""

    def __init__(self, wd: WorkDir, attempt: int, holder: Holder) -> None:
        self.wd = wd
        self.attempt = attempt
        self.holder = holder
        self.claimed_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def document(self, **extra: Any) -> bytes:
        doc = {
            "holder": self.holder.to_json(),
            "claimed_at": self.claimed_at,
            "heartbeat_at": time.time(),
            **extra,
        }
        return json.dumps(doc).encode()

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                self.wd.write_bytes(claim_name(self.attempt), self.document())

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=HEARTBEAT_S)
        with contextlib.suppress(OSError):
            self.wd.write_bytes(claim_name(self.attempt), self.document(released=True))


def acquire(wd: WorkDir, attempt: int, holder: Holder | None = None) -> Claim:
    """Claim the attempt or raise :class:`ClaimRefused` saying who holds it."""
    claim = Claim(wd, attempt, holder or Holder.me())
    name = claim_name(attempt)
    if wd.create_exclusive(name, claim.document()) and _mine(wd, attempt, claim):
        claim.start()
        return claim
    existing = _read(wd, attempt) or {}
    status = read_status(wd, attempt) or {}
    if status.get("state") in FINAL_STATES:
        raise _refuse(wd, attempt, claim, f"attempt {attempt} already ended {status['state']}")
    if holder_alive(existing):
        other = Holder.from_json(existing.get("holder") or {})
        raise _refuse(
            wd,
            attempt,
            claim,
            f"attempt {attempt} is held by a live agent (host {other.host}, pid {other.pid}, "
            f"job {other.job_name or '?'})",
        )
    # The holder is gone without a final status: the attempt was lost; take it over.
    wd.write_bytes(name, claim.document(took_over=existing.get("holder")))
    claim.start()
    return claim


def _mine(wd: WorkDir, attempt: int, claim: Claim) -> bool:
    doc = _read(wd, attempt) or {}
    return Holder.from_json(doc.get("holder") or {}) == claim.holder


def _refuse(wd: WorkDir, attempt: int, claim: Claim, why: str) -> ClaimRefused:
    note = {"refused": claim.holder.to_json(), "at": time.time(), "why": why}
    with contextlib.suppress(OSError):
        wd.write_bytes(refused_name(attempt, claim.holder.pid), json.dumps(note).encode())
    return ClaimRefused(why)
