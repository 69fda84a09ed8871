"""The HTTP API: thin. Parse, resolve identity, call a command or a query, map errors.

Write endpoints return once the view reflects the write (bounded by the
``write_wait_seconds`` setting); if it does not in time they answer 202 with the
version. Every response of a server with lab routes carries ``X-Engines-Lab``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from commands.envelope import Command, CommandResult
from commands.notes import (
    DeleteNote,
    NoteBody,
    NoteSource,
    Tag,
    UpdateNote,
    create_note_command,
    note_stream,
    same_request_or_refuse,
)
from engines.audit import record_access_denied
from engines.auth import Principal, resolve_scope
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from projections.views import Filter, ViewQuery, ViewRecord
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
from spine.events import Identifier, Scope

log = logging.getLogger(__name__)

LAB_HEADER = "X-Engines-Lab"
LAB_LABEL = "embedded SQLite lab backend; not for production"

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


class NoteIn(NoteBody):
    """``POST /notes``: the note, and optionally the surface and project it belongs to
    (each must be granted by the token)."""

    source: NoteSource = NoteSource()
    surface_id: Identifier | None = None
    project_id: Identifier | None = None


class NoteOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    note_id: str
    version: int
    title: str
    content_type: str
    content: Any
    tags: list[str]
    source: NoteSource
    user_id: str
    surface_id: str | None
    project_id: str | None
    created_at: str
    updated_at: str


class Accepted(BaseModel):
    note_id: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


class NotePage(BaseModel):
    items: list[NoteOut]
    next_cursor: str | None


class Deleted(BaseModel):
    note_id: str
    version: int
    deleted: bool = True


class OrjsonResponse(Response):
    """JSON encoded with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# -- identity -----------------------------------------------------------------------------


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _deny(
    runtime: Runtime, request: Request, exc: IdentityError, principal: Principal | None
) -> None:
    await record_access_denied(
        runtime.spine,
        mode=runtime.settings.mode,
        tenant_id=principal.tenant_id if principal else None,
        user_id=principal.user_id if principal else None,
        status=status_for(exc),
        reason=str(exc),
        request={
            "method": request.method,
            "path": request.url.path,
            "client": request.client.host if request.client else None,
            "claimed": {k: v for k, v in _claimed(request).items() if v},
        },
    )


#: Where a client may state (never decide) tenant, mode and user: headers, then query.
CLAIM_ALIASES: dict[str, tuple[tuple[str, ...], str]] = {
    "tenant_id": (("x-tenant-id",), "tenant_id"),
    "mode": (("x-mode", "x-engines-mode"), "mode"),
    "user_id": (("x-user-id",), "user_id"),
}


def _claimed(request: Request) -> dict[str, list[str]]:
    """Every value the client gives for tenant, mode and user, under every alias."""
    h, q = request.headers, request.query_params
    return {
        name: [v for header in headers for v in h.getlist(header)] + q.getlist(param)
        for name, (headers, param) in CLAIM_ALIASES.items()
    }


def requested(request: Request, name: str, given: str | None) -> str | None:
    """The surface or project a request names (body or query ``given``, the
    ``X-Surface-Id`` / ``X-Project-Id`` header, repeated query parameters); naming two
    different ones is a contradiction, refused as such."""
    header = "x-" + name.replace("_", "-")
    values = {v for v in [given, *request.headers.getlist(header)] if v is not None}
    values.update(request.query_params.getlist(name))
    if len(values) > 1:
        raise ScopeMismatch(f"{name} is given as {sorted(values)}: name one")
    return values.pop() if values else None


