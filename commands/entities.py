"""Versioned entities: what most domains share, written once (DESIGN §5).

An entity is one stream, ``{domain}/{tenant}/{mode}/{path...}``; its version is the
stream's version. A *put* creates it or replaces its body, a *delete* ends it (a
tombstone: the spine and the history keep every version). Each domain names its
:class:`EntityKind` (stream domain, event types, who may see it, what a put may do) and
declares its own command classes, subclasses of :class:`PutEntity` and
:class:`DeleteEntity`, so the command bus routes them to that domain's handler.

Who may see an entity (:func:`can_see`):

* ``owner``: the user who created it, within the surfaces and projects their token
  grants (flows, graphs, overlays);
* ``project``: everyone granted its project on some surface (the blackboard, strategy
  locks);
* ``surface``: everyone granted its surface (SEO config).

To anyone else an entity does not exist (404); roles (who may write a shared entity)
are checked at the edge, before a command is made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from commands.envelope import Command, granted
from spine.entities import Access, EntityKind
from spine.errors import AlreadyExists, ConcurrencyError, InvalidField, NotFound, ScopeMismatch
from spine.events import EventEnvelope, Identifier, NewEvent, Scope

Creation = Literal["must", "may", "never"]
"""What a put may do: ``must`` create (the entity may not exist: a POST, or
``If-None-Match: *``), ``may`` create or replace (an upsert), ``never`` create (it must
exist: an update)."""


class PutEntity(BaseModel):
    """Create an entity or replace its body. ``body`` is valid already: the domain's
    body model checked it at the edge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    body: dict[str, Any]
    create: Creation = "may"


class DeleteEntity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)


@dataclass(frozen=True)
class EntityState:
    version: int = 0
    live: bool = False
    ever: bool = False
    """Created at least once (a deleted entity's id stays taken unless ``recreate``)."""
    scope: Scope | None = None
    """The scope of its creation: its owner, surface and project."""
    digest: bytes = b""
    """A digest of its body as it stands."""
    fixed: tuple[Any, ...] = ()
    """The values of the kind's ``fixed`` fields, from its creation."""


def body_digest(body: Mapping[str, Any]) -> bytes:
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


def can_see(
    access: Access, scope: Scope, user_id: str | None, grants: Mapping[str, frozenset[str]] | None
) -> bool:
    """Whether a caller (``user_id`` with ``grants``; ``None``: unrestricted) may see an
    entity scoped ``scope`` under ``access``."""
    if access == "owner":
        if scope.user_id != user_id:
            return False
        return grants is None or granted(grants, scope)
    if grants is None:
        return True
    if access == "project":
        return scope.project_id is not None and any(scope.project_id in p for p in grants.values())
    return scope.surface_id is not None and scope.surface_id in grants


def may_create(access: Access, scope: Scope, grants: Mapping[str, frozenset[str]]) -> bool:
    """Whether a caller with ``grants`` may create an entity scoped ``scope``: within its
    surface and project (an owned or project-shared entity: :func:`commands.envelope.granted`),
    or, for a per-surface entity, on its surface whatever projects are granted there (it
    belongs to no project)."""
    if access == "surface":
        return scope.surface_id is not None and scope.surface_id in grants
    return granted(grants, scope)


