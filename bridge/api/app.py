"""The FastAPI application factory.

The TES routes are mounted twice, under ``/ga4gh/tes/v1`` (the spec's base path)
and ``/v1`` (what several clients use).  When a broker is given, it runs in the
same process and event loop, started and stopped with the app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from bridge import __version__
from bridge.api import admin, errors, tes
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
    wake: Callable[[], None] = broker.wake if broker is not None else (lambda: None)
    app.state.wake_broker = wake
    errors.install(app)
    for prefix in TES_PREFIXES:
        app.include_router(tes.router, prefix=prefix)
    app.include_router(admin.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app
