"""orjson encoding of envelopes, and the canonical form the hash chain covers.

The canonical form of an event is the sorted-key JSON of every envelope field but
``hash``, with one rule for fields added to the envelope after events were first stored
(:data:`ADDED_LATER`): such a field is left out while it is ``None``. So an event stored
before the field existed hashes as it always did and still verifies, and an event that
sets the field has it covered by the chain like any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter

from spine.errors import IntegrityError, InvalidAppend
from spine.events import GENESIS_HASH, EventEnvelope, NewEvent

_ENVELOPES: TypeAdapter[list[EventEnvelope]] = TypeAdapter(list[EventEnvelope])

#: Envelope fields added after events were first stored: left out of the canonical (and
#: stored) form while ``None``. Every field added to the envelope from now on joins this.
ADDED_LATER: Final = frozenset({"agent_id"})


def _fields(event: NewEvent) -> dict[str, Any]:
    """The event's fields as JSON values, without the later fields that are ``None``."""
    fields = event.model_dump(mode="json")
    for name in ADDED_LATER:
        if fields.get(name, 0) is None:
            del fields[name]
    return fields


def encode(event: EventEnvelope) -> bytes:
    """The stored form of an envelope."""
    return orjson.dumps(_fields(event))


def decode(body: bytes | str) -> EventEnvelope:
    return EventEnvelope.model_validate_json(body)


def decode_many(bodies: Sequence[bytes | str]) -> list[EventEnvelope]:
    """Decode many stored envelopes in one call into pydantic-core (much faster than one
    call per event)."""
    if not bodies:
        return []
    parts = [b if isinstance(b, bytes) else b.encode() for b in bodies]
    return _ENVELOPES.validate_json(b"[" + b",".join(parts) + b"]")


def timestamp_text(value: datetime) -> str:
    """The one text form of a timestamp inside the hash chain (UTC, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _canonical(fields: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # e.g. an integer wider than 64 bits
        raise InvalidAppend(f"event payload cannot be encoded: {exc}") from exc


def seal(
    event: NewEvent,
    *,
    stream_id: str,
    seq: int,
    prev_hash: str,
    recorded_at: datetime,
    recorded_text: str | None = None,
) -> tuple[EventEnvelope, bytes]:
    """Number and chain one event; return the envelope and its stored bytes.

    The hash covers every field of the envelope except ``hash`` itself, in canonical
    (sorted-key) JSON (see the module's rule for fields added later), so it chains to
    ``prev_hash`` and detects any later edit. ``recorded_text`` is
    ``timestamp_text(recorded_at)``, if the caller has it already.
    """
    fields = _fields(event)
    fields.update(
        stream_id=stream_id,
        seq=seq,
        route="event_spine",
        recorded_at=recorded_text or timestamp_text(recorded_at),
        prev_hash=prev_hash,
    )
    canonical = _canonical(fields)
    digest = hashlib.sha256(canonical).hexdigest()
    body = canonical[:-1] + b',"hash":"' + digest.encode() + b'"}'
    values = dict(event.__dict__)
    values.update(
        stream_id=stream_id,
        seq=seq,
        route="event_spine",
        recorded_at=recorded_at,
        prev_hash=prev_hash,
        hash=digest,
    )
    return trusted(EventEnvelope, values), body


M = TypeVar("M", bound=BaseModel)
_FIELD_NAMES: dict[type[BaseModel], frozenset[str]] = {}


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """An instance built from values that are valid already (they come from a validated
    model or from our own store), with every field given: what ``model_construct`` does,
    minus its per-field Python loop, which dominated appends and projection."""
    names = _FIELD_NAMES.get(model)
    if names is None:
        names = _FIELD_NAMES[model] = frozenset(model.model_fields)
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(names))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


def expected_hash(event: EventEnvelope) -> str:
    fields = _fields(event)
    del fields["hash"]
    fields["recorded_at"] = timestamp_text(event.recorded_at)
    return hashlib.sha256(_canonical(fields)).hexdigest()


def verify_chain(events: Iterable[EventEnvelope], *, prev_hash: str = GENESIS_HASH) -> int:
    """Check a stream's events (read raw, not upcast) against their hash chain.

    Returns the number of events checked; raises :class:`IntegrityError` naming the
    first event that does not verify.
    """
    count = 0
    expected_seq: int | None = None
    for event in events:
        if expected_seq is not None and event.seq != expected_seq:
            raise IntegrityError(f"{event.stream_id}: seq {event.seq} follows {expected_seq - 1}")
        if event.prev_hash != prev_hash:
            raise IntegrityError(f"{event.stream_id} seq {event.seq}: prev_hash does not chain")
        if expected_hash(event) != event.hash:
            raise IntegrityError(f"{event.stream_id} seq {event.seq}: hash does not match")
        prev_hash = event.hash
        expected_seq = event.seq + 1
        count += 1
    return count
