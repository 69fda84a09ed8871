"""The rules every backend applies to an import of sealed events, in one place.

An import writes events that were sealed elsewhere (an export of another store) at
their own seqs, keeping every field: event id, recorded time, hash and prev_hash, so
the target's chain is the source's bit for bit. :func:`validate_import` checks what
can be checked without the store (one stream, contiguous seqs, a chain that verifies);
:func:`plan_import` compares the events with what the stream holds at those seqs:

* a seq the stream holds with the same event (event id and hash) is *already there*
  and skipped, so an import is idempotent by event id;
* a seq it holds with another event, or events that do not chain onto the stream's
  event before them, is another history: :class:`~spine.errors.ImportConflict`, and
  nothing of the import is written;
* the rest, which must follow the stream's head with no gap, is written.

:func:`run_import` drives a backend through that: plan, write in chunks the backend can
commit atomically (each with the optimistic check an append makes: the next seq must
be free), and plan again if another writer moved the stream meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict

from spine.appending import MAX_SEQ, too_deep
from spine.codec import expected_hash, verify_chain
from spine.errors import ConcurrencyError, ImportConflict, IntegrityError, InvalidAppend
from spine.events import GENESIS_HASH, EventEnvelope
from spine.streams import StreamName, parse_stream_id

#: How many times an import plans again after another writer moved the stream.
ROUNDS: Final = 5


class ImportResult(BaseModel):
    """What an import answers for one stream: how many of its events it wrote and how
    many the stream held already. With ``dry_run``, ``written`` is what it would write."""

    model_config = ConfigDict(frozen=True)

    stream_id: str
    first_seq: int
    last_seq: int
    written: int
    already: int
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class ImportPlan:
    new: tuple[EventEnvelope, ...]
    """The events to write: a suffix of the import, following the stream's head."""
    already: int
    """How many of the import's events the stream holds already."""


def validate_import(stream_id: str, events: Iterable[EventEnvelope]) -> tuple[EventEnvelope, ...]:
    """Check an import's events without the store: one stream's, in its scope, at
    contiguous seqs, a command's events together, and chained (from the genesis hash
    if the first is seq 1). Raises :class:`~spine.errors.InvalidAppend` (or
    :class:`~spine.errors.IntegrityError` for a chain that does not verify)."""
    name = parse_stream_id(stream_id)
    batch = tuple(events)
    if not batch:
        raise InvalidAppend(f"import into {stream_id!r} has no events")
    first = batch[0]
    for offset, event in enumerate(batch):
        if not isinstance(event, EventEnvelope):
            raise InvalidAppend(f"cannot import {type(event).__name__}; only sealed events")
        if event.stream_id == stream_id and event.seq != first.seq + offset:
            raise InvalidAppend(
                f"import into {stream_id!r}: seq {event.seq} where {first.seq + offset} "
                "was due (an import is one stream's events at contiguous seqs)"
            )
        check_event(event, stream_id, name)
    runs = command_runs(batch)
    seen: dict[str, int] = {}
    for command_id, first_seq, _ in runs:
        if command_id in seen:
            raise InvalidAppend(
                f"import into {stream_id!r}: command {command_id!r} at seq {first_seq} "
                f"and again at seq {seen[command_id]} (a command's events are contiguous)"
            )
        seen[command_id] = first_seq
    if first.seq == 1 and first.prev_hash != GENESIS_HASH:
        raise IntegrityError(f"{stream_id} seq 1: prev_hash is not the genesis hash")
    verify_chain(batch, prev_hash=first.prev_hash)
    return batch


def check_event(event: EventEnvelope, stream_id: str, name: StreamName | None = None) -> None:
    """Check one imported event against the stream it is for (its id, scope, time and
    payload): :class:`~spine.errors.InvalidAppend` (or ``InvalidStreamId``)."""
    name = name or parse_stream_id(stream_id)
    where = f"import into {stream_id!r}, seq {event.seq}"
    if event.stream_id != stream_id:
        raise InvalidAppend(f"{where}: the event belongs to stream {event.stream_id!r}")
    if event.seq > MAX_SEQ:
        raise InvalidAppend(f"{where}: over the highest seq a stream may reach")
    if event.tenant_id != name.tenant_id or event.mode != name.mode:
        raise InvalidAppend(
            f"{where}: the event is scoped to {event.tenant_id}/{event.mode}, the "
            f"stream to {name.tenant_id}/{name.mode}"
        )
    if event.recorded_at.tzinfo is None:
        raise InvalidAppend(f"{where}: recorded_at has no time zone")
    if too_deep(event.payload):
        raise InvalidAppend(f"{where}: the payload nests too deep")


