"""The GA4GH TES v1.1 endpoints (served under ``/ga4gh/tes/v1`` and ``/v1``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bridge import __version__, metrics
from bridge.api.auth import caller_for
from bridge.api.errors import BadRequest, BodyTooLarge
from bridge.requirements import accepted_parameters
from bridge.states import State
from bridge.store import ListQuery, TaskStore
from bridge.submission import task_document
from bridge.tes import parse_task
from bridge.views import View, minimal, task_view

router = APIRouter()

MAX_PAGE_SIZE = 2047
DEFAULT_PAGE_SIZE = 256


def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.store
    return store


def _view(request: Request, default: View = View.MINIMAL) -> View:
    raw = request.query_params.get("view")
    if raw is None or raw == "":
        return default
    try:
        return View(raw)
    except ValueError:
        raise BadRequest("view", f"must be one of MINIMAL, BASIC, FULL; got {raw!r}") from None


def _json(content: Any) -> Response:
    return JSONResponse(content)


@router.get("/service-info")
async def service_info(request: Request) -> Response:
    settings = request.app.state.settings
    storage = [settings.effective_work_url]
    if not storage[0].startswith("s3://"):
        storage = ["file://" + storage[0]]
    return _json(
        {
            "id": "org.converged-bridge.tes",
            "name": "converged-bridge",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": "Routes TES tasks to Slurm, Dask, AWS Batch or the local machine",
            "organization": {
                "name": "converged-bridge",
                "url": "https://example.org/converged-bridge",
            },
            "version": __version__,
            "storage": storage,
            "tesResources_backend_parameters": accepted_parameters(),
        }
    )


@router.post("/tasks")
async def create_task(request: Request) -> Response:
    caller = caller_for(request, request.app.state.settings)
    body = await _read_body(request)
    doc = task_document(parse_task(body))
    task_id = await request.app.state.writer.create(doc, caller.name)
    metrics.SUBMISSIONS.inc()
    request.app.state.wake_broker()
    return _json({"id": task_id})


async def _read_body(request: Request) -> bytes:
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise BadRequest("body", "a TES task document is required")
    return body


@router.get("/tasks")
async def list_tasks(request: Request) -> Response:
    caller = caller_for(request, request.app.state.settings)
    params = request.query_params
    view = _view(request)
    state = None
    if params.get("state"):
        try:
            state = State(params["state"])
        except ValueError:
            raise BadRequest("state", f"unknown state {params['state']!r}") from None
    page_size = DEFAULT_PAGE_SIZE
    if params.get("page_size"):
        raw = params["page_size"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
            raise BadRequest("page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
        page_size = int(raw)
    keys = params.getlist("tag_key")
    values = params.getlist("tag_value")
    if len(values) > len(keys):
        raise BadRequest("tag_value", "more tag_value than tag_key parameters")
    tags = {k: (values[i] if i < len(values) else "") for i, k in enumerate(keys)}
    query = ListQuery(
        name_prefix=params.get("name_prefix") or None,
        state=state,
        tags=tags or None,
        owner=caller.owner_filter,
        page_size=page_size,
        page_token=params.get("page_token") or None,
    )
    store = _store(request)

    def read() -> tuple[list[dict[str, Any]], str | None]:
        if view == View.MINIMAL:
            pairs, token = store.list_minimal(query)
            return [minimal(i, s) for i, s in pairs], token
        rows, token = store.list_full(query)
        attempts = store.attempts_for(r.seq for r in rows)
        return [task_view(r, attempts[r.seq], view) for r in rows], token

    # Reads run off the event loop: a slow query must not hold up POSTs and the broker.
    tasks, token = await asyncio.to_thread(read)
    body: dict[str, Any] = {"tasks": tasks}
    if token:
        body["next_page_token"] = token
    return _json(body)


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, request: Request) -> Response:
    caller = caller_for(request, request.app.state.settings)
    view = _view(request)
    store = _store(request)

    def read() -> dict[str, Any]:
        row = store.get(task_id, caller.owner_filter)
        if view == View.MINIMAL:
            return minimal(row.id, row.state.value)
        return task_view(row, store.attempts_for([row.seq])[row.seq], view)

    return _json(await asyncio.to_thread(read))


@router.post("/tasks/{task_id}:cancel")
async def cancel_task(task_id: str, request: Request) -> Response:
    caller = caller_for(request, request.app.state.settings)
    await asyncio.to_thread(_store(request).request_cancel, task_id, caller.owner_filter)
    request.app.state.wake_broker()
    return _json({})