async def authenticate(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    runtime = runtime_of(request)
    principal: Principal | None = None
    try:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("an `Authorization: Bearer <token>` header is required")
        principal = runtime.verifier.verify(token.strip())
        resolve_scope(principal, runtime.settings.mode, claimed=_claimed(request))
    except IdentityError as exc:
        known = principal or getattr(exc, "principal", None)
        await _deny(runtime, request, exc, known if isinstance(known, Principal) else None)
        raise
    return principal


Auth = Annotated[Principal, Depends(authenticate)]


async def scope_for(
    request: Request, principal: Principal, surface_id: str | None, project_id: str | None
) -> Scope:
    runtime = runtime_of(request)
    try:
        return resolve_scope(
            principal,
            runtime.settings.mode,
            claimed=_claimed(request),
            surface_id=requested(request, "surface_id", surface_id),
            project_id=requested(request, "project_id", project_id),
        )
    except IdentityError as exc:
        await _deny(runtime, request, exc, principal)
        raise


# -- helpers ------------------------------------------------------------------------------

_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def expected_from_if_match(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ETAG.match(if_match.strip())
    if not m:
        raise InvalidInput('If-Match: expected a version ETag such as "3"')
    return int(m.group(1))


def note_out(record: ViewRecord) -> NoteOut:
    return NoteOut.model_validate({**record.data, "version": record.version})


def etag(version: int) -> str:
    return f'"{version}"'


async def written(runtime: Runtime, result: CommandResult, note_id: str, status: int) -> Response:
    """Wait for the notes view to reflect ``result``; answer with the note, or 202.

    The note answered is the view as it stands, which a later write may already have
    moved past ``result``; its ETag is the version of that body, never an older one."""
    runner = runtime.runners["notes"]
    reflected = await runner.wait_for(
        result.stream_id, result.version, runtime.settings.write_wait_seconds
    )
    if not reflected:
        body = Accepted(note_id=note_id, version=result.version)
        return OrjsonResponse(
            body.model_dump(), status_code=202, headers={"ETag": etag(result.version)}
        )
    record = await runtime.notes_view.get_many([result.stream_id], include_deleted=True)
    current = record[result.stream_id]
    # The view may already be past this write (a later write landed): the ETag names the
    # version of the body we send, so a client's next If-Match is about what it saw.
    headers = {"ETag": etag(current.version)}
    if current.deleted:
        return OrjsonResponse(
            Deleted(note_id=note_id, version=current.version).model_dump(), headers=headers
        )
    if status == 201:
        headers["Location"] = f"/notes/{note_id}"
    return OrjsonResponse(note_out(current).model_dump(), status_code=status, headers=headers)


class LabelResponses:
    """Pure ASGI middleware: every HTTP response names the mode, and carries
    ``X-Engines-Lab`` when lab routes are in use. (Starlette's ``@app.middleware``
    costs a task and a stream per request; this costs a closure.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        rt: Runtime | None = None
        if scope["type"] == "http":
            rt = getattr(scope["app"].state, "runtime", None)
        if rt is None:
            await self.app(scope, receive, send)
            return
        extra = [(b"x-engines-mode", rt.settings.mode.encode())]
        if rt.lab_routes:
            extra.append((LAB_HEADER.lower().encode(), LAB_LABEL.encode()))

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, labelled)


# -- the app --------------------------------------------------------------------------------


def build_app(runtime: Runtime | None = None, *, lifespan: Any = None) -> FastAPI:
    app = FastAPI(
        title="Engines",
        version="0.1.0",
        description="The durable spine: notes over commands, events and projections.",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime

    app.add_middleware(LabelResponses)

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

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        rt = runtime_of(request)
        return {
            "status": "ok",
            "mode": rt.settings.mode,
            "lab": [r.describe() for r in rt.lab_routes],
        }

    @app.post(
        "/notes",
        status_code=201,
        response_model=NoteOut,
        responses={202: {"model": Accepted}},
    )
    async def create_note(
        request: Request,
        body: NoteIn,
        principal: Auth,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> Response:
        rt = runtime_of(request)
        scope = await scope_for(request, principal, body.surface_id, body.project_id)
        command = create_note_command(
            scope, body.model_dump(exclude={"surface_id", "project_id"}), idempotency_key
        )
        result = await rt.bus.dispatch(command)
        same_request_or_refuse(command, result)
        return await written(rt, result, command.payload.note_id, 201)

    # ``:path`` so that an id holding an (encoded) slash reaches validation and is refused
    # with 422 naming ``note_id``, rather than missing the route.
    @app.get("/notes/{note_id:path}", response_model=NoteOut)
    async def get_note(request: Request, note_id: Identifier, principal: Auth) -> Response:
        rt = runtime_of(request)
        scope = await scope_for(request, principal, None, None)
        record = await rt.notes_view.get(note_stream(scope, note_id))
        if record is None or record.scope.user_id != principal.user_id:
            raise NotFound(f"note {note_id!r} not found")
        return OrjsonResponse(note_out(record).model_dump(), headers={"ETag": etag(record.version)})

    @app.put("/notes/{note_id:path}", response_model=NoteOut, responses={202: {"model": Accepted}})
    async def update_note(
        request: Request,
        note_id: Identifier,
        body: NoteBody,
        principal: Auth,
        if_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        rt = runtime_of(request)
        scope = await scope_for(request, principal, None, None)
        command = Command[UpdateNote](
            scope=scope,
            expected_version=expected_from_if_match(if_match),
            payload=UpdateNote(note_id=note_id, **body.model_dump()),
        )
        return await written(rt, await rt.bus.dispatch(command), note_id, 200)

    @app.delete(
        "/notes/{note_id:path}", response_model=Deleted, responses={202: {"model": Accepted}}
    )
    async def delete_note(
        request: Request,
        note_id: Identifier,
        principal: Auth,
        if_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        rt = runtime_of(request)
        scope = await scope_for(request, principal, None, None)
        command = Command[DeleteNote](
            scope=scope,
            expected_version=expected_from_if_match(if_match),
            payload=DeleteNote(note_id=note_id),
        )
        return await written(rt, await rt.bus.dispatch(command), note_id, 200)

    @app.get("/notes", response_model=NotePage)
    async def list_notes(
        request: Request,
        principal: Auth,
        surface_id: Identifier | None = None,
        project_id: Identifier | None = None,
        tag: Tag | None = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        user_id: Identifier | None = None,  # may only name the caller (checked on auth)
    ) -> NotePage:
        del user_id
        rt = runtime_of(request)
        scope = await scope_for(request, principal, surface_id, project_id)
        page = await rt.notes_view.query(
            ViewQuery(
                tenant_id=scope.tenant_id,
                mode=scope.mode,
                user_id=principal.user_id,
                # only what the request names (checked by scope_for), not a default
                surface_id=requested(request, "surface_id", surface_id),
                project_id=requested(request, "project_id", project_id),
                where=(Filter(field="tags", op="contains", value=tag),) if tag else (),
                order_by="updated_at",
                limit=limit,
                cursor=cursor,
            )
        )
        return NotePage(items=[note_out(r) for r in page.items], next_cursor=page.next_cursor)

    return app


def create_app(settings: Settings, data_dir: Path) -> FastAPI:
    """The service: builds its runtime on start-up, closes it on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap(settings, data_dir) as runtime:
            app.state.runtime = runtime
            log.warning("%s", runtime.banner())
            # Everything built so far lives as long as the process: keep it out of the
            # collector's full passes, which otherwise stall requests for tens of ms.
            gc.freeze()
            yield

    return build_app(lifespan=lifespan)