class ChainChecker:
    """Checks events as they come, any number of streams interleaved, each stream's in
    seq order: what :func:`validate_import` checks of one stream's events, kept per
    stream in a few values (its last seq, hash and command), so a file of any length is
    checked in one pass. Raises as :func:`validate_import` does."""

    def __init__(self) -> None:
        self.streams: dict[str, tuple[int, str]] = {}
        """Per stream: the last seq and hash seen."""
        self.events = 0

    def add(self, event: EventEnvelope) -> None:
        stream_id = event.stream_id
        check_event(event, stream_id)
        last = self.streams.get(stream_id)
        if last is None:
            if event.seq == 1 and event.prev_hash != GENESIS_HASH:
                raise IntegrityError(f"{stream_id} seq 1: prev_hash is not the genesis hash")
        else:
            seq, digest = last
            if event.seq != seq + 1:
                raise InvalidAppend(
                    f"{stream_id}: seq {event.seq} follows seq {seq} (each stream's events "
                    "must come in seq order, without gaps)"
                )
            if event.prev_hash != digest:
                raise IntegrityError(f"{stream_id} seq {event.seq}: prev_hash does not chain")
        if expected_hash(event) != event.hash:
            raise IntegrityError(f"{stream_id} seq {event.seq}: hash does not match")
        self.streams[stream_id] = (event.seq, event.hash)
        self.events += 1


def command_runs(events: Sequence[EventEnvelope]) -> list[tuple[str, int, int]]:
    """Each run of events sharing a command id: ``(command_id, first_seq, last_seq)``."""
    runs: list[tuple[str, int, int]] = []
    for event in events:
        if runs and runs[-1][0] == event.command_id:
            runs[-1] = (event.command_id, runs[-1][1], event.seq)
        else:
            runs.append((event.command_id, event.seq, event.seq))
    return runs


def plan_import(
    stream_id: str, events: Sequence[EventEnvelope], stored: Sequence[EventEnvelope]
) -> ImportPlan:
    """Compare validated ``events`` with ``stored``, what the stream holds from the seq
    before the first of them to the last of them (read raw). Raises
    :class:`~spine.errors.ImportConflict` for another history, and
    :class:`~spine.errors.InvalidAppend` if the events would leave a gap."""
    held = {event.seq: event for event in stored}
    first = events[0].seq
    if first > 1 and first - 1 not in held:
        raise InvalidAppend(
            f"import into {stream_id!r} begins at seq {first}, but the stream does not "
            f"hold seq {first - 1}: it would leave a gap"
        )
    new: list[EventEnvelope] = []
    for event in events:
        there = held.get(event.seq)
        if there is None:
            new.append(event)
        elif there.event_id != event.event_id or there.hash != event.hash:
            raise ImportConflict(
                stream_id,
                event.seq,
                f"the stream holds event {there.event_id}, the import brings {event.event_id}",
            )
        elif new:  # a held seq after a missing one: the stream is not contiguous
            raise IntegrityError(f"{stream_id}: seq {event.seq} is stored, seq {new[0].seq} not")
    if new:
        before = held.get(new[0].seq - 1)
        link = GENESIS_HASH if before is None else before.hash
        if new[0].prev_hash != link:
            raise ImportConflict(
                stream_id,
                new[0].seq,
                f"the event does not chain onto the stream's seq {new[0].seq - 1} "
                "(the stream has another history)",
            )
    return ImportPlan(tuple(new), len(events) - len(new))


