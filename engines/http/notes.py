"""Notes over HTTP: ``/notes``. Thin: parse, resolve identity, dispatch a command or
query the notes view, answer.

A note exists for a caller only if it is theirs and lies within the surfaces and
projects their token grants; anything else answers 404, as if absent.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from commands.envelope import Command, CommandResult, granted
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
from engines.auth import Principal
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, requested, runtime_of, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.responses import OrjsonResponse, Timestamps, etag, expected_version
from engines.http.writes import IdempotencyKey, IfMatch, IfNoneMatch, envelope, written
from projections.views import Filter, Grant, ViewQuery, ViewRecord
from spine.errors import ConcurrencyError, NotFound
from spine.events import Identifier, Mode, Provenance

#: The projector whose view (``notes_store``) answers every read here.
VIEW = "notes"


class NoteIn(NoteBody):
    """``POST /notes``: the note, the surface and project it belongs to (each must be
    granted by the token; the surface may come from the token or a header instead), and
    optionally its provenance."""

    source: NoteSource = NoteSource()
    surface_id: Identifier | None = None
    project_id: Identifier | None = None
    provenance: Provenance | None = None


class NoteUpdate(NoteBody):
    """``PUT /notes/{note_id}``: the new editable fields, and optionally provenance."""

    provenance: Provenance | None = None


class NoteOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    note_id: str
    version: int
    tenant_id: str
    mode: Mode
    user_id: str
    surface_id: str | None
    project_id: str | None
    title: str
    content_type: str
    content: Any
    tags: list[str]
    source: NoteSource
    timestamps: Timestamps


class NoteAccepted(BaseModel):
    note_id: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


class NotePage(BaseModel):
    items: list[NoteOut]
    next_cursor: str | None


class NoteDeleted(BaseModel):
    note_id: str
    version: int
    deleted: bool = True


def note_out(record: ViewRecord) -> dict[str, Any]:
    data = record.data
    return NoteOut.model_validate(
        {
            **data,
            "version": record.version,
            "tenant_id": record.scope.tenant_id,
            "mode": record.scope.mode,
            "timestamps": {"created_at": data["created_at"], "updated_at": data["updated_at"]},
        }
    ).model_dump()


async def _written(
    request: Request, result: CommandResult, note_id: str, status: int, *, replay: bool = False
) -> Response:
    return await written(
        runtime_of(request),
        result,
        projector=VIEW,
        key=result.stream_id,
        ident={"note_id": note_id},
        render=note_out,
        status=status,
        location=f"/notes/{note_id}" if status == 201 else None,
        replay=replay,
    )


router = APIRouter(tags=["notes"], route_class=StrictJsonRoute)


@router.post(
    "/notes",
    status_code=201,
    response_model=NoteOut,
    responses={
        202: {"model": NoteAccepted},
        **problem_responses(*AUTHENTICATED, 409, 410, 412, 415),
    },
)
async def create_note(
    request: Request,
    body: NoteIn,
    principal: Auth,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Create a note. With ``Idempotency-Key``, a retry answers with the same note (and a
    replay after the note was deleted, 410); ``If-None-Match: *`` refuses a replay (412)."""
    expected = expected_version(if_match, if_none_match)
    scope = await scope_for(
        request, principal, body.surface_id, body.project_id, require_surface=True
    )
    from_source = Provenance(agent_id=body.source.agent_id, run_id=body.source.run_id)
    command = create_note_command(
        scope,
        body.model_dump(exclude={"surface_id", "project_id", "provenance"}),
        idempotency_key,
        expected_version=expected,
        **envelope(request, principal, body.provenance, from_source),
    )
    result = await runtime_of(request).dispatch(command)
    same_request_or_refuse(command, result)
    if if_none_match is not None and result.deduplicated:
        raise ConcurrencyError(result.stream_id, "no note (If-None-Match: *)", result.version)
    return await _written(request, result, command.payload.note_id, 201, replay=result.deduplicated)


# ``:path`` so that an id holding an (encoded) slash reaches validation and is refused
# with 422 naming ``note_id``, rather than missing the route.
@router.get(
    "/notes/{note_id:path}",
    response_model=NoteOut,
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_note(request: Request, note_id: Identifier, principal: Auth) -> Response:
    rt = runtime_of(request)
    scope = await scope_for(request, principal, None, None)
    record = await rt.view_of(VIEW).get(note_stream(scope, note_id))
    if (
        record is None
        or record.scope.user_id != principal.user_id
        or not granted(principal.grants, record.scope)
    ):
        raise NotFound(f"note {note_id!r} not found")
    return OrjsonResponse(note_out(record), headers={"ETag": etag(record.version)})


async def _change(
    request: Request,
    principal: Principal,
    payload: UpdateNote | DeleteNote,
    if_match: str | None,
    if_none_match: str | None,
    *provenance: Provenance | None,
) -> Response:
    """An update or delete of an existing note, under the request's preconditions."""
    expected = expected_version(if_match, if_none_match)
    command = Command[Any](
        scope=await scope_for(request, principal, None, None),
        expected_version=expected,
        payload=payload,
        **envelope(request, principal, *provenance),
    )
    result = await runtime_of(request).dispatch(command)
    return await _written(request, result, payload.note_id, 200)


@router.put(
    "/notes/{note_id:path}",
    response_model=NoteOut,
    responses={
        202: {"model": NoteAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 412, 415),
    },
)
async def update_note(
    request: Request,
    note_id: Identifier,
    body: NoteUpdate,
    principal: Auth,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    payload = UpdateNote(note_id=note_id, **body.model_dump(exclude={"provenance"}))
    return await _change(request, principal, payload, if_match, if_none_match, body.provenance)


@router.delete(
    "/notes/{note_id:path}",
    response_model=NoteDeleted,
    responses={202: {"model": NoteAccepted}, **problem_responses(*AUTHENTICATED, 404, 409, 412)},
)
async def delete_note(
    request: Request,
    note_id: Identifier,
    principal: Auth,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    return await _change(request, principal, DeleteNote(note_id=note_id), if_match, if_none_match)


@router.get("/notes", response_model=NotePage, responses=problem_responses(*AUTHENTICATED))
async def list_notes(
    request: Request,
    principal: Auth,
    surface_id: Identifier | None = None,
    project_id: Identifier | None = None,
    tag: Tag | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    user_id: Identifier | None = None,  # may only name the caller (checked by the gate)
) -> NotePage:
    """The caller's notes within their grants, newest created first. The order is by
    creation (which never changes), so a walk of the pages returns every note that
    existed when it began, however the notes are edited meanwhile."""
    del user_id
    rt = runtime_of(request)
    scope = await scope_for(request, principal, surface_id, project_id)
    # only what the request names (checked by scope_for), not a default
    surface = requested(request, "surface_id", surface_id)
    grants = tuple(
        Grant(surface_id=s, project_ids=tuple(sorted(projects)))
        for s, projects in sorted(principal.grants.items())
        if surface is None or s == surface
    )
    page = await rt.view_of(VIEW).query(
        ViewQuery(
            tenant_id=scope.tenant_id,
            mode=scope.mode,
            user_id=principal.user_id,
            surface_id=surface,
            project_id=requested(request, "project_id", project_id),
            grants=grants,
            where=(Filter(field="tags", op="contains", value=tag),) if tag else (),
            order_by="created_at",
            limit=limit,
            cursor=cursor,
        )
    )
    return NotePage.model_validate(
        {"items": [note_out(r) for r in page.items], "next_cursor": page.next_cursor}
    )
