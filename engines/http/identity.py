"""Identity over HTTP: the bearer token becomes a principal (in the gate, before any
body is read: :mod:`engines.http.gate`), the request a scope
(:func:`engines.auth.resolve_scope`); every refusal is audited through the aggregating
:class:`engines.audit.RefusalAudit`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from engines.audit import Refusal, RefusalAudit, request_summary
from engines.auth import Principal, check_claimed, resolve_scope
from engines.http.errors import status_for
from spine.errors import IdentityError, ScopeMismatch, Unauthenticated
from spine.events import Scope

if TYPE_CHECKING:
    from engines.runtime import Runtime


def runtime_of(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


def refusals_of(app: Any) -> RefusalAudit:
    """The app's refusal audit, made on first use."""
    refusals: RefusalAudit | None = getattr(app.state, "refusals", None)
    if refusals is None:
        rt: Runtime = app.state.runtime
        refusals = RefusalAudit(rt.spine, rt.settings.mode, rt.settings.audit)
        app.state.refusals = refusals
    return refusals


#: Where a client may state (never decide) tenant, mode and user: headers, then query.
CLAIM_ALIASES: dict[str, tuple[tuple[str, ...], str]] = {
    "tenant_id": (("x-tenant-id",), "tenant_id"),
    "mode": (("x-mode", "x-engines-mode"), "mode"),
    "user_id": (("x-user-id",), "user_id"),
}


#: Query routes where the ``user_id`` parameter filters (an auditor names whose events to
#: read) rather than states the caller's own identity; ``X-User-Id`` still does.
USER_FILTER_PATHS = frozenset({"/events", "/audit", "/analytics/counts"})


def claimed_of(conn: HTTPConnection) -> dict[str, list[str]]:
    """Every value the client gives for tenant, mode and user, under every alias."""
    h, q = conn.headers, conn.query_params
    filters = conn.url.path in USER_FILTER_PATHS
    return {
        name: [v for header in headers for v in h.getlist(header)]
        + ([] if filters and name == "user_id" else q.getlist(param))
        for name, (headers, param) in CLAIM_ALIASES.items()
    }


async def deny(conn: HTTPConnection, exc: IdentityError, principal: Principal | None) -> None:
    """Record the refusal ``exc`` of this request (aggregated; see :mod:`engines.audit`)."""
    client = conn.scope.get("state", {}).get("client_address")
    await refusals_of(conn.app).refused(
        Refusal(
            status=status_for(exc),
            reason_code=type(exc).__name__,
            reason=str(exc),
            request=request_summary(
                method=conn.scope.get("method", ""),
                path=conn.url.path,
                client=client,
                claimed=claimed_of(conn),
            ),
            tenant_id=principal.tenant_id if principal else None,
            user_id=principal.user_id if principal else None,
            caller=principal.user_id if principal else client,
            source=principal.source if principal else "ui",
        )
    )


async def authenticate(conn: HTTPConnection) -> Principal:
    """The verified principal of a request whose stated tenant, mode and user agree with
    its token; refusals are recorded, then raised."""
    runtime = runtime_of(conn)
    principal: Principal | None = None
    try:
        scheme, _, token = (conn.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("an `Authorization: Bearer <token>` header is required")
        principal = runtime.verifier.verify(token.strip())
        check_claimed(principal, runtime.settings.mode, claimed_of(conn))
    except IdentityError as exc:
        known = principal or getattr(exc, "principal", None)
        await deny(conn, exc, known if isinstance(known, Principal) else None)
        raise
    return principal


_bearer = HTTPBearer(auto_error=False, description="a JWT: see README, Identity")


async def principal_of(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """The principal the gate verified (declares bearer auth in OpenAPI)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # a route served without the gate: refuse, never guess
        raise Unauthenticated("an `Authorization: Bearer <token>` header is required")
    return principal


Auth = Annotated[Principal, Depends(principal_of)]


def requested(conn: HTTPConnection, name: str, given: str | None) -> str | None:
    """The surface or project a request names (body or query ``given``, the
    ``X-Surface-Id`` / ``X-Project-Id`` header, repeated query parameters); naming two
    different ones is a contradiction, refused as such."""
    header = "x-" + name.replace("_", "-")
    values = {v for v in [given, *conn.headers.getlist(header)] if v is not None}
    values.update(conn.query_params.getlist(name))
    if len(values) > 1:
        raise ScopeMismatch(f"{name} is given as {sorted(values)}: name one")
    return values.pop() if values else None


async def scope_for(
    request: Request,
    principal: Principal,
    surface_id: str | None,
    project_id: str | None,
    *,
    require_surface: bool = False,
) -> Scope:
    """The request's scope (see :func:`engines.auth.resolve_scope`); refusals audited."""
    runtime = runtime_of(request)
    try:
        return resolve_scope(
            principal,
            runtime.settings.mode,
            claimed=claimed_of(request),
            surface_id=requested(request, "surface_id", surface_id),
            project_id=requested(request, "project_id", project_id),
            require_surface=require_surface,
        )
    except IdentityError as exc:
        await deny(request, exc, principal)
        raise
