"""How a spine event travels on the topic, and back.

A record's key is the event's stream id (so one stream's events stay in order on one
partition: the default partitioner hashes the key, as every Kafka client does), its
value the event as the spine stores it (:func:`spine.codec.encode`), and its header
``seq`` the event's seq. An event the relay could not read from the spine travels with
an empty value and an ``unreadable`` header saying why, so its consumers park it.
"""

from __future__ import annotations

from typing import Any, Final

from spine.appending import MAX_SEQ
from spine.codec import StoredFormError, encode, load
from spine.events import EventEnvelope
from spine.feed import Delivered, Unreadable

SEQ: Final = "seq"
UNREADABLE: Final = "unreadable"

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""Key, value and headers."""


def record_of(event: Delivered) -> Record:
    seq = [(SEQ, str(event.seq).encode())]
    if isinstance(event, Unreadable):
        return event.stream_id.encode(), b"", [*seq, (UNREADABLE, event.error.encode())]
    return event.stream_id.encode(), encode(event), seq


def domain_of_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    head, _, _ = key.partition(b"/")
    return head.decode("utf-8", "replace")


def delivered_of(key: bytes | None, value: bytes | None, headers: Any) -> Delivered | None:
    """The event a record carries; :class:`Unreadable` where it cannot be decoded;
    ``None`` for a record that names no stream and seq (not written by a relay)."""
    fields = dict(headers or ())
    try:
        stream_id = (key or b"").decode("utf-8")
        seq = int(fields[SEQ])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if not stream_id or not 1 <= seq <= MAX_SEQ:
        return None  # no store holds such a seq: not a spine event
    if UNREADABLE in fields:
        return Unreadable(stream_id, seq, bytes(fields[UNREADABLE]).decode("utf-8", "replace"))
    try:
        event: EventEnvelope = load(stream_id, seq, value or b"")
    except StoredFormError as exc:
        return Unreadable(stream_id, seq, str(exc))
    return event
