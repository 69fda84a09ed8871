"""How a spine event travels on the topic, and back.

A record's key is the event's stream id (so one stream's events stay in order on one
partition: the default partitioner hashes the key, as every Kafka client does), its
value the event as the spine stores it (:func:`spine.codec.encode`), and its header
``seq`` the event's seq. An event the relay could not read from the spine travels with
an empty value and an ``unreadable`` header saying why, so its consumers park it.

**Signed records.** With a record key (``connections.kafka.record_key_file``), the relay
adds a header ``sig``: HMAC-SHA256 under that key of the record's key, value, seq and
``unreadable`` text. A consumer with the key passes over (and logs) a record whose
signature is missing or wrong, so whoever may write to the topic without the key can
neither add an event to a view nor hold a stream back. Without a key, projectors trust
whatever is on the topic (its write access is the boundary).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

from spine.appending import MAX_SEQ
from spine.codec import StoredFormError, encode, load
from spine.events import EventEnvelope
from spine.feed import Delivered, Unreadable

SEQ: Final = "seq"
UNREADABLE: Final = "unreadable"
SIG: Final = "sig"

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""Key, value and headers."""


def signature(secret: bytes, key: bytes, value: bytes, seq: bytes, unreadable: bytes) -> bytes:
    """The ``sig`` header of a record: each part length-prefixed, so no two records'
    parts run together into the same text."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (key, value, seq, unreadable):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest().encode()


def record_of(event: Delivered, secret: bytes | None = None) -> Record:
    seq = str(event.seq).encode()
    key = event.stream_id.encode()
    if isinstance(event, Unreadable):
        value, why = b"", event.error.encode()
        headers = [(SEQ, seq), (UNREADABLE, why)]
    else:
        value, why = encode(event), b""
        headers = [(SEQ, seq)]
    if secret is not None:
        headers.append((SIG, signature(secret, key, value, seq, why)))
    return key, value, headers


def domain_of_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    head, _, _ = key.partition(b"/")
    return head.decode("utf-8", "replace")


class NotSpineEvent(ValueError):
    """A record no relay wrote: no stream or seq, a seq no store holds, or (with a
    record key) a signature missing or wrong."""


def delivered_of(
    key: bytes | None, value: bytes | None, headers: Any, secret: bytes | None = None
) -> Delivered:
    """The event a record carries; :class:`Unreadable` where it cannot be decoded.
    :class:`NotSpineEvent` for a record that is not a relay's (see the module's
    docstring)."""
    fields = {name: bytes(raw) for name, raw in (headers or ())}
    try:
        stream_id = (key or b"").decode("utf-8")
        seq = int(fields[SEQ])
    except (KeyError, ValueError, UnicodeDecodeError):
        raise NotSpineEvent("it names no stream and seq") from None
    if not stream_id or not 1 <= seq <= MAX_SEQ:
        raise NotSpineEvent("no store holds such a stream id or seq")
    if secret is not None:
        expected = signature(
            secret, key or b"", value or b"", fields[SEQ], fields.get(UNREADABLE, b"")
        )
        if not hmac.compare_digest(expected, fields.get(SIG, b"")):
            raise NotSpineEvent("its signature is missing or wrong")
    if UNREADABLE in fields:
        return Unreadable(stream_id, seq, fields[UNREADABLE].decode("utf-8", "replace"))
    try:
        event: EventEnvelope = load(stream_id, seq, value or b"")
    except StoredFormError as exc:
        return Unreadable(stream_id, seq, str(exc))
    return event
