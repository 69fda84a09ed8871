"""Errors over HTTP: one table from our errors to statuses, and every error answered as
RFC 9457 problem details (``application/problem+json``: ``type``, ``title``,
``status``, ``detail``; ``errors`` naming the fields of a 422, never echoing input) —
our own, FastAPI's (400, 404, 405, 422) and the unexpected (500) alike.

The errors only the HTTP edge raises extend the tree of :mod:`spine.errors`::

    InvalidInput
    ├── MalformedRequest      a header given twice, a bad Content-Length (400)
    ├── BodyTooLarge          over ``http.max_body_bytes`` (413)
    └── UnsupportedMediaType  a body that is not JSON (415)
    NotFound
    └── Gone                  a create replayed after its record was deleted (410)
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.audit import capped
from engines.http.responses import NEVER_MATCHES, OrjsonResponse
from spine.errors import (
    AlreadyExists,
    BackendUnavailable,
    ConcurrencyError,
    EnginesError,
    IdentityError,
    InvalidField,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PreconditionRequired,
    RoutingError,
    ScopeMismatch,
    Unauthenticated,
    ValueTooLarge,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_PREFIX: Final = "urn:engines:problem:"


class MalformedRequest(InvalidInput):
    """The request itself is malformed (a header given twice, a bad Content-Length)."""


class BodyTooLarge(InvalidInput):
    """The request body is over the configured limit."""


class UnsupportedMediaType(InvalidInput):
    """The request body is not ``application/json``."""


class Gone(NotFound):
    """The record existed and was deleted."""


#: One table from our errors to HTTP statuses; the first matching class wins.
STATUS_BY_ERROR: tuple[tuple[type[EnginesError], int], ...] = (
    (Unauthenticated, 401),
    (ScopeMismatch, 403),
    (IdentityError, 403),
    (MalformedRequest, 400),
    (BodyTooLarge, 413),
    (ValueTooLarge, 413),
    (PreconditionRequired, 428),
    (UnsupportedMediaType, 415),
    (InvalidInput, 422),
    (Gone, 410),
    (NotFound, 404),
    (AlreadyExists, 409),
    (LimitExceeded, 402),
    (ConcurrencyError, 409),
    (BackendUnavailable, 503),
    (RoutingError, 500),
)


def status_for(exc: EnginesError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, header or path, then names")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="for 422: each field that is wrong, and why"
    )
    current_version: int | None = Field(
        default=None,
        description="for a version conflict (409, 412): the version the record is at, "
        "also sent as the ETag",
    )


#: How many fields a 422 names, and how long each reason may be.
MAX_FIELD_ERRORS: Final = 50
MAX_MESSAGE_CHARS: Final = 300


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """A problem-details response. ``kind`` names the problem type (default: the status's
    phrase); ``extensions`` are further members (RFC 9457 §3.2)."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + (kind or _slug(phrase.replace(" ", ""))),
        "title": phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    for name, value in (extensions or {}).items():
        body.setdefault(name, value)
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    if status == 503:  # a store down or locked: worth asking again soon
        headers = {**(headers or {}), "Retry-After": "1"}
    return OrjsonResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_for(exc: EnginesError, *, preconditioned: bool = False) -> Response:
    """The problem answering ``exc``. ``preconditioned``: the request carried If-Match or
    If-None-Match, so a version conflict is a failed precondition (412). A version
    conflict also says the version the record is at (``current_version``, and as the
    ``ETag``), so a client can re-read or retry without another request to learn it (it
    is only raised once the caller may see the record)."""
    status = status_for(exc)
    kind = _slug(type(exc).__name__)
    headers: dict[str, str] | None = None
    extensions: dict[str, Any] | None = None
    detail = str(exc)
    if isinstance(exc, ConcurrencyError):
        if preconditioned:
            status, kind = 412, "precondition-failed"
        if exc.expected == NEVER_MATCHES:
            detail = (
                f"stream {exc.stream_id!r}: If-Match names no version this service handed "
                'out (a weak tag, or a tag not of the form "3", never matches); send the '
                "ETag as received"
            )
        if isinstance(exc.actual, int) and exc.actual >= 1:
            headers = {"ETag": f'"{exc.actual}"'}
            extensions = {"current_version": exc.actual}
    if isinstance(exc, BackendUnavailable):  # which store is down, for machines too
        extensions = {"route": exc.route, "backend": exc.backend}
    if status == 503:
        log.warning("request refused: %s", exc)  # a store down: its error says which
    elif status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    errors = None
    if isinstance(exc, InvalidField):
        errors = [{"loc": list(exc.loc), "msg": str(exc), "type": "invalid"}]
    return problem(status, detail, kind=kind, errors=errors, headers=headers, extensions=extensions)


def install(app: FastAPI) -> None:
    """Answer every error a route raises, and FastAPI's own, as problem details."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the rejected input, which may not even encode (a
        # lone surrogate gave a 500): name the field and the reason, nothing more; and
        # a bounded number of them, each bounded (a body of 150,000 unknown keys is not
        # answered with 150,000 entries).
        raw_errors = exc.errors()
        errors = [
            {
                "loc": [p if isinstance(p, int) else capped(str(p), 64) for p in e.get("loc", ())],
                "msg": capped(str(e.get("msg", "")), MAX_MESSAGE_CHARS),
                "type": e.get("type"),
            }
            for e in raw_errors[:MAX_FIELD_ERRORS]
        ]
        for e, raw in zip(errors, raw_errors, strict=False):
            if e["type"] == "json_invalid":  # our parser's reason names no input
                e["msg"] = f"{e['msg']}: {raw.get('ctx', {}).get('error', '')}"
        said = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in errors[:5])
        more = f"; and {len(raw_errors) - 5} more" if len(raw_errors) > 5 else ""
        return problem(422, f"invalid input: {said}{more}", kind="invalid-input", errors=errors)

    @app.exception_handler(EnginesError)
    async def engines_error(request: Request, exc: EnginesError) -> Response:
        preconditioned = any(h in request.headers for h in PRECONDITION_HEADERS)
        return problem_for(exc, preconditioned=preconditioned)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, EnginesError):  # ours, raised where only these pass
            return problem_for(exc.__cause__)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)
        return problem(500, "an unexpected error occurred; it has been logged")


PRECONDITION_HEADERS: Final = frozenset({"if-match", "if-none-match"})

# -- OpenAPI ------------------------------------------------------------------------------

#: What every operation behind a token can answer besides its own statuses.
AUTHENTICATED: Final = (400, 401, 403, 413, 422, 500, 503)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring ``statuses`` as problem details."""
    return {
        status: {"model": Problem, "description": HTTPStatus(status).phrase}
        for status in sorted(set(statuses))
    }


def problems_in_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Every error response of every operation, as ``application/problem+json`` only: a
    :class:`Problem`, or the subclass of it the operation declares (with its extension
    members, such as a refused debit's amounts)."""
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    declared = response.get("content", {}).get("application/json", {})
                    ref = declared.get("schema", problem_ref)
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema
