"""The TES v1.1 endpoints, on SQLite and PostgreSQL, checked against the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bridge.api.app import create_app
from bridge.api.auth import token_digest
from bridge.config import Settings, UserConfig
from bridge.states import State
from bridge.store import TaskStore
from tests.tes_schema import operation_schema, validate

PREFIXES = ["/ga4gh/tes/v1", "/v1"]
TASK = {
    "name": "align-sample-1",
    "description": "an example",
    "inputs": [
        {"url": "s3://bucket/ref.fa", "path": "/data/ref.fa"},
        {"content": "hello", "path": "/data/hello.txt"},
    ],
    "outputs": [{"url": "s3://bucket/out/", "path": "/data/out/*.bam", "path_prefix": "/data/out"}],
    "resources": {"cpu_cores": 2, "ram_gb": 1.5, "preemptible": False},
    "executors": [
        {
            "image": "alpine",
            "command": ["sh", "-c", "echo hi"],
            "workdir": "/data",
            "stdout": "/data/stdout.txt",
            "env": {"A": "1"},
        }
    ],
    "volumes": ["/vol/A"],
    "tags": {"workflow": "w1"},
}


@pytest.fixture
def client(settings: Settings, store: TaskStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as c:
        yield c


def check(response, path: str, method: str, minimal: bool = False) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    body = response.json()
    validate(body, operation_schema(path, method), minimal=minimal)
    return body


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_get_list_cancel_round_trip(client: TestClient, prefix: str) -> None:
    created = check(client.post(f"{prefix}/tasks", json=TASK), "/tasks", "post")
    task_id = created["id"]

    minimal = check(client.get(f"{prefix}/tasks/{task_id}"), "/tasks/{id}", "get", minimal=True)
    assert minimal == {"id": task_id, "state": "QUEUED"}

    basic = check(client.get(f"{prefix}/tasks/{task_id}?view=BASIC"), "/tasks/{id}", "get")
    assert basic["name"] == TASK["name"] and basic["tags"] == {"workflow": "w1"}
    assert "content" not in basic["inputs"][1]
    assert basic["executors"] == TASK["executors"]

    full = check(client.get(f"{prefix}/tasks/{task_id}?view=FULL"), "/tasks/{id}", "get")
    assert full["inputs"][1]["content"] == "hello"
    assert full["creation_time"].endswith("Z")

    listing = check(client.get(f"{prefix}/tasks?view=FULL"), "/tasks", "get")
    assert [t["id"] for t in listing["tasks"]] == [task_id]

    assert (
        check(client.post(f"{prefix}/tasks/{task_id}:cancel"), "/tasks/{id}:cancel", "post") == {}
    )
    assert client.get(f"{prefix}/tasks/{task_id}").json()["state"] == "CANCELED"
    # cancelling a finished task is a no-op 200
    assert client.post(f"{prefix}/tasks/{task_id}:cancel").status_code == 200


def test_service_info_matches_the_spec(client: TestClient) -> None:
    body = check(client.get("/ga4gh/tes/v1/service-info"), "/service-info", "get")
    assert body["type"]["artifact"] == "tes"
    assert "partition" in body["tesResources_backend_parameters"]


def test_list_paging_and_filters(client: TestClient) -> None:
    ids = []
    for i in range(5):
        doc = {**TASK, "name": f"job-{i}", "tags": {"workflow": "w2" if i % 2 else "w1"}}
        ids.append(client.post("/v1/tasks", json=doc).json()["id"])
    page = check(client.get("/v1/tasks?page_size=2"), "/tasks", "get", minimal=True)
    assert len(page["tasks"]) == 2 and page["next_page_token"]
    seen = [t["id"] for t in page["tasks"]]
    while "next_page_token" in page:
        page = check(
            client.get(f"/v1/tasks?page_size=2&page_token={page['next_page_token']}"),
            "/tasks",
            "get",
            minimal=True,
        )
        seen += [t["id"] for t in page["tasks"]]
    assert seen == ids[::-1]
    w2 = client.get("/v1/tasks?tag_key=workflow&tag_value=w2").json()["tasks"]
    assert {t["id"] for t in w2} == {ids[1], ids[3]}
    assert [t["id"] for t in client.get("/v1/tasks?name_prefix=job-3").json()["tasks"]] == [ids[3]]
    assert client.get("/v1/tasks?state=QUEUED").json()["tasks"][0]["state"] == "QUEUED"
    assert client.get("/v1/tasks?state=COMPLETE").json()["tasks"] == []


def test_unknown_id_is_404(client: TestClient) -> None:
    assert client.get("/v1/tasks/does-not-exist").status_code == 404
    assert client.post("/v1/tasks/does-not-exist:cancel").status_code == 404


BAD_BODIES = [
    (b"{not json", "body"),
    (b"[]", "body"),
    (json.dumps({"executors": []}).encode(), "executors"),
    (json.dumps({"name": "x"}).encode(), "executors"),
    (
        json.dumps({"executors": [{"image": "a", "command": "echo hi"}]}).encode(),
        "executors[0].command",
    ),
    (json.dumps({"executors": [{"image": "a", "command": []}]}).encode(), "executors[0].command"),
    (json.dumps({"executors": [{"command": ["x"]}]}).encode(), "executors[0].image"),
    (
        json.dumps({"executors": [{"image": "a", "command": ["x"], "workdir": "rel"}]}).encode(),
        "executors[0].workdir",
    ),
    (
        json.dumps({"executors": [{"image": "a", "command": ["x"], "stdin": "in.txt"}]}).encode(),
        "executors[0].stdin",
    ),
    (json.dumps({**TASK, "resources": {"cpu_cores": "4"}}).encode(), "resources.cpu_cores"),
    (json.dumps({**TASK, "resources": {"cpu_cores": 0}}).encode(), "resources.cpu_cores"),
    (json.dumps({**TASK, "inputs": [{"path": "/a"}]}).encode(), "inputs[0]"),
    (
        json.dumps(
            {**TASK, "inputs": [{"path": "/a", "url": "s3://b/k", "content": "x"}]}
        ).encode(),
        "inputs[0]",
    ),
    (json.dumps({**TASK, "inputs": [{"path": "a", "url": "s3://b/k"}]}).encode(), "inputs[0].path"),
    (
        json.dumps({**TASK, "outputs": [{"path": "/o/*.txt", "url": "s3://b/"}]}).encode(),
        "outputs[0]",
    ),
    (json.dumps({**TASK, "outputs": [{"path": "/o"}]}).encode(), "outputs[0].url"),
    (json.dumps({**TASK, "volumes": ["rel"]}).encode(), "volumes"),
    (json.dumps({**TASK, "tags": {"a": 1}}).encode(), "tags.a"),
    (
        json.dumps(
            {
                **TASK,
                "resources": {
                    "backend_parameters": {"VmSize": "x"},
                    "backend_parameters_strict": True,
                },
            }
        ).encode(),
        "resources.backend_parameters.VmSize",
    ),
    (
        json.dumps({**TASK, "resources": {"backend_parameters": {"gpus": "many"}}}).encode(),
        "resources.backend_parameters.gpus",
    ),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_task_is_a_400_naming_the_field(client: TestClient, body: bytes, field: str) -> None:
    response = client.post(
        "/ga4gh/tes/v1/tasks", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == field, answer
    assert field in answer["message"] or answer["field"] == "body"
    # and the server still serves
    assert client.get("/ga4gh/tes/v1/service-info").status_code == 200


def test_unsupported_backend_parameters_are_dropped_with_a_warning(client: TestClient) -> None:
    doc = {**TASK, "resources": {"backend_parameters": {"VmSize": "big", "Partition": "debug"}}}
    task_id = client.post("/v1/tasks", json=doc).json()["id"]
    full = check(client.get(f"/v1/tasks/{task_id}?view=FULL"), "/tasks/{id}", "get")
    assert full["resources"]["backend_parameters"] == {"partition": "debug"}
    assert any("VmSize" in line for line in full["logs"][0]["system_logs"])
    basic = client.get(f"/v1/tasks/{task_id}?view=BASIC").json()
    assert "system_logs" not in json.dumps(basic)


def test_ten_megabyte_body_is_refused(client: TestClient) -> None:
    big = json.dumps({**TASK, "description": "x" * (10 * 1024 * 1024)}).encode()
    response = client.post("/v1/tasks", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert client.get("/v1/tasks").status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("view=EVERYTHING", "view"),
        ("state=DONE", "state"),
        ("page_size=0", "page_size"),
        ("page_size=abc", "page_size"),
        ("page_size=5000", "page_size"),
        ("page_token=bm9wZQ", "page_token"),
        ("page_token=%%%", "page_token"),
    ],
)
def test_bad_list_parameters_are_400(client: TestClient, query: str, field: str) -> None:
    response = client.get(f"/v1/tasks?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_bad_view_on_get_is_400(client: TestClient) -> None:
    task_id = client.post("/v1/tasks", json=TASK).json()["id"]
    response = client.get(f"/v1/tasks/{task_id}?view=minimal")
    assert response.status_code == 400 and response.json()["field"] == "view"


def test_executor_logs_appear_as_soon_as_they_exist(client: TestClient, store: TaskStore) -> None:
    task_id = client.post("/v1/tasks", json=TASK).json()["id"]
    attempt = store.start_attempt(store.get(task_id), "local")
    store.transition(task_id, State.INITIALIZING, "placed on local")
    store.update_attempt(
        attempt.id,
        {
            "state": "RUNNING",
            "executors": [
                {
                    "exit_code": -1,
                    "start_time": "2026-01-01T00:00:00Z",
                    "stdout": "partial",
                    "stderr": "",
                }
            ],
        },
    )
    full = check(client.get(f"/v1/tasks/{task_id}?view=FULL"), "/tasks/{id}", "get")
    assert full["logs"][0]["logs"][0]["stdout"] == "partial"
    assert full["logs"][0]["metadata"]["target"] == "local"


class TestAuthentication:
    @pytest.fixture
    def client(self, settings: Settings, store: TaskStore) -> Iterator[TestClient]:
        settings = settings.model_copy(
            update={
                "users": [
                    UserConfig(name="alice", token_sha256=token_digest("alice-token")),
                    UserConfig(name="bob", token_sha256=token_digest("bob-token")),
                    UserConfig(name="root", token_sha256=token_digest("root-token"), admin=True),
                ]
            }
        )
        with TestClient(create_app(settings, store)) as c:
            yield c

    def test_users_see_only_their_own_tasks(self, client: TestClient) -> None:
        def as_(user: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {user}-token"}

        mine = client.post("/v1/tasks", json=TASK, headers=as_("alice")).json()["id"]
        assert client.get(f"/v1/tasks/{mine}", headers=as_("alice")).status_code == 200
        assert client.get(f"/v1/tasks/{mine}", headers=as_("bob")).status_code == 404
        assert client.post(f"/v1/tasks/{mine}:cancel", headers=as_("bob")).status_code == 404
        assert client.get("/v1/tasks", headers=as_("bob")).json()["tasks"] == []
        assert [t["id"] for t in client.get("/v1/tasks", headers=as_("root")).json()["tasks"]] == [
            mine
        ]

    def test_missing_or_wrong_token_is_401(self, client: TestClient) -> None:
        assert client.get("/v1/tasks").status_code == 401
        assert client.get("/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/v1/tasks", json=TASK).status_code == 401


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"bridge.arch": "pentium9000"}, "bridge.arch", "unknown CPU microarchitecture"),
        ({"microarchitecture": "zen99"}, "microarchitecture", "unknown CPU microarchitecture"),
        ({"bridge.gpus": "-1"}, "bridge.gpus", "non-negative integer"),
        ({"bridge.wall_time": "soon"}, "bridge.wall_time", "HH:MM:SS"),
        ({"bridge.colour": "blue"}, "bridge.colour", "unknown bridge.* parameter"),
        ({"bridge.container_runtime": "vm"}, "bridge.container_runtime", "one of"),
    ],
)
def test_a_bad_broker_parameter_is_a_400_naming_it(
    client: TestClient, params: dict[str, str], field: str, words: str
) -> None:
    doc = {**TASK, "resources": {"backend_parameters": params}}
    response = client.post("/ga4gh/tes/v1/tasks", json=doc)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == f"resources.backend_parameters.{field}"
    assert words in answer["message"]


def test_strict_parameters_refuse_what_is_outside_the_namespace(client: TestClient) -> None:
    resources = {"backend_parameters": {"VmSize": "big"}, "backend_parameters_strict": True}
    response = client.post("/v1/tasks", json={**TASK, "resources": resources})
    assert response.status_code == 400
    assert response.json()["field"] == "resources.backend_parameters.VmSize"


def test_service_info_publishes_the_accepted_parameters(client: TestClient) -> None:
    info = client.get("/ga4gh/tes/v1/service-info").json()
    accepted = info["tesResources_backend_parameters"]
    for key in ("bridge.target", "bridge.arch", "bridge.gpus", "bridge.retries", "bridge.spack"):
        assert key in accepted
    assert "target" in accepted  # the plain names stay as aliases


def test_requirements_are_read_once_and_never_shown(client: TestClient) -> None:
    params = {"bridge.arch": "x86_64_v2", "Wall_Time": "1:00:00", "bridge.pip": "numpy, scipy"}
    doc = {**TASK, "resources": {"cpu_cores": 2, "backend_parameters": params}}
    task_id = client.post("/v1/tasks", json=doc).json()["id"]
    full = client.get(f"/v1/tasks/{task_id}?view=FULL").json()
    assert "_requirements" not in json.dumps(full)
    stored = client.app.state.store.get(task_id)  # type: ignore[attr-defined]
    req = stored.requirements
    assert (req.cpus, req.arch, req.wall_time_s) == (2, "x86_64_v2", 3600)
    assert req.env.pip == ("numpy", "scipy")
