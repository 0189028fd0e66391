"""The FastAPI application factory.

The TES routes are mounted twice, under ``/ga4gh/tes/v1`` (the spec's base path)
and ``/v1`` (what several clients use).  When a broker is given, it runs in the
same process and event loop, started and stopped with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bridge import __version__, metrics
from bridge.accounts import Accounts
from bridge.api import admin, errors, tes
from bridge.api.auth import caller_for
from bridge.api.writer import TaskWriter
from bridge.config import Settings
from bridge.store import TaskStore

TES_PREFIXES = ("/ga4gh/tes/v1", "/v1")


class BrokerHandle(Protocol):
    """What the app needs from a broker: start, stop, and a nudge."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def wake(self) -> None: ...


def create_app(settings: Settings, store: TaskStore, broker: BrokerHandle | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if broker is not None:
            await broker.start()
        try:
            yield
        finally:
            await app.state.writer.close()
            if broker is not None:
                await broker.stop()

    app = FastAPI(
        title="converged-bridge",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.writer = TaskWriter(store)
    app.state.accounts = Accounts(store.engine)
    wake: Callable[[], None] = broker.wake if broker is not None else (lambda: None)
    app.state.wake_broker = wake
    errors.install(app)
    for prefix in TES_PREFIXES:
        app.include_router(tes.router, prefix=prefix)
    app.include_router(admin.router)
    from bridge.dashboard import routes as dashboard

    dashboard.install(app)
    app.include_router(dashboard.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        await asyncio.to_thread(caller_for, request, settings)
        body = await asyncio.to_thread(metrics.exposition, store.engine)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app
