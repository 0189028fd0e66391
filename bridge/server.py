"""Assemble a running broker from settings: database, backends, broker, API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from bridge import workspace
from bridge.accounts import Accounts
from bridge.api.app import create_app
from bridge.broker import Broker
from bridge.config import Settings
from bridge.db import make_engine, upgrade
from bridge.store import TaskStore
from bridge.targets import check_work_urls, make_backends

log = logging.getLogger(__name__)


def build(settings: Settings, with_broker: bool = True) -> tuple[FastAPI, TaskStore, Broker | None]:
    check_work_urls(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workspace.prepare_base(settings.effective_work_url)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    store = TaskStore(engine)
    broker = Broker(settings, store, make_backends(settings.targets)) if with_broker else None
    return create_app(settings, store, broker), store, broker


def uvicorn_config(app: FastAPI, settings: Settings, log_level: str = "warning") -> uvicorn.Config:
    """How the API is served.  The keep-alive outlives every client's (httpx and
    requests keep idle connections 5 s): the client always closes an idle connection
    first, so it never sends a request on a connection the server is closing -- the
    race that dropped POSTs with ``ReadError`` under a 5 s server keep-alive.  On
    SIGTERM, requests in flight get :data:`SHUTDOWN_GRACE_S` seconds to finish."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        backlog=4096,
    )


# How long SIGTERM waits for requests in flight before closing their connections.
SHUTDOWN_GRACE_S = 30


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT.

    On the signal the server stops accepting connections, lets requests in flight
    finish (up to :data:`SHUTDOWN_GRACE_S` seconds; a task is acknowledged only once it is
    committed), then stops the broker's loops.  Jobs are never cancelled on shutdown:
    they keep running in their batch system (local jobs are sessions of their own) and
    the next start re-attaches to them through the database.
    """
    app, store, _ = build(settings)
    _announce_access(settings, store)
    log.info("serving TES at http://%s:%d/ga4gh/tes/v1", settings.host, settings.port)
    _Server(uvicorn_config(app, settings)).run()
    log.info("stopped; running jobs were left running")


def _announce_access(settings: Settings, store: TaskStore) -> None:
    """With no user anywhere, a loopback server stays open (the embedded default); one
    reachable from other machines gets a local admin whose token is printed once."""
    if settings.users:
        return
    accounts = Accounts(store.engine)
    if accounts.any_user():
        return
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        log.info("no users: open to local callers; `bridge token` makes a local admin token")
        return
    token = accounts.ensure_local_admin()
    if token:
        print(f"local admin token (shown once): {token}", flush=True)


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop by SIGTERM/SIGINT ends with exit status 0.

    uvicorn re-raises the signal after a graceful shutdown, so the process would die
    by it; for ``bridge serve`` that signal is the normal way to stop, and a service
    manager or container engine should see a clean exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(settings: Settings, with_broker: bool = True) -> Iterator[str]:
    """Run the whole server in a background thread; yield its base URL."""
    app, _, _ = build(settings, with_broker)
    server = uvicorn.Server(uvicorn_config(app, settings))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start; see the log above")
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
