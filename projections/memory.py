"""The session memory view (``memory_store``): one record per key of a session.

A record's key is :func:`record_key` (the session's stream id, ``#``, the memory key),
its version the seq of the event that last set or deleted the key, and its
``expires_at`` the expiry of that event (:func:`spine.events.expiry`: counted from
the event's recorded time), so a rebuild from the spine gives every record the expiry
it had, and a key that has expired stays absent. A delete leaves a tombstone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from projections.projector import provenance_of
from projections.views import QueryShape, ViewRecord, fitted_key
from spine.codec import timestamp_text, trusted
from spine.events import EventEnvelope, expiry
from spine.streams import parse_stream_id

DOMAIN: Final = "memory"
SET: Final = "memory.set"
DELETED: Final = "memory.deleted"


def record_key(stream_id: str, key: str) -> str:
    """The view record of ``key`` in the session ``stream_id``: ``{stream_id}#{key}``
    (``#`` is in no identifier, so this never collides), fitted to a record key's length
    (:func:`projections.views.fitted_key`)."""
    return fitted_key(f"{stream_id}#{key}")


class MemoryProjector:
    name = "memory"
    domains = frozenset({DOMAIN})
    resource_kind = "memory_store"
    shapes: tuple[QueryShape, ...] = ()

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        key = event.payload.get("key")
        return (record_key(event.stream_id, key),) if isinstance(key, str) else ()

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        if event.event_type not in (SET, DELETED):
            return ()  # not ours to show
        key: str = event.payload["key"]
        rkey = record_key(event.stream_id, key)
        prior = records.get(rkey)
        at = timestamp_text(event.recorded_at)
        if event.event_type == DELETED:
            if prior is not None:
                return (
                    trusted(ViewRecord, {**prior.__dict__, "version": event.seq, "deleted": True}),
                )
            data = self._data(event, key, created_at=at)
            return (
                ViewRecord(key=rkey, scope=event.scope, version=event.seq, data=data, deleted=True),
            )
        # the same life of the key goes on if it was live when this event was recorded
        continues = (
            prior is not None
            and not prior.deleted
            and (prior.expires_at is None or prior.expires_at > event.recorded_at)
        )
        created_at = prior.data["created_at"] if continues and prior else at
        ttl = event.payload.get("ttl_seconds")
        record = ViewRecord(
            key=rkey,
            scope=event.scope,
            version=event.seq,
            data=self._data(event, key, created_at=created_at, value=event.payload["value"]),
            expires_at=expiry(event.recorded_at, ttl),
        )
        return (record,)

    @staticmethod
    def _data(
        event: EventEnvelope, key: str, *, created_at: str, value: Any = None
    ) -> dict[str, Any]:
        return {
            "session_id": parse_stream_id(event.stream_id).parts[1],
            "key": key,
            "value": value,
            "ttl_seconds": event.payload.get("ttl_seconds"),
            "stream_id": event.stream_id,
            "user_id": event.user_id,
            "surface_id": event.surface_id,
            "project_id": event.project_id,
            "provenance": provenance_of(event),
            "created_at": created_at,
            "updated_at": timestamp_text(event.recorded_at),
        }
