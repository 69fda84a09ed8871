"""What every backend module shares: decoding the stored envelopes it reads back, and
the tenant a stream id names."""

from __future__ import annotations

from collections.abc import Sequence

from spine.codec import StoredFormError, load, load_many
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.feed import Unreadable


def decode_rows(
    rows: Sequence[tuple[str, int, bytes | str]],
) -> list[EventEnvelope | Unreadable]:
    """Load ``(stream_id, seq, body)`` rows (bodies as bytes or text); a body that does
    not load becomes :class:`Unreadable` rather than failing the rest."""
    try:
        return list(load_many(rows))
    except StoredFormError:
        pass
    out: list[EventEnvelope | Unreadable] = []
    for stream_id, seq, body in rows:
        try:
            event = load(stream_id, seq, body)
        except StoredFormError as exc:
            out.append(Unreadable(stream_id, seq, str(exc)))
            continue
        out.append(event)
    return out


def decode_strict(rows: Sequence[tuple[str, int, bytes | str]]) -> list[EventEnvelope]:
    """Decode rows for a reader that needs every event: the first one that does not
    decode raises :class:`IntegrityError` naming it."""
    events: list[EventEnvelope] = []
    for event in decode_rows(rows):
        if isinstance(event, Unreadable):
            raise IntegrityError(f"{event.stream_id} seq {event.seq}: {event.error}")
        events.append(event)
    return events


def stream_tenant(stream_id: str) -> str | None:
    """The tenant a stream id names: its second segment (DESIGN §3: a stream id begins
    with its domain, tenant and mode); ``None`` for an id of one segment."""
    parts = stream_id.split("/", 2)
    return parts[1] if len(parts) > 1 else None
