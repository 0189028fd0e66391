"""Broker endpoints beyond TES: a task's events (with reasons) and the targets."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bridge.api.auth import caller_for
from bridge.store import TaskStore
from bridge.views import rfc3339

router = APIRouter(prefix="/api")


@router.get("/tasks/{task_id}/events")
async def task_events(task_id: str, request: Request) -> JSONResponse:
    caller = caller_for(request, request.app.state.settings)
    store: TaskStore = request.app.state.store

    def read() -> list[dict[str, Any]]:
        store.get(task_id, caller.owner_filter)  # 404 unless visible to the caller
        return [{**e, "at": rfc3339(e["at"])} for e in store.events(task_id)]

    return JSONResponse(await asyncio.to_thread(read))


@router.get("/targets")
async def targets(request: Request) -> JSONResponse:
    caller_for(request, request.app.state.settings)
    store: TaskStore = request.app.state.store
    configured = {t.name: t for t in request.app.state.settings.targets}
    out = []
    for row in await asyncio.to_thread(store.targets):
        cfg = configured.get(row["name"])
        out.append(
            {
                "name": row["name"],
                "kind": row["kind"],
                "configured": cfg is not None,
                "container_runtime": cfg.container_runtime if cfg else None,
                **row["info"],
                "updated_time": rfc3339(row["updated_time"]),
            }
        )
    return JSONResponse(out)


@router.get("/targets/{name}/health")
async def target_health(name: str, request: Request) -> JSONResponse:
    """The doctor's checks for one target (admins only: it runs a probe job)."""
    from starlette.exceptions import HTTPException

    from bridge.doctor import check_target

    caller = caller_for(request, request.app.state.settings)
    if not caller.admin:
        raise HTTPException(403, "target health is for administrators")
    configured = {t.name: t for t in request.app.state.settings.targets}
    if name not in configured:
        raise HTTPException(404, f"no target named {name!r}")
    report = await check_target(request.app.state.settings, configured[name])
    return JSONResponse(report.as_dict())
