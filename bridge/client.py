"""A Python client for the broker's TES API, futures-style.

::

    from bridge.client import BridgeClient

    with BridgeClient("http://127.0.0.1:8765") as bridge:
        future = bridge.run(["sh", "-c", "echo hi"], name="hello")
        task = future.result(timeout=60)      # raises TaskFailed unless COMPLETE
        print(task["logs"][-1]["logs"][0]["stdout"])
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
TES_PREFIX = "/ga4gh/tes/v1"


class BridgeError(RuntimeError):
    """The server refused a request; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status}: {message}")


class TaskFailed(RuntimeError):
    def __init__(self, task: Mapping[str, Any]) -> None:
        self.task = dict(task)
        super().__init__(f"task {task.get('id')} ended {task.get('state')}")


class TaskFuture:
    def __init__(self, client: BridgeClient, task_id: str) -> None:
        self.client = client
        self.id = task_id

    @property
    def state(self) -> str:
        return str(self.client.get(self.id)["state"])

    def done(self) -> bool:
        return self.state in TERMINAL

    def cancel(self) -> None:
        self.client.cancel(self.id)

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """The FULL task once it has finished, whatever the outcome."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.state in TERMINAL:
                return self.client.get(self.id, view="FULL")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {self.id} did not finish within {timeout} s")
            time.sleep(poll)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        task = self.wait(timeout)
        if task["state"] != "COMPLETE":
            raise TaskFailed(task)
        return task


class BridgeClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise BridgeError(response.status_code, body)
        return body

    # TES
    def service_info(self) -> dict[str, Any]:
        return dict(self._call("GET", f"{TES_PREFIX}/service-info"))

    def submit(self, task: Mapping[str, Any]) -> TaskFuture:
        return TaskFuture(self, self._call("POST", f"{TES_PREFIX}/tasks", json=dict(task))["id"])

    def run(
        self,
        command: Sequence[str],
        *,
        image: str = "debian:bookworm-slim",
        name: str | None = None,
        cpus: int | None = None,
        ram_gb: float | None = None,
        tags: Mapping[str, str] | None = None,
        **task_fields: Any,
    ) -> TaskFuture:
        task: dict[str, Any] = {"executors": [{"image": image, "command": list(command)}]}
        if name:
            task["name"] = name
        resources = {k: v for k, v in (("cpu_cores", cpus), ("ram_gb", ram_gb)) if v is not None}
        if resources:
            task["resources"] = resources
        if tags:
            task["tags"] = dict(tags)
        task.update(task_fields)
        return self.submit(task)

    def get(self, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        return dict(self._call("GET", f"{TES_PREFIX}/tasks/{task_id}", params={"view": view}))

    def list_tasks(
        self,
        *,
        view: str = "MINIMAL",
        state: str | None = None,
        name_prefix: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        params: list[tuple[str, str]] = [("view", view)]
        if state:
            params.append(("state", state))
        if name_prefix:
            params.append(("name_prefix", name_prefix))
        for key, value in (tags or {}).items():
            params += [("tag_key", key), ("tag_value", value)]
        if page_size:
            params.append(("page_size", str(page_size)))
        if page_token:
            params.append(("page_token", page_token))
        return dict(self._call("GET", f"{TES_PREFIX}/tasks", params=params))

    def cancel(self, task_id: str) -> None:
        self._call("POST", f"{TES_PREFIX}/tasks/{task_id}:cancel")

    # broker extras
    def events(self, task_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/api/tasks/{task_id}/events"))

    def targets(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/targets"))
