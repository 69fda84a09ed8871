"""Strategy locks over HTTP: take a snapshot (``admin``), read the latest or a given
one, page the history. Thin: parse, check the role, resolve the project, and leave the
rest to :class:`engines.http.entities.EntityApi`.

The project a strategy belongs to is the request's, never the body's: the
``X-Project-Id`` header or the ``project_id`` query parameter, or, when the token
grants a single project, that one. A snapshot is recorded on the request's surface
(``X-Surface-Id`` or ``surface_id``, or the single granted one), which must grant the
project.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint's
annotations at run time.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from commands.envelope import idempotent_id
from commands.strategy_locks import STRATEGY_LOCKS, StrategyLockBody, TakeStrategySnapshot
from engines.auth import Principal
from engines.http.access import one_place, require_role
from engines.http.entities import EntityApi, on_bus
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.writes import IdempotencyKey, IfMatch, IfNoneMatch
from spine.errors import InvalidField
from spine.events import Identifier, Provenance, Scope

STRATEGY_LOCKS_API = EntityApi(
    kind=STRATEGY_LOCKS,
    view="strategy_locks",
    put_type=TakeStrategySnapshot,
    delete_type=None,
    body=StrategyLockBody,
    base_path="/strategy-locks",
    answers="version",
    url_fields=("strategy_id",),
    as_given=True,
)

ProjectQuery = Annotated[
    Identifier | None,
    Query(description="the strategy's project (or the X-Project-Id header)"),
]
SurfaceQuery = Annotated[
    Identifier | None,
    Query(description="the surface a snapshot is recorded on (or the X-Surface-Id header)"),
]
ProjectHeader = Annotated[
    Identifier | None,
    Header(
        alias="x-project-id",
        description="the strategy's project; default: the token's only project",
    ),
]
SurfaceHeader = Annotated[
    Identifier | None,
    Header(alias="x-surface-id", description="default: the token's only surface"),
]
Cursor = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int, Query(ge=1, le=200)]
Version = Annotated[int | None, Query(ge=1, le=2**62, description="a past snapshot")]

Out = STRATEGY_LOCKS_API.out_model()
Snapshot = STRATEGY_LOCKS_API.version_model()


class StrategySnapshotIn(StrategyLockBody):
    """A full snapshot of the strategy's toggles and flags, and optionally provenance."""

    provenance: Provenance | None = None


class StrategyLockHistory(BaseModel):
    items: list[Snapshot]  # type: ignore[valid-type]
    next_cursor: str | None


class StrategyLockAccepted(BaseModel):
    project_id: str
    strategy_id: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


router = APIRouter(tags=["strategy locks"], route_class=StrictJsonRoute)


def _snapshot_place(
    payload: TakeStrategySnapshot, principal: Principal, surface: str | None, project: str | None
) -> tuple[str | None, str | None]:
    """A snapshot sent on the command bus is taken in its path's project."""
    del principal
    return surface, one_place("project_id", project, payload.path[0])


#: The command bus takes snapshots as ``take_snapshot`` does.
ON_BUS = on_bus(STRATEGY_LOCKS_API, role="admin", place=_snapshot_place, require_surface=True)


def _no_project(granted: int) -> InvalidField:
    return InvalidField(
        ("query", "project_id"),
        f"project_id is required: a strategy lock belongs to a project, and the token grants "
        f"{granted} here; name one (query `project_id`, or the X-Project-Id header)",
    )


async def _read_scope(
    request: Request, principal: Principal, project_id: str | None, strategy_id: str
) -> tuple[Scope, tuple[str, str]]:
    """The scope and path of a read: the project named (granted on some surface), or
    the token's only project."""
    scope = await scope_for(request, principal, None, project_id)
    project = scope.project_id
    if project is None:
        projects = set().union(*principal.grants.values())
        if len(projects) != 1:
            raise _no_project(len(projects))
        project = projects.pop()
        scope = scope.model_copy(update={"project_id": project})
    return scope, (project, strategy_id)


@router.post(
    "/strategy-locks/{strategy_id}/snapshots",
    status_code=201,
    response_model=Snapshot,
    responses={
        202: {"model": StrategyLockAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 412, 415),
    },
    summary="Take a snapshot of a strategy's toggles and flags",
)
async def take_snapshot(
    request: Request,
    strategy_id: Identifier,
    body: StrategySnapshotIn,
    principal: Auth,
    project_id: ProjectQuery = None,
    surface_id: SurfaceQuery = None,
    x_project_id: ProjectHeader = None,
    x_surface_id: SurfaceHeader = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Needs the ``admin`` role (403 otherwise, and nothing is written). Appends a full
    snapshot and answers it (201, every time: each snapshot is a new version, even of the
    same toggles and flags). ``If-Match: "N"`` appends only on top of version N (412
    otherwise; 404 if there is none yet); ``If-None-Match: *`` only as the first.
    ``Idempotency-Key`` (per strategy): a retry answers with the snapshot it took."""
    await require_role(request, principal, "admin")
    scope = await scope_for(request, principal, surface_id, project_id, require_surface=True)
    if scope.project_id is None:
        raise _no_project(0)
    path = (scope.project_id, strategy_id)
    command_id = None
    if idempotency_key is not None:
        command_id = "snapshot:" + idempotent_id(scope, "/".join(path), idempotency_key)
    return await STRATEGY_LOCKS_API.put(
        request,
        principal,
        scope,
        path,
        STRATEGY_LOCKS_API.stored(body),
        create="may",
        if_match=if_match,
        if_none_match=if_none_match,
        command_id=command_id,
        provenance=body.provenance,
        status=201,
    )


@router.get(
    "/strategy-locks/{strategy_id}/history",
    response_model=StrategyLockHistory,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="Every snapshot of a strategy, oldest first",
)
async def history(
    request: Request,
    strategy_id: Identifier,
    principal: Auth,
    project_id: ProjectQuery = None,
    x_project_id: ProjectHeader = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Readable by everyone granted the project."""
    scope, path = await _read_scope(request, principal, project_id, strategy_id)
    return await STRATEGY_LOCKS_API.history(request, principal, scope, path, cursor, limit)


@router.get(
    "/strategy-locks/{strategy_id}",
    response_model=Out | Snapshot,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="A strategy's latest snapshot, or a given one",
)
async def read(
    request: Request,
    strategy_id: Identifier,
    principal: Auth,
    project_id: ProjectQuery = None,
    x_project_id: ProjectHeader = None,
    version: Version = None,
) -> Response:
    """Readable by everyone granted the project. The latest snapshot with its
    ``timestamps`` (first and latest); ``?version=N`` snapshot N as it was taken."""
    scope, path = await _read_scope(request, principal, project_id, strategy_id)
    return await STRATEGY_LOCKS_API.read(request, principal, scope, path, version)
