"""Real services and helpers for the node-agent tests.

* :func:`http_server`: a ``ThreadingHTTPServer`` on 127.0.0.1 serving files from a
  folder and recording every POST (the broker's status endpoint as the agent sees it).
* :func:`moto_s3`: moto's ``ThreadedMotoServer`` on 127.0.0.1 and the environment an
  agent subprocess needs to reach it.
* :func:`run_agent`: the real ``bridge-agent`` console script as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.agent.workdir import open_workdir, read_status, write_task

AGENT = str(Path(sys.executable).with_name("bridge-agent"))
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-value-42",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class HttpServer:
    url: str
    root: Path
    posts: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)


class _Handler(SimpleHTTPRequestHandler):
    posts: list[tuple[str, dict[str, str], Any]]

    def do_GET(self) -> None:
        if not self.path.startswith("/slow"):
            super().do_GET()
            return
        # a download that never finishes: 1 KiB every 0.1 s of a 1 GiB body
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        for _ in range(300):
            try:
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.posts.append((self.path, dict(self.headers), json.loads(body or b"null")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root = tmp_path / "web"
    root.mkdir()
    posts: list[tuple[str, dict[str, str], Any]] = []
    handler = type("Handler", (_Handler,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield HttpServer(url=f"http://{host!s}:{port}", root=root, posts=posts)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class S3Service:
    endpoint: str
    env: dict[str, str]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        )


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[S3Service]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield S3Service(endpoint=endpoint, env={**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint})
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_s3: S3Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Service]:
    """The moto server, with this process's environment pointing boto3 at it."""
    from bridge.agent.s3 import object_store

    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    object_store.cache_clear()
    yield moto_s3
    object_store.cache_clear()  # no client bound to this server outlives the test


def agent_env(tmp_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the agent: no AWS settings unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BRIDGE_"))}
    env["BRIDGE_SCRATCH_DIR"] = str(tmp_path / "scratch")
    env.update(extra or {})
    return env


def make_workdir(
    path: Path, task: Mapping[str, Any], runtime: Mapping[str, Any] | None = None
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_task(open_workdir(str(path)), task, {"container_runtime": "none", **(runtime or {})})
    return path


def run_agent(
    work_url: str,
    *args: str,
    env: Mapping[str, str],
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, "run", work_url, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_of(work_url: str, attempt: int = 1) -> dict[str, Any]:
    doc = read_status(open_workdir(work_url), attempt)
    assert doc is not None, f"no status.json for attempt {attempt} in {work_url}"
    return doc


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def build_busybox_rootfs(dest: Path) -> Path | None:
    """A tiny root file system holding a static busybox, or ``None`` without one."""
    busybox = shutil.which("busybox")
    if busybox is None or b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        return None  # missing, or dynamically linked (it would not run in the rootfs)
    for sub in ("bin", "dev", "proc", "sys", "tmp", "etc", "home"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    for applet in ("sh", "cat", "echo", "ls", "wc", "pwd", "mkdir", "sort"):
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    return dest
