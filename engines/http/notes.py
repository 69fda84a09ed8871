"""Notes over HTTP: ``/notes``. Thin: parse, resolve identity, dispatch a command or
query the notes view, answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

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
from engines.http.identity import Auth, requested, runtime_of, scope_for
from engines.http.responses import OrjsonResponse, etag, expected_from_if_match
from engines.http.writes import written
from projections.views import Filter, ViewQuery, ViewRecord
from spine.errors import NotFound
from spine.events import Identifier

#: The projector whose view (``notes_store``) answers every read here.
VIEW = "notes"


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


def note_out(record: ViewRecord) -> dict[str, Any]:
    return NoteOut.model_validate({**record.data, "version": record.version}).model_dump()


async def _written(request: Request, result: CommandResult, note_id: str, status: int) -> Response:
    return await written(
        runtime_of(request),
        result,
        projector=VIEW,
        key=result.stream_id,
        ident={"note_id": note_id},
        render=note_out,
        status=status,
        location=f"/notes/{note_id}" if status == 201 else None,
    )


router = APIRouter(tags=["notes"])


@router.post(
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
    result = await rt.dispatch(command)
    same_request_or_refuse(command, result)
    return await _written(request, result, command.payload.note_id, 201)


# ``:path`` so that an id holding an (encoded) slash reaches validation and is refused
# with 422 naming ``note_id``, rather than missing the route.
@router.get("/notes/{note_id:path}", response_model=NoteOut)
async def get_note(request: Request, note_id: Identifier, principal: Auth) -> Response:
    rt = runtime_of(request)
    scope = await scope_for(request, principal, None, None)
    record = await rt.view_of(VIEW).get(note_stream(scope, note_id))
    if record is None or record.scope.user_id != principal.user_id:
        raise NotFound(f"note {note_id!r} not found")
    return OrjsonResponse(note_out(record), headers={"ETag": etag(record.version)})


@router.put("/notes/{note_id:path}", response_model=NoteOut, responses={202: {"model": Accepted}})
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
    return await _written(request, await rt.dispatch(command), note_id, 200)


@router.delete(
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
    return await _written(request, await rt.dispatch(command), note_id, 200)


@router.get("/notes", response_model=NotePage)
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
    page = await rt.view_of(VIEW).query(
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
    return NotePage.model_validate(
        {"items": [note_out(r) for r in page.items], "next_cursor": page.next_cursor}
    )
