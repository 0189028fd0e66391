"""The dashboard's pages (FastAPI routes rendering Jinja2 templates).

Who may see what is decided once per request by :func:`_caller`: with no users
configured everything is the local admin; otherwise a bearer header or the session
cookie names the user, and every read passes that user as the owner filter (admins:
none), so another user's task is as absent as an unknown id -- the same 404.
Database reads run in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from bridge import store_reads
from bridge.accounts import token_digest
from bridge.api.auth import ANONYMOUS, Caller, auth_enabled, resolve_digest
from bridge.api.errors import BadRequest, Unauthorized
from bridge.config import Settings
from bridge.dashboard import charts, report, storage
from bridge.dashboard.session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_S,
    SessionKeys,
    csrf_ok,
    new_csrf,
)
from bridge.requirements import Requirements
from bridge.sizes import human_size
from bridge.states import State
from bridge.store import TaskNotFound, TaskStore, utcnow
from bridge.views import rfc3339

router = APIRouter(include_in_schema=False)

ENV = Environment(
    loader=PackageLoader("bridge.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
PAGE_SIZE = 50
ACTIVE_STATES = ("RUNNING", "INITIALIZING", "CANCELING", "QUEUED")
_TAG = re.compile(r"^[^=]{1,256}(=.{0,1024})?$")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


ENV.filters["when"] = _when
ENV.filters["size"] = human_size
ENV.filters["colour"] = charts.colour
ENV.filters["q"] = lambda v: quote(str(v), safe="")


class NotAllowed(PermissionError):
    """An admin-only page asked for by a user (answered 403)."""


class LoginRequired(PermissionError):
    """A browser asked for a page without a session: send it to the log-in form."""


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.store
    return store


def _keys(request: Request) -> SessionKeys:
    keys: SessionKeys | None = getattr(request.app.state, "session_keys", None)
    if keys is None:
        keys = SessionKeys(_settings(request).data_dir)
        request.app.state.session_keys = keys
    return keys


async def _caller(request: Request) -> Caller:
    settings = _settings(request)
    if not await asyncio.to_thread(auth_enabled, request, settings):
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        digest: str | None = token_digest(token.strip())
    else:
        digest = _keys(request).digest_of(request.cookies.get(SESSION_COOKIE))
    caller = await asyncio.to_thread(resolve_digest, request, settings, digest) if digest else None
    if caller is None:
        browser = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if browser and not header:
            raise LoginRequired(request.url.path)
        raise Unauthorized("log in, or send a bearer token")
    return caller


def _admin(caller: Caller) -> None:
    if not caller.admin:
        raise NotAllowed("this page is for admins")


def _page(request: Request, caller: Caller, name: str, **context: Any) -> HTMLResponse:
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
    html = ENV.get_template(name).render(
        caller=caller,
        csrf=csrf,
        here=request.url.path,
        auth=caller is not ANONYMOUS,
        **context,
    )
    response = HTMLResponse(html)
    if request.cookies.get(CSRF_COOKIE) != csrf:
        _set_cookie(response, CSRF_COOKIE, csrf, SESSION_S)
    return response


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", path="/")


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _check_csrf(request: Request, form: dict[str, str]) -> None:
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), form.get("csrf")):
        raise BadRequest("csrf", "the form is stale or was not sent by this site; reload it")


def install(app: Any) -> None:
    """Error pages for the dashboard's own errors."""

    @app.exception_handler(NotAllowed)
    async def _forbidden(_: Request, err: NotAllowed) -> Response:
        return HTMLResponse(f"<h1>403</h1><p>{err}</p>", status_code=403)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @app.exception_handler(storage.StorageError)
    async def _storage(_: Request, err: storage.StorageError) -> Response:
        from fastapi.responses import JSONResponse

        return JSONResponse(
            {
                "message": f"path: {err}",
                "errors": [{"field": "path", "message": str(err)}],
                "field": "path",
            },
            status_code=400,
        )


# -- log-in ---------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return _page(request, ANONYMOUS, "login.html", next=_safe_next(next), error=None)


