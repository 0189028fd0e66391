"""Who may see what: every route of the app, two users, tokens kept in the database.

The route walk takes the app's own route table, so a route added later is walked too:
with alice's token no route may answer anything that names bob's task, and bob's task
must still be QUEUED (not cancelled) afterwards.  Each POST carries a valid CSRF pair,
so what stops alice is the owner check and not the form protection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge.accounts import Accounts
from bridge.api.app import create_app
from bridge.config import Settings
from bridge.store import TaskStore

PUBLIC = {
    "/healthz",
    "/login",
    "/logout",
    "/static/dash.js",
    "/static/dash.css",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/ga4gh/tes/v1/service-info",
    "/v1/service-info",
}


def _task(name: str, workflow: str) -> dict[str, Any]:
    return {
        "name": name,
        "tags": {"workflow": workflow},
        "executors": [{"image": "alpine", "command": ["true"]}],
    }


@pytest.fixture
def world(settings: Settings, store: TaskStore) -> Iterator[dict[str, Any]]:
    accounts = Accounts(store.engine)
    accounts.add_user("alice")
    accounts.add_user("bob")
    accounts.add_user("root", "admin")
    tokens = {name: accounts.create_token(name)[1] for name in ("alice", "bob", "root")}
    alice_task = store.create(_task("alice-job", "wf-alice"), "alice")
    bob_task = store.create(_task("bob-secret-job", "wf-bob"), "bob")
    app = create_app(settings, store)
    with TestClient(app) as client:
        yield {
            "client": client,
            "app": app,
            "tokens": tokens,
            "alice_task": alice_task,
            "bob_task": bob_task,
            "accounts": accounts,
            "store": store,
        }


def _fill(path: str, bob_task: str) -> str:
    values = {"task_id": bob_task, "key": "workflow", "value": "wf-bob"}
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values.get(m.group(1), "x"), path)


QUERIES = [
    "",
    "?tag=workflow%3Dwf-bob",
    "?user=bob",
    "?tag_key=workflow&tag_value=wf-bob&view=FULL",
    "?view=FULL",
    "?key=workflow",
]


def _flatten(routes: Any, prefix: str = "") -> list[tuple[str, set[str]]]:
    """``(path, methods)`` of every route, descending into included routers (FastAPI
    keeps an included router as one entry of ``app.routes`` holding its own)."""
    out: list[tuple[str, set[str]]] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            out += _flatten(included.routes, prefix + route.include_context.prefix)
        elif hasattr(route, "path"):
            out.append((prefix + route.path, set(getattr(route, "methods", None) or {"GET"})))
    return out


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, methods in _flatten(app.routes):
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def test_every_route_hides_and_protects_another_users_task(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    bob_task = world["bob_task"]
    routes = _routes(world["app"])
    paths = {path for _, path in routes}
    for expected in (
        "/tasks/{task_id}",
        "/v1/tasks/{task_id}",
        "/ga4gh/tes/v1/tasks/{task_id}:cancel",
    ):
        assert expected in paths, sorted(paths)
    assert len(routes) > 25  # TES twice, the API, the dashboard, /metrics
    alice = {"Authorization": f"Bearer {world['tokens']['alice']}", "Accept": "text/html"}
    client.cookies.set("bridge_csrf", "pair")
    walked = 0
    for method, path in routes:
        for query in QUERIES:
            url = _fill(path, bob_task) + query
            if method == "POST":
                response = client.post(
                    url, headers=alice, content="csrf=pair&token=x&name=y", follow_redirects=False
                )
            else:
                response = client.request(method, url, headers=alice, follow_redirects=False)
            walked += 1
            assert response.status_code < 500, (method, url, response.text[:300])
            body = response.text
            assert bob_task not in body or response.status_code == 404, (method, url)
            if response.status_code == 404:
                assert body.replace(bob_task, "ID") == _unknown_404(client, method, url, alice)
            assert "bob-secret-job" not in body, (method, url)
    assert walked >= len(routes) * len(QUERIES)
    assert world["store"].get(bob_task).state.value == "QUEUED"
    # and alice does see her own task through the same routes
    own = client.get(f"/tasks/{world['alice_task']}", headers=alice)
    assert own.status_code == 200 and "alice-job" in own.text


def _unknown_404(client: TestClient, method: str, url: str, headers: dict[str, str]) -> str:
    """What the same request answers for an id nobody has (with the id replaced)."""
    unknown = "0" * 32
    match = re.search(r"[0-9a-f]{32}", url)
    assert match is not None
    other = url.replace(match.group(0), unknown)
    if method == "POST":
        r = client.post(other, headers=headers, content="csrf=pair", follow_redirects=False)
    else:
        r = client.request(method, other, headers=headers, follow_redirects=False)
    assert r.status_code == 404
    return r.text.replace(unknown, "ID")


def test_missing_or_wrong_tokens_get_401_on_every_private_route(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    for method, path in _routes(world["app"]):
        if path in PUBLIC:
            continue
        url = _fill(path, world["bob_task"])
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = client.request(
                method, url, headers={**headers, "Accept": "application/json"}
            )
            assert response.status_code == 401, (method, url, headers, response.text[:200])
            assert world["bob_task"] not in response.text
    # a browser without a session is sent to the log-in form instead
    page = client.get("/tasks", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_revoked_and_expired_tokens_stop_working_at_once(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    accounts: Accounts = world["accounts"]
    token_id, token = accounts.create_token("alice", label="laptop")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/tasks", headers=headers).status_code == 200
    accounts.revoke(token_id)
    assert client.get("/v1/tasks", headers=headers).status_code == 401
    _, stale = accounts.create_token("alice", expires_in=timedelta(seconds=-1))
    assert client.get("/v1/tasks", headers={"Authorization": f"Bearer {stale}"}).status_code == 401


def test_login_sets_a_session_and_forms_need_the_csrf_field(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    wrong = client.post(
        "/login", content=f"csrf={csrf.group(1)}&token=nope&next=/", follow_redirects=False
    )
    assert wrong.status_code == 401
    no_csrf = client.post(
        "/login", content=f"token={world['tokens']['alice']}&next=/", follow_redirects=False
    )
    assert no_csrf.status_code == 400 and no_csrf.json()["field"] == "csrf"
    ok = client.post(
        "/login",
        content=f"csrf={csrf.group(1)}&token={world['tokens']['alice']}&next=//evil.example/",
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    page = client.get(f"/tasks/{world['alice_task']}")
    assert page.status_code == 200 and "alice-job" in page.text
    # cancelling through the page needs the form's CSRF field
    refused = client.post(f"/tasks/{world['alice_task']}/cancel", content="")
    assert refused.status_code == 400
    assert world["store"].get(world["alice_task"]).state.value == "QUEUED"
    done = client.post(
        f"/tasks/{world['alice_task']}/cancel",
        content=f"csrf={client.cookies.get('bridge_csrf')}",
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert world["store"].get(world["alice_task"]).state.value == "CANCELED"


def test_metrics_parse_with_the_prometheus_parser(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    root = {"Authorization": f"Bearer {world['tokens']['root']}"}
    created = client.post(
        "/v1/tasks", headers=root, json={"executors": [{"image": "a", "command": ["true"]}]}
    )
    assert created.status_code == 200
    response = client.get("/metrics", headers=root)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    tasks = {
        (s.labels["state"], s.labels["target"]): s.value for s in families["bridge_tasks"].samples
    }
    assert tasks[("QUEUED", "")] == 3
    submissions = [
        s for s in families["bridge_task_submissions"].samples if s.name.endswith("_total")
    ]
    assert submissions and submissions[0].value >= 1
    for name in (
        "bridge_task_finishes",
        "bridge_queue_wait_seconds",
        "bridge_placement_decisions",
        "bridge_backend_errors",
        "bridge_probe_seconds",
        "bridge_fusion_bytes",
        "bridge_fusion_cache_lookups",
    ):
        assert name in families, name


def test_admin_pages_render_and_users_get_403(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    root = {"Authorization": f"Bearer {world['tokens']['root']}", "Accept": "text/html"}
    alice = {"Authorization": f"Bearer {world['tokens']['alice']}", "Accept": "text/html"}
    for path in (
        "/",
        "/tasks",
        "/workflows",
        "/workflows/workflow/wf-bob",
        "/cost",
        "/builds",
        "/storage",
    ):
        assert client.get(path, headers=root).status_code == 200, path
    assert "No build recorded" in client.get("/builds", headers=root).text
    for path in ("/builds", "/storage", "/storage/preview?path=/etc/passwd"):
        assert client.get(path, headers=alice).status_code == 403, path
    outside = client.get("/storage/preview?path=/etc/passwd", headers=root)
    assert outside.status_code == 400 and outside.json()["field"] == "path"
    bad = client.get("/tasks?state=NOPE", headers=root)
    assert bad.status_code == 400 and bad.json()["field"] == "state"


def test_builds_page_shows_an_environment_builds_table_when_there_is_one(
    world: dict[str, Any],
) -> None:
    from sqlalchemy import text

    client: TestClient = world["client"]
    root = {"Authorization": f"Bearer {world['tokens']['root']}", "Accept": "text/html"}
    with world["store"].engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO env_builds (key, target, format, status, request, description,"
                " artifact, log, builder, created_time, updated_time) VALUES ('k1', 'zen2',"
                " 'spack', 'ready', '{}', 'samtools@1.19', '{}', '', 'b', CURRENT_TIMESTAMP,"
                " CURRENT_TIMESTAMP)"
            )
        )
    page = client.get("/builds", headers=root)
    assert page.status_code == 200
    assert "samtools@1.19" in page.text and "no environment builds table" not in page.text
