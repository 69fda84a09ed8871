"""Session memory over HTTP: ``/memory/{session_id}`` and ``/memory/{session_id}/{key}``.
Thin: parse, resolve identity, dispatch a command or query the memory view, answer.

A session is the caller's own (its stream is named by their user id), in the project of
the request's scope: every call resolves the scope as a write does (the surface and
project from the query or the ``X-Surface-Id`` / ``X-Project-Id`` headers, a single
granted one taken), so a read finds exactly what a write in the same scope wrote, and
another user or tenant finds nothing (404).

A key's ETag is its own version (the seq of the event that last set it), not the
session's: ``If-Match`` pins the key, ``If-None-Match: *`` asks that it be absent or
expired. A time to live comes from the write or else the route (``ttl_seconds``), never
above the route's; an expired key is absent at once, whether or not anything has purged
it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from commands.envelope import Command, CommandResult
from commands.memory import (
    MAX_VALUE_BYTES,
    DeleteMemory,
    SetMemory,
    TtlSeconds,
    memory_command_id,
    memory_stream,
    same_request_or_refuse,
)
from engines.auth import Principal
from engines.domain import OnBus
from engines.http.access import route_option_of
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, runtime_of, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.responses import (
    OrjsonResponse,
    ProvenanceOut,
    etag,
    expected_version,
    provenance_out,
)
from engines.http.writes import IdempotencyKey, IfMatch, IfNoneMatch, envelope, written
from projections.memory import record_key
from projections.views import Filter, ViewQuery, ViewRecord
from spine.codec import timestamp_text
from spine.errors import ConcurrencyError, InvalidField, NotFound
from spine.events import Identifier, Mode, Provenance, Scope

if TYPE_CHECKING:
    from routing.registry import Registry

#: The projector whose view (``memory_store``) answers every read here.
VIEW = "memory"
KIND = "memory_store"

SurfaceParam = Annotated[
    Identifier | None,
    Query(description="or the X-Surface-Id header; a single granted one is taken"),
]
ProjectParam = Annotated[
    Identifier | None,
    Query(description="or the X-Project-Id header; a single one granted on the surface is taken"),
]


class MemoryIn(BaseModel):
    """``PUT /memory/{session_id}/{key}``: the value, optionally a time to live, and
    optionally provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: JsonValue = Field(description=f"any JSON value, at most {MAX_VALUE_BYTES} bytes encoded")
    ttl_seconds: TtlSeconds | None = Field(
        default=None,
        description="seconds the key lives after this write; omitted or null: the route's "
        "ttl_seconds (durable if the route sets none); never above the route's",
    )
    provenance: Provenance | None = None


class KeyTimestamps(BaseModel):
    created_at: str = Field(description="when the key was set in its current life")
    updated_at: str


class MemoryOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str
    key: str
    value: JsonValue
    version: int
    ttl_seconds: int | None
    expires_at: str | None = Field(description="null: durable")
    tenant_id: str
    mode: Mode
    user_id: str
    surface_id: str | None
    project_id: str | None
    provenance: ProvenanceOut = Field(description="of the write that set the value")
    timestamps: KeyTimestamps


class MemoryKey(BaseModel):
    """A key as the listing shows it (without its value)."""

    key: str
    version: int
    ttl_seconds: int | None
    expires_at: str | None
    surface_id: str | None
    timestamps: KeyTimestamps


class MemoryPage(BaseModel):
    session_id: str
    items: list[MemoryKey]
    next_cursor: str | None


class MemoryAccepted(BaseModel):
    session_id: str
    key: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


class MemoryDeleted(BaseModel):
    session_id: str
    key: str
    version: int
    deleted: bool = True


def _expires_at(record: ViewRecord) -> str | None:
    return timestamp_text(record.expires_at) if record.expires_at is not None else None


def _timestamps(record: ViewRecord) -> dict[str, str]:
    return {"created_at": record.data["created_at"], "updated_at": record.data["updated_at"]}


