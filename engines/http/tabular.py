"""Flows, graphs and overlays over HTTP: one router per document kind, made by one
function. Thin: parse, resolve identity, and leave the rest to
:class:`engines.http.entities.EntityApi`.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint's
annotations at run time, and the body models are this function's arguments.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, create_model

from commands.entities import DeleteEntity, PutEntity
from commands.envelope import idempotent_id
from commands.tabular import (
    FLOWS,
    GRAPHS,
    OVERLAYS,
    DeleteFlow,
    DeleteGraph,
    DeleteOverlay,
    DocumentBody,
    OverlayBody,
    PutFlow,
    PutGraph,
    PutOverlay,
)
from engines.http.entities import EntityApi, on_bus
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, requested, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.responses import expected_version
from engines.http.writes import IdempotencyKey, IfMatch, IfNoneMatch
from projections.views import Filter
from spine.entities import EntityKind
from spine.errors import ConcurrencyError
from spine.events import Identifier, Provenance, new_id

Cursor = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int, Query(ge=1, le=200)]
Version = Annotated[int | None, Query(ge=1, le=2**62, description="a past version")]


class DocumentAccepted(BaseModel):
    id: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


class DocumentDeleted(BaseModel):
    id: str
    version: int
    deleted: bool = True


def document_router(api: EntityApi, *, filter_by_app: bool = False) -> APIRouter:
    """The routes of one document kind at ``api.base_path``."""
    base, tag, entity = api.base_path, api.kind.domain, api.kind.entity
    body_model = api.body
    Out: Any = api.out_model()
    VersionOut: Any = api.version_model()

    stem = api.model_stem
    # Named models (not classes local to this function), so each kind's OpenAPI schemas
    # read FlowIn, GraphIn, ... rather than the function's qualified name.
    Create: Any = create_model(
        f"{stem}In",
        __base__=body_model,
        surface_id=(Identifier | None, None),
        project_id=(Identifier | None, None),
        provenance=(Provenance | None, None),
    )
    Replace: Any = create_model(
        f"{stem}Update", __base__=body_model, provenance=(Provenance | None, None)
    )
    Page = create_model(f"{stem}Page", items=(list[Out], ...), next_cursor=(str | None, ...))
    History = create_model(
        f"{stem}History", items=(list[VersionOut], ...), next_cursor=(str | None, ...)
    )

    router = APIRouter(tags=[tag], route_class=StrictJsonRoute)

    @router.post(
        base,
        status_code=201,
        response_model=Out,
        responses={
            202: {"model": DocumentAccepted},
            **problem_responses(*AUTHENTICATED, 409, 410, 412, 415),
        },
        summary=f"Create a {entity}",
    )
    async def create(
        request: Request,
        body: Create,
        principal: Auth,
        idempotency_key: IdempotencyKey = None,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """With ``Idempotency-Key``, a retry answers with the same document (410 if it
        was deleted since); ``If-None-Match: *`` refuses a retry (412). ``If-Match``
        names a version of a document that does not exist yet: 412."""
        if if_match is not None:
            expected_version(if_match, if_none_match)  # a malformed header is still 422
            raise ConcurrencyError(base, "a version of an existing document (If-Match)", 0)
        given: Any = body  # a model made above: its fields are not known statically
        scope = await scope_for(
            request, principal, given.surface_id, given.project_id, require_surface=True
        )
        if idempotency_key is None:
            entity_id, command_id = new_id(), None
        else:
            entity_id = idempotent_id(scope, tag, idempotency_key)
            command_id = f"create:{entity_id}"
        return await api.put(
            request,
            principal,
            scope,
            (entity_id,),
            api.stored(body),
            create="must",
            if_match=None,
            if_none_match=if_none_match,
            command_id=command_id,
            provenance=given.provenance,
            status=201,
        )

    @router.get(
        base + "/{id}/versions",
        response_model=History,
        responses=problem_responses(*AUTHENTICATED, 404),
        summary=f"A {entity}'s versions, oldest first",
    )
    async def versions(
        request: Request,
        id: Identifier,
        principal: Auth,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Every version, a deleted document's too (its last entry says so)."""
        scope = await scope_for(request, principal, None, None)
        return await api.history(request, principal, scope, (id,), cursor, limit)

    @router.get(
        base + "/{id:path}",
        response_model=Out | VersionOut,
        responses=problem_responses(*AUTHENTICATED, 404),
        summary=f"A {entity}: the latest, or a given version",
    )
    async def read(
        request: Request, id: Identifier, principal: Auth, version: Version = None
    ) -> Response:
        """``?version=N`` reads version N (a past version's body, whether or not the
        document has changed or been deleted since)."""
        scope = await scope_for(request, principal, None, None)
        return await api.read(request, principal, scope, (id,), version)

    @router.put(
        base + "/{id:path}",
        response_model=Out,
        responses={
            202: {"model": DocumentAccepted},
            **problem_responses(*AUTHENTICATED, 404, 409, 412, 415),
        },
        summary=f"Replace a {entity}",
    )
    async def replace(
        request: Request,
        id: Identifier,
        body: Replace,
        principal: Auth,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """``If-Match: "N"`` replaces version N only (412 otherwise); ``If-None-Match: *``
        only a document that does not exist (so never: 412, or 404 if it is not yours)."""
        given: Any = body
        scope = await scope_for(request, principal, None, None)
        return await api.put(
            request,
            principal,
            scope,
            (id,),
            api.stored(body),
            create="never",
            if_match=if_match,
            if_none_match=if_none_match,
            provenance=given.provenance,
        )

    @router.delete(
        base + "/{id:path}",
        response_model=DocumentDeleted,
        responses={
            202: {"model": DocumentAccepted},
            **problem_responses(*AUTHENTICATED, 404, 409, 412),
        },
        summary=f"Delete a {entity}",
    )
    async def delete(
        request: Request,
        id: Identifier,
        principal: Auth,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """A tombstone: the document leaves reads and lists; its history stays readable.
        ``If-None-Match: *`` (only if it does not exist) always fails: 412."""
        scope = await scope_for(request, principal, None, None)
        return await api.delete(
            request, principal, scope, (id,), if_match=if_match, if_none_match=if_none_match
        )

    async def by_app(app_id: Identifier | None = None) -> str | None:
        """``?app_id=``: only this app's documents (overlays)."""
        return app_id

    async def no_app() -> None:
        return None

    AppFilter = Annotated[str | None, Depends(by_app if filter_by_app else no_app)]

    @router.get(
        base,
        response_model=Page,
        responses=problem_responses(*AUTHENTICATED),
        summary=f"The caller's {entity}s, newest created first",
    )
    async def list_documents(
        request: Request,
        principal: Auth,
        app_id: AppFilter,
        surface_id: Identifier | None = None,
        project_id: Identifier | None = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        scope = await scope_for(request, principal, surface_id, project_id)
        where = (Filter(field="app_id", value=app_id),) if app_id is not None else ()
        return await api.list(
            request,
            principal,
            scope,
            surface_id=requested(request, "surface_id", surface_id),
            project_id=requested(request, "project_id", project_id),
            where=where,
            cursor=cursor,
            limit=limit,
        )

    return router


def document_api(
    kind: EntityKind,
    view: str,
    put: type[PutEntity],
    delete: type[DeleteEntity],
    body: type[BaseModel],
) -> EntityApi:
    return EntityApi(
        kind=kind,
        view=view,
        put_type=put,
        delete_type=delete,
        body=body,
        base_path="/" + kind.domain,
    )


FLOWS_API = document_api(FLOWS, "flows", PutFlow, DeleteFlow, DocumentBody)
GRAPHS_API = document_api(GRAPHS, "graphs", PutGraph, DeleteGraph, DocumentBody)
OVERLAYS_API = document_api(OVERLAYS, "overlays", PutOverlay, DeleteOverlay, OverlayBody)

#: The command bus takes each kind's puts and deletes as its endpoints do.
FLOWS_ON_BUS = on_bus(FLOWS_API)
GRAPHS_ON_BUS = on_bus(GRAPHS_API)
OVERLAYS_ON_BUS = on_bus(OVERLAYS_API)

flows_router = document_router(FLOWS_API)
graphs_router = document_router(GRAPHS_API)
overlays_router = document_router(OVERLAYS_API, filter_by_app=True)
