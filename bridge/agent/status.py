"""The attempt's ``status.json``: one document, replaced at every step.

:class:`StatusReporter` owns the document, writes it atomically to the work directory
after every change of state (the broker may read it at any moment, and it is the only
report a node without network access to the broker can give), and, when
``runtime.api_url`` is set, also POSTs it to ``<api_url>/internal/tasks/<id>/status``.

The POST is best-effort: a 2-second timeout, errors are logged and never fail the
task, and after a failure further posts are skipped for :data:`API_BACKOFF_S` seconds so
an unreachable broker costs at most a few seconds per attempt.  If
``BRIDGE_AGENT_TOKEN`` is set in the agent's environment it is sent as a bearer token
(it is removed from the executors' environment and never written anywhere).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from bridge.agent.redact import redact_url, scrub
from bridge.agent.workdir import WorkDir, write_status

log = logging.getLogger(__name__)

API_TIMEOUT_S = 2.0
API_BACKOFF_S = 30.0
TOKEN_ENV = "BRIDGE_AGENT_TOKEN"  # noqa: S105 - the variable's name, not a value
FINAL_STATES = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"})


def now() -> str:
    """The current time in RFC 3339 (UTC, milliseconds)."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class ApiPoster:
    """Best-effort POSTs of the status document to the broker."""

    def __init__(self, api_url: str, task_id: str, token: str | None = None) -> None:
        self.url = f"{api_url.rstrip('/')}/internal/tasks/{quote(task_id, safe='')}/status"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._skip_until = 0.0
        self._client: Any = None

    def post(self, doc: Mapping[str, Any]) -> bool:
        if time.monotonic() < self._skip_until:
            return False
        try:
            import httpx

            if self._client is None:
                self._client = httpx.Client(timeout=API_TIMEOUT_S, headers=self._headers)
            resp = self._client.post(self.url, json=doc)
            resp.raise_for_status()
            return True
        except Exception as err:
            self._skip_until = time.monotonic() + API_BACKOFF_S
            log.warning("status post to %s failed: %s", redact_url(self.url), err)
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class StatusReporter:
    """Builds ``status.json`` and publishes it after each change.

    System log lines are scrubbed of every value in ``secrets`` (see
    :mod:`bridge.agent.redact`) before they are kept.
    """

    def __init__(
        self,
        wd: WorkDir,
        attempt: int,
        task_id: str,
        *,
        metadata: Mapping[str, str],
        poster: ApiPoster | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.wd = wd
        self.secrets = list(secrets)
        self.last_write_ok = True
        self.attempt = attempt
        self.poster = poster
        self.doc: dict[str, Any] = {
            "task_id": task_id,
            "attempt": attempt,
            "state": "INITIALIZING",
            "start_time": now(),
            "end_time": None,
            "executors": [],
            "outputs": [],
            "system_logs": [],
            "metadata": dict(metadata),
        }

    @property
    def state(self) -> str:
        return str(self.doc["state"])

    def log(self, message: str) -> None:
        """Add a system log line (also to the agent's own log)."""
        message = scrub(message, self.secrets)
        log.info("%s", message)
        self.doc["system_logs"].append(message)

    def set_metadata(self, **values: str) -> None:
        self.doc["metadata"].update(values)

    def publish(self, state: str | None = None) -> bool:
        """Set ``state`` (if given), then write and post the document.

        Returns whether the write succeeded; a failure is logged, never raised, so the
        attempt can still stop cleanly (the agent's exit status then says 2).
        """
        if state is not None:
            self.doc["state"] = state
            if state in FINAL_STATES:
                self.doc["end_time"] = now()
        try:
            write_status(self.wd, self.attempt, self.doc)
            self.last_write_ok = True
        except OSError as err:
            log.error("cannot write status to %s: %s", self.wd.url, err)
            self.last_write_ok = False
        if self.poster is not None:
            self.poster.post(self.doc)
        return self.last_write_ok


def api_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None
