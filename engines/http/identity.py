"""Identity over HTTP: the bearer token becomes a principal, the request a scope
(:func:`engines.auth.resolve_scope`); every refusal is audited on the spine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from engines.audit import record_access_denied
from engines.auth import Principal, resolve_scope
from engines.http.errors import status_for
from spine.errors import IdentityError, ScopeMismatch, Unauthenticated
from spine.events import Scope

if TYPE_CHECKING:
    from engines.runtime import Runtime


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