def _safe_next(target: str) -> str:
    """Only a path on this site (no scheme, no //host) may follow a log-in."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    _check_csrf(request, form)
    settings = _settings(request)
    token = form.get("token", "").strip()
    digest = token_digest(token) if token else ""
    caller = await asyncio.to_thread(resolve_digest, request, settings, digest) if token else None
    if caller is None:
        response = _page(
            request,
            ANONYMOUS,
            "login.html",
            next=_safe_next(form.get("next", "/")),
            error="that token is not valid",
        )
        response.status_code = 401
        return response
    done = RedirectResponse(_safe_next(form.get("next", "/")), status_code=303)
    _set_cookie(done, SESSION_COOKIE, _keys(request).issue(digest), SESSION_S)
    return done


@router.post("/logout")
async def logout(request: Request) -> Response:
    _check_csrf(request, await _form(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- overview ---------------------------------------------------------------------------


@router.get("/")
async def overview(request: Request) -> Response:
    caller = await _caller(request)
    engine = _store(request).engine
    owner = caller.owner_filter

    def active() -> dict[str, list[store_reads.TaskLine]]:
        return {
            s: store_reads.task_lines(engine, store_reads.TaskFilter(state=s, owner=owner), 10)
            for s in ACTIVE_STATES
        }

    # The aggregates are independent and SQLite releases the GIL while a statement
    # runs, so reading them side by side in worker threads shortens the page.
    states, per_target, hourly, lines, target_rows = await asyncio.gather(
        asyncio.to_thread(store_reads.state_counts, engine, owner),
        asyncio.to_thread(store_reads.target_counts, engine, owner),
        asyncio.to_thread(store_reads.hourly_finishes, engine, owner),
        asyncio.to_thread(active),
        asyncio.to_thread(_store(request).targets),
    )
    data = {
        "states": states,
        "per_target": per_target,
        "hourly": hourly,
        "active": lines,
        "targets": target_rows,
    }
    configured = {t.name: t for t in _settings(request).targets}
    targets = []
    for row in data["targets"]:
        info = row["info"]
        counts = data["per_target"].get(row["name"], {})
        targets.append(
            {
                "name": row["name"],
                "kind": row["kind"],
                "healthy": info.get("healthy"),
                "detail": info.get("detail"),
                "arch": info.get("microarchitecture"),
                "cpus": info.get("cpus"),
                "wait": info.get("queue_wait_s"),
                "running": counts.get("RUNNING", 0),
                "queued": counts.get("INITIALIZING", 0) + counts.get("QUEUED", 0),
                "configured": row["name"] in configured,
                "updated": row["updated_time"],
            }
        )
    for name, cfg in configured.items():
        if not any(t["name"] == name for t in targets):
            targets.append(
                {
                    "name": name,
                    "kind": cfg.kind,
                    "healthy": None,
                    "detail": None,
                    "arch": None,
                    "cpus": None,
                    "wait": None,
                    "running": 0,
                    "queued": 0,
                    "configured": True,
                    "updated": None,
                }
            )
    hourly = data["hourly"]
    chart = charts.stacked_bars(
        [h.strftime("%H:00") for h, _, _ in hourly],
        [
            ("completed", charts.colour("COMPLETE"), [float(d) for _, d, _ in hourly]),
            ("failed", charts.colour("EXECUTOR_ERROR"), [float(f) for _, _, f in hourly]),
        ],
    )
    waiting = data["per_target"].get("", {}).get("QUEUED", 0)
    active_count = sum(data["states"].get(s, 0) for s in ACTIVE_STATES)
    return _page(
        request,
        caller,
        "overview.html",
        targets=targets,
        states=data["states"],
        total=sum(data["states"].values()),
        chart=chart,
        active=data["active"],
        unplaced=waiting,
        live=active_count > 0,
    )


# -- tasks ------------------------------------------------------------------------------


def _task_filter(request: Request, caller: Caller) -> store_reads.TaskFilter:
    p = request.query_params
    state = p.get("state") or None
    if state is not None and state not in State.__members__:
        raise BadRequest("state", f"unknown state {state!r}")
    tag = p.get("tag") or None
    key = value = None
    if tag is not None:
        if not _TAG.match(tag):
            raise BadRequest("tag", "must be key or key=value")
        key, _, value = tag.partition("=")
    user = p.get("user") or None
    if not caller.admin:
        user = caller.name  # a user's list is always their own
    return store_reads.TaskFilter(
        state=state,
        tag_key=key,
        tag_value=value or None,
        owner=user,
        target=p.get("target") or None,
        name_prefix=p.get("name") or None,
    )


@router.get("/tasks")
async def tasks(request: Request) -> Response:
    caller = await _caller(request)
    flt = _task_filter(request, caller)
    before_raw = request.query_params.get("before")
    before = None
    if before_raw:
        if not before_raw.isdigit():
            raise BadRequest("before", "must be a task sequence number")
        before = int(before_raw)
    engine = _store(request).engine
    lines = await asyncio.to_thread(store_reads.task_lines, engine, flt, PAGE_SIZE + 1, before)
    more = len(lines) > PAGE_SIZE
    lines = lines[:PAGE_SIZE]
    params = {k: v for k, v in request.query_params.items() if k != "before" and v}
    next_url = (
        "/tasks?" + urlencode({**params, "before": lines[-1].seq}) if more and lines else None
    )
    return _page(
        request,
        caller,
        "tasks.html",
        lines=lines,
        flt=flt,
        params=params,
        states=list(State.__members__),
        targets=[t.name for t in _settings(request).targets],
        next_url=next_url,
        live=any(line.state in ACTIVE_STATES for line in lines),
    )


@router.get("/tasks/{task_id}")
async def task_page(task_id: str, request: Request) -> Response:
    caller = await _caller(request)
    engine = _store(request).engine

    def read() -> tuple[store_reads.TaskTimes, list[dict[str, Any]]] | None:
        detail = store_reads.task_detail(engine, task_id, caller.owner_filter)
        if detail is None:
            return None
        return detail, store_reads.events(engine, detail.line.seq)

    found = await asyncio.to_thread(read)
    if found is None:
        raise TaskNotFound(task_id)
    detail, events = found
    doc = detail.document
    requirements = _requirements(doc, detail.line.owner)
    attempts = []
    for a in detail.attempts:
        attempts.append(
            {
                "number": a.number,
                "target": a.target,
                "job": a.backend_job_id,
                "submitted": a.submitted_time,
                "start": a.start_time,
                "end": a.end_time,
                "executors": a.status.get("executors", []),
                "outputs": a.status.get("outputs", []),
                "system_logs": a.status.get("system_logs", []),
            }
        )
    return _page(
        request,
        caller,
        "task.html",
        task=detail.line,
        doc=doc,
        reason=detail.placement_reason,
        events=events,
        attempts=attempts,
        requirements=requirements,
        cancellable=detail.line.state in ACTIVE_STATES,
        live=detail.line.state in ACTIVE_STATES,
        rfc3339=rfc3339,
    )


def _requirements(doc: dict[str, Any], owner: str) -> dict[str, Any]:
    """What the router read from the task (defaults filled in), then the raw parameters."""
    try:
        resolved = Requirements.of(doc).to_json()
    except ValueError:  # a document submission would refuse as well
        resolved = {}
    resources = doc.get("resources") or {}
    return {
        "resolved": resolved,
        "backend_parameters": resources.get("backend_parameters") or {},
    }


@router.post("/tasks/{task_id}/cancel")
async def cancel(task_id: str, request: Request) -> Response:
    caller = await _caller(request)
    _check_csrf(request, await _form(request))
    await asyncio.to_thread(_store(request).request_cancel, task_id, caller.owner_filter)
    request.app.state.wake_broker()
    return RedirectResponse(f"/tasks/{quote(task_id, safe='')}", status_code=303)


# -- workflows --------------------------------------------------------------------------


@router.get("/workflows")
async def workflows(request: Request, key: str = "workflow") -> Response:
    caller = await _caller(request)
    if not 0 < len(key) <= 256:
        raise BadRequest("key", "a tag key of 1 to 256 characters")
    rows = await asyncio.to_thread(
        store_reads.workflows, _store(request).engine, caller.owner_filter, key
    )
    live = any(r["total"] > r["done"] for r in rows)
    return _page(request, caller, "workflows.html", rows=rows, key=key, live=live)


@router.get("/workflows/{key}/{value}")
async def workflow(key: str, value: str, request: Request) -> Response:
    caller = await _caller(request)
    items = await asyncio.to_thread(
        store_reads.workflow_tasks, _store(request).engine, caller.owner_filter, key, value
    )
    rates = {t.name: t.cost_per_cpu_hour for t in _settings(request).targets}
    rows = [report.summarise(t, rates) for t in items]
    now = utcnow()
    spans = [
        charts.Span(r.name or r.id[:8], r.start, r.end or now, r.state, f"/tasks/{r.id}")
        for r in sorted(rows, key=lambda r: r.start or now)
        if r.start
    ]
    failed = [r for r in rows if r.state in store_reads.FAILED]
    others = [r for r in rows if r.state not in store_reads.FAILED]
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.state] += 1
    done = sum(counts.get(s, 0) for s in store_reads.FINISHED)
    return _page(
        request,
        caller,
        "workflow.html",
        key=key,
        value=value,
        rows=failed + others,
        counts=dict(counts),
        total=len(rows),
        done=done,
        gantt=charts.gantt(spans),
        live=done < len(rows),
    )


@router.get("/report")
async def workflow_report(request: Request, tag: str = "") -> Response:
    caller = await _caller(request)
    if not tag or "=" not in tag or not _TAG.match(tag):
        raise BadRequest("tag", "must be key=value, e.g. workflow=ID")
    key, _, value = tag.partition("=")
    items = await asyncio.to_thread(
        store_reads.workflow_tasks, _store(request).engine, caller.owner_filter, key, value
    )
    rates = {t.name: t.cost_per_cpu_hour for t in _settings(request).targets}
    html = report.render(ENV, key, value, items, rates)
    return HTMLResponse(html)


# -- builds, storage, cost -----------------------------------------------------------------


@router.get("/builds")
async def builds(request: Request) -> Response:
    caller = await _caller(request)
    _admin(caller)
    table, rows = await asyncio.to_thread(store_reads.builds, _store(request).engine)
    columns = list(rows[0]) if rows else []
    live = any(
        str(r.get("state", r.get("status", ""))).lower() in {"building", "queued", "running"}
        for r in rows
    )
    return _page(request, caller, "builds.html", table=table, rows=rows, columns=columns, live=live)


@router.get("/storage")
async def storage_page(request: Request, path: str = "") -> Response:
    caller = await _caller(request)
    _admin(caller)
    settings = _settings(request)
    roots = storage.roots(settings)
    if not path:
        return _page(request, caller, "storage.html", roots=roots, path=None, entries=[], total=0)
    entries, total = await asyncio.to_thread(storage.listing, settings, path)
    parent = path.rstrip("/").rsplit("/", 1)[0] if path.rstrip("/") not in roots else None
    return _page(
        request,
        caller,
        "storage.html",
        roots=roots,
        path=path,
        parent=parent,
        entries=entries,
        total=total,
    )


@router.get("/storage/preview")
async def storage_preview(request: Request, path: str = "") -> Response:
    caller = await _caller(request)
    _admin(caller)
    if not path:
        raise BadRequest("path", "which object or file to preview")
    text, size = await asyncio.to_thread(storage.preview, _settings(request), path)
    return _page(request, caller, "preview.html", path=path, text=text, size=size)


@router.get("/cost")
async def cost(request: Request) -> Response:
    caller = await _caller(request)
    rates = {t.name: t.cost_per_cpu_hour for t in _settings(request).targets}
    rows = await asyncio.to_thread(
        store_reads.attempt_costs, _store(request).engine, caller.owner_filter, rates
    )
    groups: dict[str, dict[str, list[float]]] = {
        "user": defaultdict(lambda: [0.0, 0.0]),
        "target": defaultdict(lambda: [0.0, 0.0]),
        "tag": defaultdict(lambda: [0.0, 0.0]),
    }
    for r in rows:
        for kind, keys in (("user", [r["owner"]]), ("target", [r["target"]]), ("tag", r["tags"])):
            for k in keys:
                groups[kind][k][0] += r["cpu_hours"]
                groups[kind][k][1] += r["cost"]
    tables = {
        kind: sorted(((k, v[0], v[1]) for k, v in g.items()), key=lambda t: -t[2])[:100]
        for kind, g in groups.items()
    }
    return _page(request, caller, "cost.html", tables=tables, rates=rates, attempts=len(rows))


# -- static -------------------------------------------------------------------------------


def _static(name: str) -> str:
    return resources.files("bridge.dashboard").joinpath("static", name).read_text()


@router.get("/static/dash.js")
async def script() -> Response:
    return Response(_static("dash.js"), media_type="text/javascript")


@router.get("/static/dash.css")
async def stylesheet() -> Response:
    return Response(_static("dash.css"), media_type="text/css")
