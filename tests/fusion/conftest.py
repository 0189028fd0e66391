"""Fixtures for Fusion's tests: real S3-compatible servers on 127.0.0.1 and real mounts.

* ``moto_endpoint`` - moto's ``ThreadedMotoServer`` in this process: full S3 semantics,
  slow for large objects. Used by the store conformance tests.
* ``s3rver_endpoint`` - the npm ``s3rver`` process started by
  ``scripts/services/s3rver.sh`` (started here too if it is not running): fast, used by
  every test that mounts.
* ``FaultProxy`` (``fault_proxy``) - a fault injector, not a server: an HTTP proxy in
  front of s3rver that forwards every request unchanged except those matching a rule,
  which it answers with a real S3 ``500 InternalError``. It also records every request,
  so tests can count what the mount sends.
* ``mounted`` - a Fusion mount (a separate process, real FUSE) over a fresh s3rver
  bucket; skips with the precise reason when FUSE cannot be used here.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fusion.mount import MountHandle, MountOptions, fuse_available, mount
from fusion.objects import StoreConfig
from fusion.s3_store import S3ObjectStore

REPO = Path(__file__).resolve().parents[2]
S3RVER_PORT = int(os.environ.get("S3RVER_PORT", "4568"))
S3RVER_KEY = "S3RVER"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3rver_endpoint() -> str:
    if not _answers(S3RVER_PORT):
        script = REPO / "scripts" / "services" / "s3rver.sh"
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not _answers(S3RVER_PORT):
            pytest.skip(f"s3rver could not be started on 127.0.0.1:{S3RVER_PORT}: {proc.stderr}")
    return f"http://127.0.0.1:{S3RVER_PORT}"


def store_config(endpoint: str, max_attempts: int = 3) -> StoreConfig:
    return StoreConfig(
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id=S3RVER_KEY,
        secret_access_key=S3RVER_KEY,
        max_attempts=max_attempts,
    )


@pytest.fixture(scope="session")
def s3rver_store(s3rver_endpoint: str) -> S3ObjectStore:
    return S3ObjectStore(store_config(s3rver_endpoint))


@pytest.fixture
def bucket(s3rver_store: S3ObjectStore) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3rver_store.ensure_bucket(name)
    return name


def fuse_reason() -> str:
    ok, reason = fuse_available()
    return "" if ok else reason


@pytest.fixture(scope="session")
def require_fuse() -> None:
    reason = fuse_reason()
    if reason:
        pytest.skip(f"FUSE unusable here: {reason}")


@dataclass
class Mount:
    handle: MountHandle
    root: Path
    cache_dir: Path

    def path(self, bucket: str, key: str = "") -> Path:
        base = self.root / "s3" / bucket
        return base / key if key else base


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount_factory(
    tmp_path: Path, s3rver_endpoint: str, require_fuse: None
) -> Iterator[MountFactory]:
    handles: list[MountHandle] = []

    def make(
        name: str = "mnt",
        endpoint: str | None = None,
        read_only: bool = False,
        cache_bytes: int = 256 * 1024 * 1024,
        max_attempts: int = 3,
        options: MountOptions | None = None,
    ) -> Mount:
        root = tmp_path / name
        cache = tmp_path / f"{name}-cache"
        handle = mount(
            root,
            store_config(endpoint or s3rver_endpoint, max_attempts=max_attempts),
            cache,
            cache_bytes,
            read_only=read_only,
            options=options,
        )
        handles.append(handle)
        return Mount(handle, root, cache)

    yield make
    for handle in handles:
        handle.unmount()


@pytest.fixture
def mounted(mount_factory: MountFactory) -> Mount:
    return mount_factory()


class FaultProxy:
    """HTTP proxy to an S3 server that fails the requests a rule selects with a 500.

    A fault injector, not an S3 implementation: every other request is forwarded byte
    for byte (the Host header too, so signatures stay valid).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.rule: Callable[[str, str], bool] = lambda method, path: False
        #: For a request it selects, how many body bytes to send before the connection
        #: is cut (the headers announce the whole body): a transfer broken mid-way.
        self.cut: Callable[[str, str], int | None] = lambda method, path: None
        self.failed: list[str] = []
        #: Every request seen, as (method, path with query), in arrival order.
        self.requests: list[tuple[str, str]] = []
        #: Body bytes answered per forwarded request, as (method, path, bytes).
        self.answered: list[tuple[str, str, int]] = []
        self._seen_lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._seen_lock:
                    proxy.requests.append((self.command, self.path))
                if proxy.rule(self.command, self.path):
                    proxy.failed.append(f"{self.command} {self.path}")
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError'
                        b"</Code><Message>injected failure</Message></Error>"
                    )
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # A HEAD answer has no body but the object's length.
                length_out = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length_out or str(len(data)))
                self.end_headers()
                cut_at = proxy.cut(self.command, self.path)
                # recorded before the body goes out: the client may act on the answer
                # (and the test look at this record) as soon as the body arrives
                if cut_at is not None and self.command != "HEAD":
                    with proxy._seen_lock:
                        proxy.answered.append((self.command, self.path, min(cut_at, len(data))))
                    self.wfile.write(data[:cut_at])
                    self.wfile.flush()
                    self.close_connection = True
                    conn.close()
                    return
                with proxy._seen_lock:
                    proxy.answered.append((self.command, self.path, len(data)))
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault_proxy(s3rver_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3rver_endpoint)
    yield proxy
    proxy.close()
