"""SEO config over HTTP: put a surface's config (``admin``), read it as it stands or
at a given version, page its versions. Thin: parse, check the role and the surface, and
leave the rest to :class:`engines.http.entities.EntityApi`.

A config is answered exactly as it was put: the fields given, and no others (none is
defaulted, none shown as ``null``). A surface with no config answers 404.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint's
annotations at run time.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from commands.seo_config import SEO_CONFIG, PutSeoConfig, SeoConfigBody
from engines.auth import Principal
from engines.http.access import one_place, require_role
from engines.http.entities import EntityApi, on_bus
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.writes import IfMatch, IfNoneMatch
from spine.events import Identifier, Provenance, Scope

SEO_CONFIG_API = EntityApi(
    kind=SEO_CONFIG,
    view="seo_config",
    put_type=PutSeoConfig,
    delete_type=None,
    body=SeoConfigBody,
    base_path="/seo-config",
    sparse=True,
    as_given=True,
)

Cursor = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int, Query(ge=1, le=200)]
Version = Annotated[int | None, Query(ge=1, le=2**62, description="a past version")]

Out = SEO_CONFIG_API.out_model()
VersionOut = SEO_CONFIG_API.version_model()


class SeoConfigIn(SeoConfigBody):
    """The whole config (what it leaves out is not kept), and optionally provenance."""

    provenance: Provenance | None = None


class SeoConfigHistory(BaseModel):
    items: list[VersionOut]  # type: ignore[valid-type]
    next_cursor: str | None


class SeoConfigAccepted(BaseModel):
    surface_id: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


router = APIRouter(tags=["SEO config"], route_class=StrictJsonRoute)


def _config_place(
    payload: PutSeoConfig, principal: Principal, surface: str | None, project: str | None
) -> tuple[str | None, str | None]:
    """A config sent on the command bus is put on its path's surface."""
    del principal
    return one_place("surface_id", surface, payload.path[0]), project


async def _surface_scope(request: Request, principal: Principal, surface_id: str) -> Scope:
    """The scope of a request on ``surface_id``, which the token must grant (403,
    audited, otherwise). A config belongs to the surface, not to a project."""
    return surface_scope(await scope_for(request, principal, surface_id, None))


def surface_scope(scope: Scope) -> Scope:
    """The scope a config is kept in: its surface's, in no project."""
    return scope.model_copy(update={"project_id": None})


#: The command bus takes configs as ``put`` does.
ON_BUS = on_bus(
    SEO_CONFIG_API,
    role="admin",
    place=_config_place,
    require_surface=False,  # the place names the path's surface; a config has no project
    scoped=surface_scope,
)


@router.put(
    "/seo-config/{surface_id}",
    response_model=Out,
    status_code=200,
    responses={
        201: {"model": Out, "description": "Created"},
        202: {"model": SeoConfigAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 412, 415),
    },
    summary="Put a surface's SEO config",
)
async def put(
    request: Request,
    surface_id: Identifier,
    body: SeoConfigIn,
    principal: Auth,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Needs the ``admin`` role and the surface granted (403 otherwise, and nothing is
    written). Creates the config (201) or replaces it whole (200); the same config again
    changes nothing. ``If-Match: "N"`` replaces version N only (412 otherwise; 404 if
    there is none); ``If-None-Match: *`` creates only (412 if there is one)."""
    await require_role(request, principal, "admin")
    scope = await _surface_scope(request, principal, surface_id)
    return await SEO_CONFIG_API.put(
        request,
        principal,
        scope,
        (surface_id,),
        SEO_CONFIG_API.stored(body),
        create="may",
        if_match=if_match,
        if_none_match=if_none_match,
        provenance=body.provenance,
    )


@router.get(
    "/seo-config/{surface_id}/history",
    response_model=SeoConfigHistory,
    response_model_exclude_unset=True,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="Every version of a surface's SEO config, oldest first",
)
async def history(
    request: Request,
    surface_id: Identifier,
    principal: Auth,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Readable by everyone granted the surface."""
    scope = await _surface_scope(request, principal, surface_id)
    return await SEO_CONFIG_API.history(request, principal, scope, (surface_id,), cursor, limit)


@router.get(
    "/seo-config/{surface_id}",
    response_model=Out | VersionOut,
    responses=problem_responses(*AUTHENTICATED, 404),
    summary="A surface's SEO config: as it stands, or a given version",
)
async def read(
    request: Request, surface_id: Identifier, principal: Auth, version: Version = None
) -> Response:
    """Readable by everyone granted the surface; 404 if it has none (no defaults are
    made up). ``?version=N`` reads version N as it was put."""
    scope = await _surface_scope(request, principal, surface_id)
    return await SEO_CONFIG_API.read(request, principal, scope, (surface_id,), version)
