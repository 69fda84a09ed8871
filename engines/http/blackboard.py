"""The blackboard over HTTP: ``/blackboard/{project_id}/{run_id}[/{key}]``. Thin: parse,
resolve identity, check the value's size against the route, and leave the rest to
:class:`engines.http.entities.EntityApi`.

Access: everyone granted the project, on any surface, reads and writes its keys. To a
caller not granted it, reads answer 404 (a project they cannot see does not exist for
them) and writes 403 naming it (they name a project their token does not grant: a
refusal of identity, audited).

Every change carries a precondition: ``If-Match: "N"`` (the version read) or
``If-None-Match: *`` (create; also a key deleted since); neither, or ``If-Match: *``,
answers 428, a stale one 412. A value over the route's ``max_value_bytes`` answers 413;
nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from commands.blackboard import (
    BLACKBOARD,
    BlackboardBody,
    DeleteBlackboardKey,
    PutBlackboardKey,
    check_value_size,
)
from commands.envelope import idempotent_id
from engines.auth import Principal
from engines.http.access import one_place, project_granted, route_option_of
from engines.http.entities import EntityApi, on_bus
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, requested, runtime_of, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.writes import IdempotencyKey, IfMatch, IfNoneMatch
from projections.views import Filter
from spine.errors import NotFound
from spine.events import Identifier, Provenance, Scope

if TYPE_CHECKING:
    from routing.registry import Registry

API = EntityApi(
    kind=BLACKBOARD,
    view="blackboard",
    put_type=PutBlackboardKey,
    delete_type=DeleteBlackboardKey,
    body=BlackboardBody,
    base_path="/blackboard",
    require_precondition=True,
)

KeyOut = API.out_model()
KeyVersion = API.version_model()

Cursor = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int, Query(ge=1, le=200)]
Version = Annotated[int | None, Query(ge=1, le=2**62, description="a past version")]


class KeyIn(BlackboardBody):
    """``PUT``: the key's new value, and optionally provenance. The surface comes from the
    token (or ``X-Surface-Id``); the project and run from the path."""

    provenance: Provenance | None = None


class KeyPage(BaseModel):
    items: list[KeyOut]  # type: ignore[valid-type]
    next_cursor: str | None


class KeyHistory(BaseModel):
    items: list[KeyVersion]  # type: ignore[valid-type]
    next_cursor: str | None


class BlackboardKeyAccepted(BaseModel):
    project_id: str
    run_id: str
    key: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


class BlackboardKeyDeleted(BaseModel):
    project_id: str
    run_id: str
    key: str
    version: int
    deleted: bool = True


async def read_scope(request: Request, principal: Principal, project_id: str) -> Scope:
    """The scope of a read of ``project_id``'s blackboard: 404 unless it is granted."""
    scope = await scope_for(request, principal, None, None)
    if not project_granted(principal, project_id):
        raise NotFound(f"project {project_id!r} not found")
    return scope


async def write_scope(request: Request, principal: Principal, project_id: str) -> Scope:
    """The scope of a write to ``project_id``'s blackboard (403 unless granted): on
    :func:`write_surface`."""
    surface = write_surface(principal, project_id, requested(request, "surface_id", None))
    return await scope_for(request, principal, surface, project_id, require_surface=True)


def write_surface(principal: Principal, project_id: str, named: str | None) -> str | None:
    """The surface a write to ``project_id``'s blackboard is made on: the one ``named``,
    else the one surface that grants the project (else none: refused as unsettled)."""
    if named is None:
        granting = [s for s, projects in principal.grants.items() if project_id in projects]
        if len(granting) == 1:
            (named,) = granting
    return named


def check_size(registry: Registry, body: BlackboardBody) -> None:
    """Refuse (413) a value over the ``blackboard_store`` route's ``max_value_bytes``."""
    check_value_size(body.value, route_option_of(registry, "blackboard_store", "max_value_bytes"))


def _key_place(
    payload: PutBlackboardKey | DeleteBlackboardKey,
    principal: Principal,
    surface: str | None,
    project: str | None,
) -> tuple[str | None, str | None]:
    """A key sent on the command bus is written in its path's project, on
    :func:`write_surface`."""
    project = one_place("project_id", project, payload.path[0])
    return write_surface(principal, project, surface), project


