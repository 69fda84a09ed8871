"""What the SQLite modules share: quoting, and decoding stored envelopes."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from spine.codec import decode, decode_many
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.feed import Unreadable


def q(name: str) -> str:
    """Quote a physical name (already validated by the routes schema)."""
    return '"' + name.replace('"', '""') + '"'


def decode_rows(rows: Sequence[tuple[str, int, bytes]]) -> list[EventEnvelope | Unreadable]:
    """Decode ``(stream_id, seq, body)`` rows; a body that does not decode becomes
    :class:`Unreadable` rather than failing the rest."""
    try:
        return list(decode_many([row[2] for row in rows]))
    except (ValidationError, ValueError):
        pass
    out: list[EventEnvelope | Unreadable] = []
    for stream_id, seq, body in rows:
        try:
            event = decode(body)
        except (ValidationError, ValueError) as exc:
            out.append(
                Unreadable(stream_id, seq, f"stored event cannot be decoded: {_first_line(exc)}")
            )
            continue
        out.append(event)
    return out


def decode_strict(rows: Sequence[tuple[str, int, bytes]]) -> list[EventEnvelope]:
    """Decode rows for a reader that needs every event: the first one that does not
    decode raises :class:`IntegrityError` naming it."""
    events: list[EventEnvelope] = []
    for event in decode_rows(rows):
        if isinstance(event, Unreadable):
            raise IntegrityError(
                f"{event.stream_id} seq {event.seq}: stored event cannot be decoded: {event.error}"
            )
        events.append(event)
    return events


class UnreadableEvent(IntegrityError):
    """A stored event that a reader needs cannot be decoded."""

    def __init__(self, event: Unreadable) -> None:
        self.event = event
        super().__init__(f"{event.stream_id} seq {event.seq}: {event.error}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[:3])[:500] if text else type(exc).__name__
