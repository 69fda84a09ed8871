"""orjson encoding of envelopes: the canonical form the hash chain covers, and the
stored form.

The canonical form of an event is the sorted-key JSON of every envelope field but
``hash``, with one rule for fields added to the envelope after events were first stored
(:data:`ADDED_LATER`): such a field is left out while it is ``None``. So an event stored
before the field existed hashes as it always did and still verifies, and an event that
sets the field has it covered by the chain like any other.

The stored form is what a store keeps as an event's body: the canonical fields and the
hash, without what every store keys the event by anyway (``stream_id``, ``seq``), the
constant ``route``, and the fields that are ``None`` (absent means absent). It is about
a fifth smaller than the canonical form, and every byte of it is written to the log,
the table and each reader. Bodies written before this form (every field present) read
the same.

Bodies read back from our own store are *loaded* (:func:`load`): trusted, so built
without pydantic's per-field validation, which cost more than the JSON parse on every
read and every projected event; only their shape is checked. Anything from outside
(an import, a file) is *decoded* (:func:`decode`), fully validated.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel

from spine.errors import IntegrityError, InvalidAppend
from spine.events import GENESIS_HASH, EventEnvelope, NewEvent

#: Envelope fields added after events were first stored: left out of the canonical (and
#: stored) form while ``None``. Every field added to the envelope from now on joins this.
ADDED_LATER: Final = frozenset({"agent_id", "occurred_at"})
#: What a store keys an event by: kept beside the stored form, not in it.
KEYED: Final = frozenset({"stream_id", "seq"})
_CONSTANT: Final = {"route": "event_spine"}
_LEFT_OUT: Final = KEYED | _CONSTANT.keys()

_FIELDS: Final = frozenset(EventEnvelope.model_fields)
#: The fields a stored form may leave out because they are ``None``.
_ABSENT: Final = {
    name: None
    for name, info in EventEnvelope.model_fields.items()
    if not info.is_required() and info.default is None
}


_FIELD_COUNT: Final = len(_FIELDS)
_from_iso = datetime.fromisoformat


class StoredFormError(ValueError):
    """A stored body that is not an envelope in stored form."""


def _fields(event: NewEvent) -> dict[str, Any]:
    """The event's fields (JSON values already, but for ``recorded_at``), without the later
    fields that are ``None``."""
    fields = dict(event.__dict__)
    for name in ADDED_LATER:
        if fields.get(name, 0) is None:
            del fields[name]
    return fields


def _stored(fields: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in fields.items() if v is not None and k not in _LEFT_OUT})


def encode(event: EventEnvelope) -> bytes:
    """The stored form of an envelope."""
    fields = _fields(event)
    fields["recorded_at"] = timestamp_text(event.recorded_at)
    return _stored(fields)


def load(stream_id: str, seq: int, body: bytes | str) -> EventEnvelope:
    """The envelope stored as ``body`` under ``stream_id`` and ``seq``, from our own store:
    trusted, so only its shape is checked (:class:`StoredFormError` if it is not one).

    Every read and every projected event comes through here: it is written for speed.
    """
    try:
        values = orjson.loads(body)
        values["recorded_at"] = _from_iso(values["recorded_at"])
    except (ValueError, TypeError, KeyError) as exc:
        raise StoredFormError(f"stored event cannot be decoded: {exc!r}"[:500]) from exc
    values["stream_id"] = stream_id
    values["seq"] = seq
    values["route"] = "event_spine"
    if len(values) != _FIELD_COUNT:
        values = _ABSENT | values
        if values.keys() != _FIELDS:
            unknown = sorted(values.keys() - _FIELDS)
            missing = sorted(_FIELDS - values.keys())
            raise StoredFormError(
                f"stored event cannot be decoded: not an envelope (unknown fields "
                f"{unknown[:5]}, missing {missing})"
            )
    if type(values["payload"]) is not dict:
        raise StoredFormError("stored event cannot be decoded: its payload is not an object")
    return trusted(EventEnvelope, values)


def load_many(rows: Iterable[tuple[str, int, bytes | str]]) -> list[EventEnvelope]:
    """:func:`load` every ``(stream_id, seq, body)`` row."""
    return [load(stream_id, seq, body) for stream_id, seq, body in rows]


def decode(
    body: bytes | str, *, stream_id: str | None = None, seq: int | None = None
) -> EventEnvelope:
    """An envelope from outside, in stored or canonical form, fully validated
    (``stream_id`` and ``seq`` fill in a stored form's keys)."""
    values = orjson.loads(body)
    if isinstance(values, dict):
        keys = {"stream_id": stream_id, "seq": seq}
        values = {**{k: v for k, v in keys.items() if v is not None}, **_CONSTANT, **values}
    return EventEnvelope.model_validate(values)


@functools.lru_cache(maxsize=4096)
def timestamp_text(value: datetime) -> str:
    """The one text form of a timestamp inside the hash chain (UTC, microseconds).

    Remembered: the events of one group commit share their time, and formatting it was a
    fifth of a projector's own work an event."""
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
    """Number and chain one event; return the envelope and its stored form.

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
    fields["hash"] = digest
    body = _stored(fields)
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


def seal_after(
    events: Iterable[NewEvent],
    *,
    stream_id: str,
    head: int,
    prev_hash: str,
    recorded_at: datetime,
) -> list[tuple[EventEnvelope, bytes]]:
    """Seal ``events`` as the next seqs of a stream at version ``head`` whose last hash is
    ``prev_hash``, each chained to the one before, all recorded at ``recorded_at``: what
    every event store appends. Each with its stored form."""
    recorded_text = timestamp_text(recorded_at)
    out: list[tuple[EventEnvelope, bytes]] = []
    for offset, event in enumerate(events, start=1):
        envelope, body = seal(
            event,
            stream_id=stream_id,
            seq=head + offset,
            prev_hash=prev_hash,
            recorded_at=recorded_at,
            recorded_text=recorded_text,
        )
        prev_hash = envelope.hash
        out.append((envelope, body))
    return out


M = TypeVar("M", bound=BaseModel)
_FIELD_SETS: dict[type[BaseModel], set[str]] = {}


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """An instance built from values that are valid already (they come from a validated
    model or from our own store), with every field given: what ``model_construct`` does,
    minus its per-field Python loop, which dominated appends and projection."""
    names = _FIELD_SETS.get(model)
    if names is None:
        names = _FIELD_SETS[model] = set(model.model_fields)
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    # One set per model, shared: it holds every field, so marking a field set changes
    # nothing, and pydantic copies it before a model_copy adds to it.
    object.__setattr__(instance, "__pydantic_fields_set__", names)
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
