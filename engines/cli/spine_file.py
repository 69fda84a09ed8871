"""The file ``engines spine export`` writes and ``engines spine import`` reads.

JSON lines, UTF-8:

1. a header: ``{"format": "engines-spine-export", "version": 1, "scope": {...},
   "exported_at": ..., "source": BACKEND}``, so an import refuses a file that is not
   an export (or of a version it does not know);
2. one line per event: the envelope as the store holds it, read raw (never upcast),
   every field with its ``hash`` and ``prev_hash``; each stream's events in seq order
   (every store's ``scan`` gives a stream's events together; an import accepts streams
   interleaved, as long as each stream's own order holds);
3. a trailer: ``{"format": "engines-spine-export", "end": true, "events": N}``, so an
   export cut short (a full disk, a killed process) is refused rather than imported in
   part.

Reading is in two passes over the file, neither holding more than a bounded part of
it: :func:`check_file` validates every line (and each stream's chain) and learns where
each stream ends; :func:`parts` then hands out each stream's events in parts, cut
between commands.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import orjson
from pydantic import ValidationError

from spine.codec import timestamp_text
from spine.errors import IntegrityError, InvalidInput
from spine.events import EventEnvelope
from spine.importing import ChainChecker, command_runs

FORMAT: Final = "engines-spine-export"
VERSION: Final = 1
#: How many of one stream's events a part holds at most (more only for one command).
PART: Final = 5000
#: How many events the parts being gathered hold at most, all streams together.
MAX_BUFFERED: Final = 50_000


def header(scope: dict[str, str | None], source: str) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "scope": scope,
            "exported_at": timestamp_text(datetime.now(UTC)),
            "source": source,
        }
    )


def trailer(events: int) -> bytes:
    return orjson.dumps({"format": FORMAT, "end": True, "events": events})


_FIELDS: Final = tuple(EventEnvelope.model_fields)


def event_line(event: EventEnvelope) -> bytes:
    """One event as exported: every field of the envelope, in the model's order."""
    values = event.model_dump(mode="json")
    return orjson.dumps({name: values[name] for name in _FIELDS})


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as file:
        yield from enumerate(file, start=1)


def _refuse(path: Path, number: int, what: str) -> InvalidInput:
    return InvalidInput(f"{path.name} line {number}: {what}")


def _header_of(path: Path, line: bytes) -> dict[str, Any]:
    try:
        values = orjson.loads(line)
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise _refuse(path, 1, f"not an {FORMAT} file (its first line is not the header)")
    if values.get("version") != VERSION:
        raise _refuse(path, 1, f"export version {values.get('version')!r}; this reads {VERSION}")
    return values


def _event(path: Path, number: int, values: object) -> EventEnvelope:
    try:
        return EventEnvelope.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the line"
        raise _refuse(path, number, f"not an event ({where}: {first['msg']})") from None


def _records(path: Path) -> Iterator[tuple[int, EventEnvelope | int]]:
    """Each line after the header: an event, or the trailer's event count."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise _refuse(path, 1, f"empty; not an {FORMAT} file")
    _header_of(path, first[1])
    ended = False
    for number, line in lines:
        if ended:
            raise _refuse(path, number, "a line after the trailer")
        try:
            values = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _refuse(path, number, f"not JSON ({exc})") from None
        if isinstance(values, dict) and values.get("format") == FORMAT:
            count = values.get("events")
            if (
                values.get("end") is not True
                or isinstance(count, bool)
                or not isinstance(count, int)
            ):
                raise _refuse(path, number, "a malformed trailer")
            ended = True
            yield number, count
            continue
        yield number, _event(path, number, values)


class FileCheck:
    """What the first pass learns: each stream's last seq, the number of events."""

    def __init__(self, streams: dict[str, int], events: int) -> None:
        self.streams = streams
        self.events = events


def check_file(path: Path, advance: Any = None) -> FileCheck:
    """Validate every line of an export: the header, each event (a full envelope whose
    stream id, scope and hash chain hold, each stream's events in seq order) and the
    trailer, last. Raises :class:`InvalidInput` naming the line (or the error the
    chain check raises, its message naming the line: an :class:`IntegrityError` for a
    chain that does not verify). ``advance(n)``: told every thousand lines."""
    checker = ChainChecker()
    ended: int | None = None
    number = 1
    for number, record in _records(path):
        if isinstance(record, int):
            if record != checker.events:
                raise _refuse(
                    path,
                    number,
                    f"the trailer says {record} events, the file holds {checker.events}",
                )
            ended = number
            continue
        try:
            checker.add(record)
        except (InvalidInput, IntegrityError) as exc:
            raise type(exc)(f"{path.name} line {number}: {exc}") from exc
        if advance is not None and not checker.events % 1000:
            advance(1000)
    if ended is None:
        raise _refuse(path, number, "the file ends without the export's trailer (cut short?)")
    return FileCheck({sid: seq for sid, (seq, _) in checker.streams.items()}, checker.events)


def parts(
    path: Path, ends: dict[str, int], *, part: int = PART, max_buffered: int = MAX_BUFFERED
) -> Iterator[tuple[str, list[EventEnvelope]]]:
    """Each stream's events, in parts of at most ``part`` events (more only where one
    command holds more), in seq order, cut between commands; ``ends``: each stream's
    last seq (:func:`check_file`). Streams interleaved in the file are gathered apart,
    never more than about ``max_buffered`` events held at once."""
    buffers: dict[str, list[EventEnvelope]] = {}
    buffered = 0
    for _, record in _records(path):
        if isinstance(record, int):
            continue
        stream_id = record.stream_id
        buffer = buffers.setdefault(stream_id, [])
        buffer.append(record)
        buffered += 1
        if record.seq == ends[stream_id]:
            del buffers[stream_id]
            buffered -= len(buffer)
            yield stream_id, buffer
            continue
        if len(buffer) >= part or buffered > max_buffered:
            largest = (
                stream_id if len(buffer) >= part else max(buffers, key=lambda s: len(buffers[s]))
            )
            ready = _complete_commands(buffers[largest])
            if ready:
                buffered -= len(ready)
                buffers[largest] = buffers[largest][len(ready) :]
                yield largest, ready


def _complete_commands(buffer: list[EventEnvelope]) -> list[EventEnvelope]:
    """The events of ``buffer`` but its last command's, which may go on in the file."""
    runs = command_runs(buffer)
    if len(runs) < 2:
        return []
    last_first_seq = runs[-1][1]
    return [e for e in buffer if e.seq < last_first_seq]


def open_for_export(path: Path) -> tuple[IO[bytes], Path]:
    """A file beside ``path`` to write the export to (readable by its owner only: an
    export holds every field of every event), renamed to ``path`` when it is whole."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb"), partial
