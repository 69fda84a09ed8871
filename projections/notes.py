"""The notes view (``notes_store``): one record per note, keyed by its stream id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections.views import QueryShape, ViewRecord
from spine.codec import timestamp_text, trusted
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.streams import parse_stream_id


class NotesProjector:
    name = "notes"
    domains = frozenset({"notes"})
    resource_kind = "notes_store"
    shapes: tuple[QueryShape, ...] = ()

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return (event.stream_id,)

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        view = records.get(event.stream_id)
        at = timestamp_text(event.recorded_at)
        if event.event_type == "note.created":
            data: dict[str, Any] = {
                **event.payload,
                "note_id": parse_stream_id(event.stream_id).parts[0],
                "user_id": event.user_id,
                "surface_id": event.surface_id,
                "project_id": event.project_id,
                "created_at": at,
                "updated_at": at,
            }
            record = ViewRecord(
                key=event.stream_id, scope=event.scope, version=event.seq, data=data
            )
            return (record,)
        if view is None:
            raise IntegrityError(
                f"{event.stream_id} seq {event.seq}: {event.event_type} comes before the "
                "note's note.created (the stream does not begin with a creation)"
            )
        # the next version of the record: its fields as they are, and the changes (all
        # valid already), in one dict
        if event.event_type == "note.updated":
            data = {**view.data, **event.payload, "updated_at": at}
            return (trusted(ViewRecord, {**view.__dict__, "version": event.seq, "data": data}),)
        if event.event_type == "note.deleted":
            return (trusted(ViewRecord, {**view.__dict__, "version": event.seq, "deleted": True}),)
        # not ours to show: the version still moves
        return (trusted(ViewRecord, {**view.__dict__, "version": event.seq}),)
