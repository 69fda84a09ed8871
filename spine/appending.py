"""The rules every backend applies to an append before it writes, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from spine.codec import trusted
from spine.errors import ConcurrencyError, InvalidAppend, InvalidInput
from spine.events import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventEnvelope,
    ExpectedVersion,
    NewEvent,
    StreamState,
)
from spine.streams import parse_stream_id

#: How deeply a payload may nest. Every reader must be able to decode what is stored
#: (pydantic-core refuses JSON nested deeper than 200), so the limit sits well below.
MAX_PAYLOAD_DEPTH: Final = 64
#: The highest seq any stream may reach; every backend stores it as a signed 64-bit int.
MAX_SEQ: Final = 2**62


def too_deep(value: Any, limit: int = MAX_PAYLOAD_DEPTH) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (only containers are visited)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return False


def validate_append(
    stream_id: str,
    events: Iterable[NewEvent],
    expected_version: ExpectedVersion,
    *,
    max_events: int | None = None,
) -> tuple[str, tuple[NewEvent, ...]]:
    """Check an append request; return its command id and its events. Raises
    :class:`~spine.errors.InvalidAppend` (or ``InvalidStreamId``) and writes nothing."""
    name = parse_stream_id(stream_id)
    batch = tuple(events)
    if not batch:
        raise InvalidAppend(f"append to {stream_id!r} has no events")
    if max_events is not None and len(batch) > max_events:
        raise InvalidAppend(
            f"append of {len(batch)} events to {stream_id!r} exceeds this backend's "
            f"atomic limit of {max_events}; it is refused, not split"
        )
    if isinstance(expected_version, bool) or not (
        isinstance(expected_version, StreamState)
        or (isinstance(expected_version, int) and 0 <= expected_version < MAX_SEQ)
    ):
        raise InvalidAppend(
            f"expected_version must be a seq >= 0, NO_STREAM or ANY, not {expected_version!r}"
        )
    for event in batch:
        if not isinstance(event, NewEvent) or isinstance(event, EventEnvelope):
            raise InvalidAppend(f"cannot append {type(event).__name__}; build a NewEvent")
        if event.tenant_id != name.tenant_id or event.mode != name.mode:
            raise InvalidAppend(
                f"event {event.event_type} is scoped to {event.tenant_id}/{event.mode} "
                f"but stream {stream_id!r} belongs to {name.tenant_id}/{name.mode}"
            )
        if too_deep(event.payload):
            raise InvalidAppend(
                f"event {event.event_type} payload nests deeper than {MAX_PAYLOAD_DEPTH} levels"
            )
    command_ids = {e.command_id for e in batch}
    if len(command_ids) != 1:
        shown = sorted(command_ids)
        raise InvalidAppend(
            f"the events of one append must share one command_id, got {len(shown)}: "
            f"{', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}"
        )
    return command_ids.pop(), batch


def check_seq_range(from_seq: int, to_seq: int | None) -> None:
    """Refuse a read range no store can hold (seqs are 1 .. ``MAX_SEQ``)."""
    for name, value in (("from_seq", from_seq), ("to_seq", to_seq)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ
        ):
            raise InvalidInput(f"{name} must be a seq between 0 and {MAX_SEQ}, not {value!r}")


def check_expected_version(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`~spine.errors.ConcurrencyError` unless ``actual`` (0 for a stream
    with no events) satisfies ``expected``."""
    if expected is ANY:
        return
    if expected is NO_STREAM:
        if actual != 0:
            raise ConcurrencyError(stream_id, "NO_STREAM", actual)
        return
    if expected != actual:
        raise ConcurrencyError(stream_id, expected, actual)


def appended(
    stream_id: str, events: Sequence[EventEnvelope], *, deduplicated: bool = False
) -> AppendResult:
    """The result of an append whose sealed (or, deduplicated, original) events these are:
    built without validation, the events being ours and valid already."""
    return trusted(
        AppendResult,
        {
            "stream_id": stream_id,
            "first_seq": events[0].seq,
            "last_seq": events[-1].seq,
            "events": tuple(events),
            "deduplicated": deduplicated,
        },
    )