def memory_out(record: ViewRecord) -> dict[str, Any]:
    data = record.data
    return {
        "session_id": data["session_id"],
        "key": data["key"],
        "value": data["value"],
        "version": record.version,
        "ttl_seconds": data["ttl_seconds"],
        "expires_at": _expires_at(record),
        "tenant_id": record.scope.tenant_id,
        "mode": record.scope.mode,
        "user_id": data["user_id"],
        "surface_id": data["surface_id"],
        "project_id": data["project_id"],
        "provenance": provenance_out(data),
        "timestamps": _timestamps(record),
    }


def memory_key(record: ViewRecord) -> dict[str, Any]:
    return {
        "key": record.data["key"],
        "version": record.version,
        "ttl_seconds": record.data["ttl_seconds"],
        "expires_at": _expires_at(record),
        "surface_id": record.data["surface_id"],
        "timestamps": _timestamps(record),
    }


async def _scope(
    request: Request, principal: Principal, surface_id: str | None, project_id: str | None
) -> Scope:
    """The scope of every memory call, read or write alike (see the module's doc)."""
    return await scope_for(request, principal, surface_id, project_id, require_surface=True)


_Memory = TypeVar("_Memory", SetMemory, DeleteMemory)


def _ttl(registry: Registry, given: int | None) -> int | None:
    """The time to live of a write: the one given, else the route's; above the route's,
    refused naming the field."""
    most = route_option_of(registry, KIND, "ttl_seconds")
    if given is None:
        return most
    if most is not None and given > most:
        raise InvalidField(
            ("body", "ttl_seconds"),
            f"ttl_seconds is {given}; session memory here lives at most {most} seconds",
        )
    return given


def settled(payload: _Memory, registry: Registry) -> _Memory:
    """``payload`` as it is dispatched, however it came (a request, a command on the bus):
    at the server's time (what a key's expiry is compared with, never the sender's), and
    a set with its time to live settled against the route (:func:`_ttl`)."""
    fields: dict[str, Any] = {"at": datetime.now(UTC)}
    if isinstance(payload, SetMemory):
        fields["ttl_seconds"] = _ttl(registry, payload.ttl_seconds)
    return type(payload).model_validate({**dict(payload), **fields})


def admit(principal: Principal, command: Command[Any], registry: Registry) -> Command[Any]:
    """A memory command from the bus, settled as a request's is (:func:`settled`)."""
    del principal
    return command.model_copy(update={"payload": settled(command.payload, registry)})


def _preconditions(if_match: str | None, if_none_match: str | None) -> dict[str, Any]:
    """The key's preconditions as command fields (the headers refused as notes refuse
    them: both at once, or anything but an ETag or ``*``)."""
    expected = expected_version(if_match, if_none_match)
    live = if_match is not None and if_match.strip() == "*"
    return {"expected_key_version": expected, **({"require_live": True} if live else {})}


async def _dispatch(
    request: Request,
    principal: Principal,
    scope: Scope,
    payload: SetMemory | DeleteMemory,
    idempotency_key: str | None,
    *provenance: Provenance | None,
) -> CommandResult:
    command = Command[Any](
        command_id=memory_command_id(scope, idempotency_key),
        scope=scope,
        payload=payload,
        **envelope(request, principal, *provenance),
    )
    result = await runtime_of(request).dispatch(command)
    same_request_or_refuse(command, result)
    return result


async def _written(
    request: Request, result: CommandResult, session_id: str, key: str, *, replay: bool
) -> Response:
    return await written(
        runtime_of(request),
        result,
        projector=VIEW,
        key=record_key(result.stream_id, key),
        ident={"session_id": session_id, "key": key},
        render=memory_out,
        status=200,
        replay=replay,
    )


#: The command bus takes sets and deletes as ``put_key`` and ``delete_key`` do.
ON_BUS: dict[type[BaseModel], OnBus] = dict.fromkeys(
    (SetMemory, DeleteMemory),
    OnBus(require_surface=True, admit=admit, same_request=same_request_or_refuse),
)

router = APIRouter(tags=["memory"], route_class=StrictJsonRoute)


