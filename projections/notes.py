"""The notes view (``notes_store``): one record per note, keyed by its stream id."""

from __future__ import annotations

from typing import Any

from projections.views import ViewRecord
from spine.codec import timestamp_text, trusted
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.streams import parse_stream_id


class NotesProjector:
    name = "notes"
    domain = "notes"
    resource_kind = "notes_store"

    def view_key(self, stream_id: str) -> str:
        return stream_id

    def apply(self, view: ViewRecord | None, event: EventEnvelope) -> ViewRecord:
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
            return ViewRecord(key=event.stream_id, scope=event.scope, version=event.seq, data=data)
        if view is None:
            raise IntegrityError(f"{event.stream_id} seq {event.seq}: {event.event_type} first")
        if event.event_type == "note.updated":
            data = {**view.data, **event.payload, "updated_at": at}
            return self._next(view, event.seq, data=data)
        if event.event_type == "note.deleted":
            return self._next(view, event.seq, deleted=True)
        return self._next(view, event.seq)  # not ours to show

    @staticmethod
    def _next(view: ViewRecord, version: int, **changes: Any) -> ViewRecord:
        """``view`` at ``version`` with ``changes`` (all valid already)."""
        return trusted(ViewRecord, {**view.__dict__, "version": version, **changes})
