"""The view of versioned entities (:mod:`spine.entities`), written once for every domain
built on them: the latest record of each entity, and (if the domain keeps one)
its version history, both in the domain's routed store.

* **latest**: keyed by the stream id (:func:`latest_key`), version = the seq of the last
  event applied; a delete leaves a tombstone (absent to reads and lists, its version
  kept).
* **history**: one record per event, keyed ``{stream_id}#v{seq}`` (``#`` is never part
  of a stream id), written once (version 1), never changed; a delete's entry says so.

Every record's data holds ``entry`` (``latest`` or ``version``), ``stream_id``, the
entity's path as named fields (``id``; ``project_id``, ``run_id``, ``key``...), the
body's fields, who wrote it and when; so lists filter on them and history pages by
``seq``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections.projector import provenance_of
from projections.views import QueryShape, ViewRecord, fitted_key
from spine.codec import timestamp_text
from spine.entities import EntityKind
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.streams import parse_stream_id

LATEST = "latest"
VERSION = "version"


def latest_key(stream_id: str) -> str:
    """The key of an entity's latest record: its stream id (fitted to a key's length)."""
    return fitted_key(stream_id)


def version_key(stream_id: str, seq: int) -> str:
    """The key of an entity's history entry for ``seq`` (fitted to a key's length)."""
    return fitted_key(f"{stream_id}#v{seq}")


class EntityProjector:
    """Projects one :class:`EntityKind`'s streams into its view."""

    def __init__(
        self,
        kind: EntityKind,
        *,
        name: str,
        resource_kind: str,
        history: bool = True,
    ) -> None:
        self.kind = kind
        self.name = name
        self.domains = frozenset({kind.domain})
        self.resource_kind = resource_kind
        self.shapes: tuple[QueryShape, ...] = ()
        self.path_fields = kind.path
        self.history = history

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return (latest_key(event.stream_id),)

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        kind, sid = self.kind, event.stream_id
        key = latest_key(sid)
        latest = records.get(key)
        at = timestamp_text(event.recorded_at)
        parts = parse_stream_id(sid).parts
        if len(parts) != len(self.path_fields):
            raise IntegrityError(
                f"{sid}: a {kind.entity} stream has {len(self.path_fields)} path parts "
                f"({', '.join(self.path_fields)}), not {len(parts)}"
            )
        common = {
            **dict(zip(self.path_fields, parts, strict=True)),
            "stream_id": sid,
            "user_id": event.user_id,
            "surface_id": event.surface_id,
            "project_id": event.project_id,
            "provenance": provenance_of(event),
        }
        out: list[ViewRecord] = []
        live = latest is not None and not latest.deleted
        if event.event_type in (kind.created, kind.updated):
            created = latest.data["created_at"] if live and latest is not None else at
            data = {**event.payload, **common, "entry": LATEST, "created_at": created}
            data["updated_at"] = at
            out.append(ViewRecord(key=key, scope=event.scope, version=event.seq, data=data))
        elif event.event_type == kind.deleted:
            if latest is None:
                raise IntegrityError(
                    f"{sid} seq {event.seq}: {event.event_type} comes before the "
                    f"{kind.entity} was created"
                )
            out.append(latest.model_copy(update={"version": event.seq, "deleted": True}))
        elif latest is not None:  # not ours to show: the version still moves
            out.append(latest.model_copy(update={"version": event.seq}))
        if self.history and event.event_type in (kind.created, kind.updated, kind.deleted):
            deleted = event.event_type == kind.deleted
            entry: dict[str, Any] = {
                **({} if deleted else event.payload),
                **common,
                "entry": VERSION,
                "seq": event.seq,
                "event_type": event.event_type,
                "deleted": deleted,
                "recorded_at": at,
            }
            out.append(
                ViewRecord(
                    key=version_key(sid, event.seq), scope=event.scope, version=1, data=entry
                )
            )
        return out