def split(
    events: Sequence[EventEnvelope],
    *,
    max_items: int,
    per_command: int,
    extra: int,
    max_bytes: int | None = None,
    size: Callable[[EventEnvelope], int] | None = None,
) -> list[tuple[EventEnvelope, ...]]:
    """``events`` cut into chunks that each fit one atomic write of at most ``max_items``
    items (an item per event, ``per_command`` per command marker, ``extra`` more: the
    outbox marker) and, if given, ``max_bytes`` (events weighed by ``size``). Cut
    between commands only, so each command's marker names all its events; a command too
    big for one write is refused (:class:`InvalidAppend`) before anything is written."""
    weigh = size or (lambda _: 0)
    budget = max_bytes if max_bytes is not None else float("inf")
    chunks: list[tuple[EventEnvelope, ...]] = []
    chunk: list[EventEnvelope] = []
    commands = 0
    weight = 0
    at = 0
    for command_id, first_seq, last_seq in command_runs(events):
        run = list(events[at : at + last_seq - first_seq + 1])
        at += len(run)
        run_weight = sum(weigh(e) for e in run)
        if len(run) + per_command + extra > max_items or run_weight > budget:
            raise InvalidAppend(
                f"{run[0].stream_id} seq {first_seq}: command {command_id!r} ({len(run)} "
                "events) is more than one atomic write of this backend holds"
            )
        fits_items = len(chunk) + len(run) + (commands + 1) * per_command + extra <= max_items
        if chunk and not (fits_items and weight + run_weight <= budget):
            chunks.append(tuple(chunk))
            chunk, commands, weight = [], 0, 0
        chunk += run
        commands += 1
        weight += run_weight
    if chunk:
        chunks.append(tuple(chunk))
    return chunks


Read = Callable[[str, int, int], Awaitable[list[EventEnvelope]]]
Write = Callable[[str, tuple[EventEnvelope, ...]], Awaitable[None]]
FindCommand = Callable[[str, str], Awaitable[list[EventEnvelope]]]
Split = Callable[[Sequence[EventEnvelope]], list[tuple[EventEnvelope, ...]]]


async def run_import(
    stream_id: str,
    events: Sequence[EventEnvelope],
    *,
    read: Read,
    write: Write,
    cut: Split,
    find_command: FindCommand,
    dry_run: bool = False,
) -> ImportResult:
    """Import ``events`` into a store through its ``read`` (raw, ``first..last``) and
    ``write`` (one atomic, conditional write of a chunk that ``cut`` made; raises
    :class:`~spine.errors.ConcurrencyError` if a seq or command marker it creates
    exists). Plans again when a write is refused; a refusal with the stream where it
    was is a command the stream holds elsewhere: :class:`ImportConflict`."""
    batch = validate_import(stream_id, events)
    first, last = batch[0].seq, batch[-1].seq
    written = 0
    refused_at: int | None = None
    actual = 0
    for _ in range(ROUNDS):
        stored = await read(stream_id, max(first - 1, 1), last)
        actual = stored[-1].seq if stored else 0
        plan = plan_import(stream_id, batch, stored)
        if refused_at is not None and plan.new and plan.new[0].seq == refused_at:
            await _check_commands(stream_id, plan.new, find_command)
        chunks = cut(plan.new)
        if dry_run:
            return ImportResult(
                stream_id=stream_id,
                first_seq=first,
                last_seq=last,
                written=len(plan.new),
                already=plan.already,
                dry_run=True,
            )
        for chunk in chunks:
            try:
                await write(stream_id, chunk)
            except ConcurrencyError:
                refused_at = chunk[0].seq  # another writer moved the stream: plan again
                break
            written += len(chunk)
        else:
            return ImportResult(
                stream_id=stream_id,
                first_seq=first,
                last_seq=last,
                written=written,
                already=len(batch) - written,
            )
    raise ConcurrencyError(stream_id, f"an import of seqs {first}..{last}", actual)


async def _check_commands(
    stream_id: str, new: Sequence[EventEnvelope], find_command: FindCommand
) -> None:
    """Raise :class:`ImportConflict` for the first command of ``new`` the stream holds."""
    for command_id, first_seq, _ in command_runs(new):
        held = await find_command(stream_id, command_id)
        if held:
            raise ImportConflict(
                stream_id,
                first_seq,
                f"command {command_id!r} is in the stream already, at seq {held[0].seq}",
            )