class EntityDecider:
    """The pure decider of one :class:`EntityKind`."""

    def __init__(self, kind: EntityKind) -> None:
        self.kind = kind

    def stream_id(self, command: Command[Any]) -> str:
        path, names = command.payload.path, self.kind.path
        if len(path) != len(names):
            raise InvalidField(
                ("path",),
                f"a {self.kind.entity} is named by {', '.join(names)}: {len(names)} "
                f"parts, not {len(path)}",
            )
        return self.kind.stream_id(command.scope, path)

    def initial(self) -> EntityState:
        return EntityState()

    def evolve(self, state: EntityState, event: EventEnvelope) -> EntityState:
        kind = self.kind
        if event.event_type in (kind.created, kind.updated):
            digest = body_digest(event.payload)
            if not state.live:
                fixed = tuple(event.payload.get(name) for name in kind.fixed)
                return EntityState(event.seq, True, True, event.scope, digest, fixed)
            return replace(state, version=event.seq, digest=digest)
        if event.event_type == kind.deleted:
            return replace(state, version=event.seq, live=False)
        return replace(state, version=event.seq)

    def decide(self, state: EntityState, command: Command[Any]) -> Sequence[NewEvent]:
        kind, payload = self.kind, command.payload
        name = f"{kind.entity} {'/'.join(payload.path)!r}"
        for part in ("project_id", "surface_id"):
            # a project's (a surface's) stream holds only that project's records: who may
            # see them follows the project (surface) of their scope
            if part in kind.path:
                named = payload.path[kind.path.index(part)]
                if named != getattr(command.scope, part):
                    raise ScopeMismatch(
                        f"{name} is in {part.removesuffix('_id')} {named!r}; the command's "
                        f"scope is in {getattr(command.scope, part)!r}"
                    )
        seen = state.live and state.scope is not None and self._visible(state.scope, command)
        if isinstance(payload, PutEntity):
            if not seen:
                if state.live or payload.create == "never" or (state.ever and not kind.recreate):
                    # another's, absent, or deleted for good: all the same to the caller
                    raise NotFound(f"{name} not found")
                return [self._event(command, kind.created, payload.body, command.scope, True)]
            if payload.create == "must":
                raise ConcurrencyError(self.stream_id(command), f"no {kind.entity}", state.version)
            for field, value in zip(kind.fixed, state.fixed, strict=True):
                if payload.body.get(field) != value:
                    raise InvalidField(
                        ("body", field), f"{field} is {value!r}; it is set at creation for good"
                    )
            if kind.skip_unchanged and body_digest(payload.body) == state.digest:
                return []
            return [self._event(command, kind.updated, payload.body, self._scope(state, command))]
        if isinstance(payload, DeleteEntity):
            if kind.deleted is None:
                raise InvalidField(("path",), f"a {kind.entity} cannot be deleted")
            if not seen:
                raise NotFound(f"{name} not found")
            return [self._event(command, kind.deleted, {}, self._scope(state, command))]
        raise TypeError(f"{kind.domain} cannot handle {type(payload).__name__}")

    def _visible(self, scope: Scope, command: Command[Any]) -> bool:
        return can_see(self.kind.access, scope, command.scope.user_id, command.grants)

    def _scope(self, state: EntityState, command: Command[Any]) -> Scope:
        """The scope of a change: an owned entity's stays its owner's; a shared one's
        names the writer (on the entity's project)."""
        if self.kind.access == "owner" and state.scope is not None:
            return state.scope
        return command.scope

    def _event(
        self,
        command: Command[Any],
        event_type: str,
        body: dict[str, Any],
        scope: Scope,
        creating: bool = False,
    ) -> NewEvent:
        if creating:
            if scope.surface_id is None:
                raise InvalidField(
                    ("body", "surface_id"), f"a {self.kind.entity} needs a surface_id"
                )
            if command.grants is not None and not may_create(
                self.kind.access, scope, command.grants
            ):
                raise ScopeMismatch(
                    f"surface {scope.surface_id!r} and project {scope.project_id!r} are not "
                    "granted to the caller"
                )
        return command.event(event_type, body, scope=scope, family=self.kind.family)


def refuse_reused_key(result_events: Sequence[EventEnvelope], command: Command[PutEntity]) -> None:
    """A repeated request (its command id derived from an ``Idempotency-Key``) must be the
    same request: a key reused for another is refused rather than answered with what the
    first one made."""
    original = result_events[0] if result_events else None
    if original is None:
        return
    scope = command.scope
    if original.payload != command.payload.body or (
        original.surface_id,
        original.project_id,
    ) != (scope.surface_id, scope.project_id):
        raise AlreadyExists("this Idempotency-Key was used for a different request; use a new key")
