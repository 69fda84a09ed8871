"""What a kind of versioned entity is (``commands.entities`` decides over its streams,
``projections.entities`` projects them): pure data, shared by the decider and the
projector of every domain built on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from spine.events import Family, Scope
from spine.streams import stream_id

Access = Literal["owner", "project", "surface"]
"""Who may see an entity: its creator (within their grants), everyone granted its
project, or everyone granted its surface."""


@dataclass(frozen=True)
class EntityKind:
    """One domain's entities."""

    domain: str
    """The first segment of its stream ids."""
    entity: str
    """What one is called, in messages (``flow``, ``blackboard key``)."""
    path: tuple[str, ...]
    """The names of its stream id's parts after tenant and mode (``("id",)``,
    ``("project_id", "run_id", "key")``): fields of every record of its view."""
    created: str
    """The event type of a put that creates the entity."""
    updated: str
    """The event type of a put that replaces its body."""
    deleted: str | None = None
    """The event type of a delete; ``None``: it cannot be deleted (append-only)."""
    access: Access = "owner"
    family: Family = "domain"
    recreate: bool = False
    """A put may create it again after a delete (keyed entities: a blackboard key); else a
    deleted entity stays gone (its id is never reused)."""
    skip_unchanged: bool = True
    """A put of the body it has already appends nothing (else every put is recorded: a
    snapshot is an act, even of the same state)."""
    fixed: tuple[str, ...] = ()
    """Body fields set at creation that no later put may change (an overlay's app_id)."""

    def stream_id(self, scope: Scope, path: Sequence[str]) -> str:
        return stream_id(self.domain, scope.tenant_id, scope.mode, *path)
