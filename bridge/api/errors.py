"""Domain errors -> HTTP answers, in one place.

Bad input is always a 4xx naming the field; nothing a client sends produces a 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.states import InvalidTransition
from bridge.store import BadPageToken, TaskNotFound
from bridge.tes import InvalidTask

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")
        self.detail = message


class Unauthorized(PermissionError):
    pass


class BodyTooLarge(ValueError):
    pass


def _error(status: int, message: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, object] = {"message": message}
    if errors:
        body["errors"] = errors
        body["field"] = errors[0]["field"]
    return JSONResponse(status_code=status, content=body)


def install(app: FastAPI) -> None:
    @app.exception_handler(InvalidTask)
    async def _invalid_task(_: Request, err: InvalidTask) -> JSONResponse:
        return _error(400, str(err), err.errors)

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, err: BadRequest) -> JSONResponse:
        return _error(400, str(err), [{"field": err.field, "message": err.detail}])

    @app.exception_handler(BadPageToken)
    async def _bad_token(_: Request, err: BadPageToken) -> JSONResponse:
        return _error(400, str(err), [{"field": "page_token", "message": str(err)}])

    @app.exception_handler(TaskNotFound)
    async def _not_found(_: Request, err: TaskNotFound) -> JSONResponse:
        return _error(404, str(err))

    @app.exception_handler(InvalidTransition)
    async def _conflict(_: Request, err: InvalidTransition) -> JSONResponse:
        return _error(409, str(err))

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, err: Unauthorized) -> JSONResponse:
        response = _error(401, str(err) or "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, err: BodyTooLarge) -> JSONResponse:
        return _error(413, str(err), [{"field": "body", "message": str(err)}])

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                "message": str(e.get("msg", "invalid")),
            }
            for e in err.errors()
        ]
        return _error(400, f"{errors[0]['field']}: {errors[0]['message']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")