#: The command bus takes puts and deletes as ``put_key`` and ``delete_key`` do.
ON_BUS = on_bus(API, place=_key_place, require_surface=True, check=check_size)

router = APIRouter(tags=["blackboard"], route_class=StrictJsonRoute)

_KEY = "/blackboard/{project_id}/{run_id}/{key}"
# ``:path`` so that a key holding an (encoded) slash reaches validation and is refused
# with 422 naming ``key``, rather than missing the route.
_KEY_PATH = "/blackboard/{project_id}/{run_id}/{key:path}"


@router.get(
    "/blackboard/{project_id}/{run_id}",
    response_model=KeyPage,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="A run's blackboard: its keys, with values and versions, by key",
)
async def list_keys(
    request: Request,
    project_id: Identifier,
    run_id: Identifier,
    principal: Auth,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Every live key of the run, in key order (a walk of the pages sees each key that
    lives throughout it once)."""
    scope = await read_scope(request, principal, project_id)
    return await API.list(
        request,
        principal,
        scope,
        project_id=project_id,
        where=(Filter(field="run_id", value=run_id),),
        order_by="key",
        descending=False,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    _KEY + "/versions",
    response_model=KeyHistory,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="A blackboard key's versions, oldest first",
)
async def key_versions(
    request: Request,
    project_id: Identifier,
    run_id: Identifier,
    key: Identifier,
    principal: Auth,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Every version and who wrote it, deletes included (``deleted: true``)."""
    scope = await read_scope(request, principal, project_id)
    return await API.history(request, principal, scope, (project_id, run_id, key), cursor, limit)


@router.get(
    _KEY_PATH,
    response_model=KeyOut,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="A blackboard key: its value and version (the ETag)",
)
async def read_key(
    request: Request,
    project_id: Identifier,
    run_id: Identifier,
    key: Identifier,
    principal: Auth,
    version: Version = None,
) -> Response:
    """``?version=N`` reads version N (whether or not the key has changed since)."""
    scope = await read_scope(request, principal, project_id)
    return await API.read(request, principal, scope, (project_id, run_id, key), version)


@router.put(
    _KEY_PATH,
    response_model=KeyOut,
    status_code=200,
    responses={
        201: {"model": KeyOut, "description": "Created (If-None-Match: *)"},
        202: {"model": BlackboardKeyAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 410, 412, 415, 428),
    },
    summary="Write a blackboard key: If-Match replaces, If-None-Match: * creates",
)
async def put_key(
    request: Request,
    project_id: Identifier,
    run_id: Identifier,
    key: Identifier,
    body: KeyIn,
    principal: Auth,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """``If-Match: "N"`` replaces version N (404 if the key does not exist, 412 if it is
    not at N); ``If-None-Match: *`` creates it (201; 412 if it exists). Neither: 428.
    ``Idempotency-Key`` (per key): a retry answers as the first request did."""
    scope = await write_scope(request, principal, project_id)
    check_size(runtime_of(request).registry, body)
    command_id = None
    if idempotency_key is not None:
        command_id = "put:" + idempotent_id(scope, BLACKBOARD.domain, idempotency_key)
    return await API.put(
        request,
        principal,
        scope,
        (project_id, run_id, key),
        API.stored(body),
        create="may",  # with If-None-Match (a create) or If-Match (never a create): 428 else
        if_match=if_match,
        if_none_match=if_none_match,
        command_id=command_id,
        provenance=body.provenance,
    )


@router.delete(
    _KEY_PATH,
    response_model=BlackboardKeyDeleted,
    responses={
        202: {"model": BlackboardKeyAccepted},
        **problem_responses(*AUTHENTICATED, 404, 412, 428),
    },
    summary="Delete a blackboard key (If-Match required)",
)
async def delete_key(
    request: Request,
    project_id: Identifier,
    run_id: Identifier,
    key: Identifier,
    principal: Auth,
    if_match: IfMatch = None,
) -> Response:
    """``If-Match: "N"`` deletes version N (412 otherwise; 428 without). The key leaves
    reads and lists; its history stays, and it may be created again."""
    scope = await write_scope(request, principal, project_id)
    return await API.delete(
        request, principal, scope, (project_id, run_id, key), if_match=if_match, if_none_match=None
    )