@router.get(
    "/memory/{session_id}",
    response_model=MemoryPage,
    responses=problem_responses(*AUTHENTICATED),
)
async def list_keys(
    request: Request,
    session_id: Identifier,
    principal: Auth,
    surface_id: SurfaceParam = None,
    project_id: ProjectParam = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The session's live keys (not their values), ordered by key; expired and deleted
    keys are left out. A session never written is an empty list."""
    scope = await _scope(request, principal, surface_id, project_id)
    views = runtime_of(request).view_of(VIEW)
    page = await views.query(
        ViewQuery(
            tenant_id=scope.tenant_id,
            mode=scope.mode,
            user_id=principal.user_id,
            project_id=scope.project_id,
            where=(Filter(field="stream_id", value=memory_stream(scope, session_id)),),
            order_by="key",
            descending=False,
            limit=limit,
            cursor=cursor,
        )
    )
    body = {
        "session_id": session_id,
        "items": [memory_key(r) for r in page.items],
        "next_cursor": page.next_cursor,
    }
    return OrjsonResponse(body)


# ``:path`` so that a key holding an (encoded) slash reaches validation and is refused
# with 422 naming ``key``, rather than missing the route.
@router.get(
    "/memory/{session_id}/{key:path}",
    response_model=MemoryOut,
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_key(
    request: Request,
    session_id: Identifier,
    key: Identifier,
    principal: Auth,
    surface_id: SurfaceParam = None,
    project_id: ProjectParam = None,
) -> Response:
    """The key's value, with its version as the ETag. Absent, deleted and expired keys
    answer 404."""
    scope = await _scope(request, principal, surface_id, project_id)
    stream = memory_stream(scope, session_id)
    record = await runtime_of(request).view_of(VIEW).get(record_key(stream, key))
    if record is None or (record.scope.tenant_id, record.scope.user_id) != (
        principal.tenant_id,
        principal.user_id,
    ):
        raise NotFound(f"key {key!r} of session {session_id!r} not found")
    return OrjsonResponse(memory_out(record), headers={"ETag": etag(record.version)})


@router.put(
    "/memory/{session_id}/{key:path}",
    response_model=MemoryOut,
    responses={
        202: {"model": MemoryAccepted},
        **problem_responses(*AUTHENTICATED, 409, 410, 412, 415),
    },
)
async def put_key(
    request: Request,
    session_id: Identifier,
    key: Identifier,
    body: MemoryIn,
    principal: Auth,
    surface_id: SurfaceParam = None,
    project_id: ProjectParam = None,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Set the key (creating it or replacing its value). Every write is recorded and
    renews a time to live. ``If-Match: "N"``: only if the key is at version N;
    ``If-None-Match: *``: only if it is absent or expired (412 otherwise). A value over
    the size limit answers 413; a ``ttl_seconds`` above the route's 422."""
    preconditions = _preconditions(if_match, if_none_match)
    scope = await _scope(request, principal, surface_id, project_id)
    payload = SetMemory(
        session_id=session_id,
        key=key,
        value=body.value,
        ttl_seconds=body.ttl_seconds,
        at=datetime.now(UTC),
        **preconditions,
    )
    payload = settled(payload, runtime_of(request).registry)
    result = await _dispatch(request, principal, scope, payload, idempotency_key, body.provenance)
    if if_none_match is not None and result.deduplicated:
        raise ConcurrencyError(result.stream_id, "no key (If-None-Match: *)", result.version)
    return await _written(request, result, session_id, key, replay=result.deduplicated)


@router.delete(
    "/memory/{session_id}/{key:path}",
    response_model=MemoryDeleted,
    responses={
        202: {"model": MemoryAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 412),
    },
)
async def delete_key(
    request: Request,
    session_id: Identifier,
    key: Identifier,
    principal: Auth,
    surface_id: SurfaceParam = None,
    project_id: ProjectParam = None,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Delete the key; absent and expired keys answer 404. A retry with the same
    ``Idempotency-Key`` answers as the delete did."""
    preconditions = _preconditions(if_match, if_none_match)
    preconditions.pop("require_live", None)  # every delete needs a live key
    scope = await _scope(request, principal, surface_id, project_id)
    payload = settled(
        DeleteMemory(session_id=session_id, key=key, at=datetime.now(UTC), **preconditions),
        runtime_of(request).registry,
    )
    result = await _dispatch(request, principal, scope, payload, idempotency_key)
    return await _written(request, result, session_id, key, replay=False)
