"""The rules every backend applies to an append before it writes, in one place."""

from __future__ import annotations

from collections.abc import Sequence

from spine.errors import ConcurrencyError, InvalidAppend
from spine.events import ANY, NO_STREAM, ExpectedVersion, NewEvent, StreamState
from spine.streams import parse_stream_id


def validate_append(
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: ExpectedVersion,
    *,
    max_events: int | None = None,
) -> str:
    """Check an append request; return its command id. Raises
    :class:`~spine.errors.InvalidAppend` (or ``InvalidStreamId``) and writes nothing."""
    name = parse_stream_id(stream_id)
    if not events:
        raise InvalidAppend(f"append to {stream_id!r} has no events")
    if max_events is not None and len(events) > max_events:
        raise InvalidAppend(
            f"append of {len(events)} events to {stream_id!r} exceeds this backend's "
            f"atomic limit of {max_events}; it is refused, not split"
        )
    if isinstance(expected_version, bool) or not (
        isinstance(expected_version, StreamState)
        or (isinstance(expected_version, int) and expected_version >= 0)
    ):
        raise InvalidAppend(
            f"expected_version must be a seq >= 0, NO_STREAM or ANY, not {expected_version!r}"
        )
    command_ids = {e.command_id for e in events}
    if len(command_ids) != 1:
        raise InvalidAppend(
            f"the events of one append must share one command_id, got {command_ids}"
        )
    for event in events:
        if not isinstance(event, NewEvent):
            raise InvalidAppend(f"cannot append {type(event).__name__}; build a NewEvent")
        if event.tenant_id != name.tenant_id or event.mode != name.mode:
            raise InvalidAppend(
                f"event {event.event_type} is scoped to {event.tenant_id}/{event.mode} "
                f"but stream {stream_id!r} belongs to {name.tenant_id}/{name.mode}"
            )
    return command_ids.pop()


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
