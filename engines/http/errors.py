"""One table from our errors to HTTP statuses, and the handlers that answer with it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from engines.http.responses import OrjsonResponse
from spine.errors import (
    AlreadyExists,
    BackendUnavailable,
    ConcurrencyError,
    EnginesError,
    IdentityError,
    InvalidInput,
    NotFound,
    RoutingError,
    ScopeMismatch,
    Unauthenticated,
)

log = logging.getLogger(__name__)

#: One table from our errors to HTTP statuses; the first matching class wins.
STATUS_BY_ERROR: tuple[tuple[type[EnginesError], int], ...] = (
    (Unauthenticated, 401),
    (ScopeMismatch, 403),
    (IdentityError, 403),
    (InvalidInput, 422),
    (NotFound, 404),
    (AlreadyExists, 409),
    (ConcurrencyError, 409),
    (BackendUnavailable, 503),
    (RoutingError, 500),
)


def status_for(exc: EnginesError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def install(app: FastAPI) -> None:
    """Answer every error raised by a route through the table above."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the rejected input, which may not even encode
        # (a lone surrogate gave a 500): name the field and the reason, nothing more.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return OrjsonResponse({"detail": detail}, status_code=422)

    @app.exception_handler(EnginesError)
    async def engines_error(request: Request, exc: EnginesError) -> Response:
        status = status_for(exc)
        if isinstance(exc, ConcurrencyError) and request.headers.get("if-match"):
            status = 412
        if status >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return OrjsonResponse(
            {"error": type(exc).__name__, "detail": str(exc)}, status_code=status, headers=headers
        )
