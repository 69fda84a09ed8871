"""Access checks every router shares (DESIGN §5's access column, §7's roles), and the
route options a domain's endpoints honour. A refusal of identity is audited like every
other (:func:`engines.http.identity.deny`)."""

from __future__ import annotations

from fastapi import Request

from engines.auth import Principal, Role
from engines.http.identity import deny, runtime_of
from spine.errors import RoleRequired


async def require_role(request: Request, principal: Principal, role: Role) -> None:
    """Refuse (403, audited) unless the token grants ``role``."""
    if role in principal.roles:
        return
    exc = RoleRequired(f"this operation needs the {role!r} role, which the token does not grant")
    await deny(request, exc, principal)
    raise exc


def project_granted(principal: Principal, project_id: str | None) -> bool:
    """Whether the token grants ``project_id`` on any surface (the access of a domain
    shared by everyone granted a project: the blackboard, strategy locks)."""
    return project_id is not None and any(project_id in p for p in principal.grants.values())


def surface_granted(principal: Principal, surface_id: str | None) -> bool:
    """Whether the token grants ``surface_id`` (the access of a per-surface record)."""
    return surface_id is not None and surface_id in principal.grants


def route_option(request: Request, kind: str, name: str) -> int | None:
    """The route option ``name`` of the route serving ``kind`` (``None``: not set)."""
    value: int | None = getattr(runtime_of(request).registry.resolve(kind).route.options, name)
    return value
