"""The command envelope: who asks, on whose behalf, what for, against which version."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Generic, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from spine.codec import trusted
from spine.events import (
    EventEnvelope,
    EventType,
    Family,
    Identifier,
    NewEvent,
    Provenance,
    Scope,
    Source,
    new_id,
)

P = TypeVar("P", bound=BaseModel)

_EVENT_TYPE: TypeAdapter[str] = TypeAdapter(EventType)
_EVENT_TYPES: set[str] = set()
"""The event types seen valid already."""
_FAMILIES: frozenset[str] = frozenset(get_args(Family))

Grants = Mapping[str, frozenset[str]]
"""What a caller may act in: each granted surface, with the projects granted on it."""


def granted(grants: Grants, scope: Scope) -> bool:
    """Whether a record scoped ``scope`` lies within ``grants``: its surface is granted,
    and its project is one granted there; a record with no project only where the
    surface is granted with no projects (the rule of ``projections.views.Grant``)."""
    if scope.surface_id is None or scope.surface_id not in grants:
        return False
    projects = grants[scope.surface_id]
    return scope.project_id in projects if projects else scope.project_id is None


def idempotent_id(scope: Scope, domain: str, key: str, *within: str) -> str:
    """An id derived from an ``Idempotency-Key``: per tenant, mode, user and ``domain``
    (and ``within``, e.g. one budget), so a retried request names the same entity and
    the same command, and the spine answers it with the original result."""
    name = "/".join((scope.tenant_id, scope.mode, *within, str(scope.user_id), key))
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"engines:{domain}:{name}"))


class Command(BaseModel, Generic[P]):
    """A request to change one stream. ``scope``, ``source`` and ``grants`` are
    server-derived (a verified token and the server's mode), never a client's claim;
    ``provenance`` is what the client says of its agent, run, step and trace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    scope: Scope
    expected_version: int | None = Field(default=None, ge=0)
    """The stream version the caller last saw (e.g. HTTP If-Match; 0 for If-None-Match:
    ``*``); ``None``: the current version, retried on a concurrent write."""
    source: Source = "ui"
    """The kind of principal asking (a user's request is ``ui``)."""
    provenance: Provenance = Provenance()
    grants: dict[Identifier, frozenset[Identifier]] | None = None
    """The surfaces and projects the caller may act in; a record outside them does not
    exist for this command. ``None``: unrestricted (operator tools, trusted internal
    callers)."""
    payload: P

    def event(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        scope: Scope | None = None,
        family: Family = "domain",
        occurred_at: str | None = None,
        provenance: Provenance | None = None,
    ) -> NewEvent:
        """An event produced by this command, carrying its scope and provenance as given
        (absent provenance stays absent), in ``family`` (DESIGN §3: ``budget`` events are
        their own family; most domains' are ``domain``). ``occurred_at``: the client's time
        of the event, a :data:`spine.events.Timestamp` validated by the caller;
        ``provenance``: this event's own, in place of the command's."""
        s = scope or self.scope
        if event_type not in _EVENT_TYPES:  # a decider's constant: checked once
            _EVENT_TYPE.validate_python(event_type)
            _EVENT_TYPES.add(event_type)
        if family not in _FAMILIES:
            raise ValueError(f"{family!r} is not an event family: one of {sorted(_FAMILIES)}")
        if type(payload) is not dict:
            raise TypeError(f"an event payload is a dict, not {type(payload).__name__}")
        # Every other value comes from this command, validated when it was made.
        return trusted(
            NewEvent,
            {
                "event_id": new_id(),
                "event_type": event_type,
                "family": family,
                "schema_version": 1,
                "tenant_id": s.tenant_id,
                "mode": s.mode,
                "user_id": s.user_id,
                "surface_id": s.surface_id,
                "project_id": s.project_id,
                **(provenance or self.provenance).__dict__,
                "occurred_at": occurred_at,
                "source": self.source,
                "command_id": self.command_id,
                "payload": payload,
            },
        )


class CommandResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream_id: str
    version: int
    events: tuple[EventEnvelope, ...]
    deduplicated: bool = False
