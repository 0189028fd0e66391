"""TES response documents: the MINIMAL, BASIC and FULL views, built as plain dicts.

- MINIMAL: ``id`` and ``state`` only.
- BASIC: everything except executor ``stdout``/``stderr``, input ``content`` and
  ``system_logs``.
- FULL: everything.

An executor that is still running has ``exit_code`` -1 (the field is required) and
its output so far.  ``logs`` holds one entry per attempt (TES: "in the case where a task fails and is
retried, an entry will be appended").  The placement reason and the backend's job
id are in each entry's ``metadata``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from bridge.store import AttemptRow, TaskRow


class View(enum.StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def minimal(task_id: str, state: str) -> dict[str, Any]:
    return {"id": task_id, "state": state}


def task_view(task: TaskRow, attempts: list[AttemptRow], view: View) -> dict[str, Any]:
    if view == View.MINIMAL:
        return minimal(task.id, task.state.value)
    full = view == View.FULL
    doc = task.document
    out: dict[str, Any] = {"id": task.id, "state": task.state.value}
    for key in ("name", "description", "resources", "executors", "volumes", "tags", "outputs"):
        if doc.get(key) is not None:
            out[key] = doc[key]
    if doc.get("inputs") is not None:
        out["inputs"] = (
            doc["inputs"]
            if full
            else [{k: v for k, v in i.items() if k != "content"} for i in doc["inputs"]]
        )
    out["creation_time"] = rfc3339(task.creation_time)
    warnings: list[str] = list(doc.get("_warnings", []))
    logs = [_attempt_log(task, a, full) for a in attempts]
    if full and warnings:
        if logs:
            logs[0].setdefault("system_logs", [])[:0] = warnings
        else:
            logs.append({"logs": [], "outputs": [], "system_logs": warnings})
    out["logs"] = logs
    for key in [k for k in out if k.startswith("_")]:
        out.pop(key)
    return out


def _attempt_log(task: TaskRow, attempt: AttemptRow, full: bool) -> dict[str, Any]:
    status = attempt.status
    executors = []
    for item in status.get("executors", []):
        code = item.get("exit_code")
        # TES requires an exit code; while the executor still runs it is -1.
        entry: dict[str, Any] = {"exit_code": int(code) if code is not None else -1}
        for key in ("start_time", "end_time"):
            if item.get(key):
                entry[key] = item[key]
        if full:
            entry["stdout"] = item.get("stdout", "")
            entry["stderr"] = item.get("stderr", "")
        executors.append(entry)
    metadata = {str(k): str(v) for k, v in (status.get("metadata") or {}).items()}
    fusion = status.get("fusion")
    if isinstance(fusion, dict):  # what Fusion did: fusion_mode, fusion_bytes_read, ...
        metadata.update({f"fusion_{k}": str(v) for k, v in fusion.items()})
    metadata["target"] = attempt.target
    metadata["attempt"] = str(attempt.number)
    if attempt.backend_job_id:
        metadata["backend_job_id"] = attempt.backend_job_id
    if task.placement_reason:
        metadata["placement_reason"] = task.placement_reason
    log: dict[str, Any] = {
        "logs": executors,
        "outputs": [
            {"url": o["url"], "path": o["path"], "size_bytes": str(o.get("size_bytes", "0"))}
            for o in status.get("outputs", [])
        ],
        "metadata": metadata,
    }
    start = status.get("start_time") or rfc3339(attempt.start_time or attempt.submitted_time)
    end = status.get("end_time") or rfc3339(attempt.end_time)
    if start:
        log["start_time"] = start
    if end:
        log["end_time"] = end
    if full:
        log["system_logs"] = [str(s) for s in status.get("system_logs", [])]
    return log
