"""Access checks every router shares (DESIGN §5's access column, §7's roles), and the
route options a domain's endpoints honour. A refusal of identity is audited like every
other (:func:`engines.http.identity.deny`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from engines.auth import Principal, Role
from engines.http.identity import deny, runtime_of
from spine.errors import RoleRequired, ScopeMismatch

if TYPE_CHECKING:
    from routing.registry import Registry


def check_role(principal: Principal, role: Role) -> None:
    """Refuse (:class:`RoleRequired`, 403) unless the token grants ``role``; the caller
    audits the refusal (HTTP: :func:`require_role`; the bus: its worker)."""
    if role not in principal.roles:
        raise RoleRequired(
            f"this operation needs the {role!r} role, which the token does not grant"
        )


async def require_role(request: Request, principal: Principal, role: Role) -> None:
    """Refuse (403, audited) unless the token grants ``role``."""
    try:
        check_role(principal, role)
    except RoleRequired as exc:
        await deny(request, exc, principal)
        raise


def project_granted(principal: Principal, project_id: str | None) -> bool:
    """Whether the token grants ``project_id`` on any surface (the access of a domain
    shared by everyone granted a project: the blackboard, strategy locks)."""
    return project_id is not None and any(project_id in p for p in principal.grants.values())


def surface_granted(principal: Principal, surface_id: str | None) -> bool:
    """Whether the token grants ``surface_id`` (the access of a per-surface record)."""
    return surface_id is not None and surface_id in principal.grants


def route_option(request: Request, kind: str, name: str) -> int | None:
    """The route option ``name`` of the route serving ``kind`` (``None``: not set)."""
    return route_option_of(runtime_of(request).registry, kind, name)


def route_option_of(registry: Registry, kind: str, name: str) -> int | None:
    """The route option ``name`` of ``registry``'s route serving ``kind`` (``None``: not
    set)."""
    value: int | None = getattr(registry.resolve(kind).route.options, name)
    return value


def one_place(name: str, stated: str | None, named: str) -> str:
    """The surface or project (``name``) of a write whose target names ``named`` (a
    URL's path, a command's payload), where the caller also ``stated`` one: naming two
    different ones is a contradiction, refused as such (as
    :func:`engines.http.identity.requested` refuses two)."""
    if stated is not None and stated != named:
        raise ScopeMismatch(f"{name} is given as {sorted({stated, named})}: name one")
    return named
