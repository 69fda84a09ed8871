"""The spine on Firestore: :class:`spine.EventStore` with its :class:`spine.feed.Outbox`
(the layout, and why an append is atomic and conditional, is in the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Final

from google.cloud.firestore import (
    AsyncCollectionReference,
    AsyncDocumentReference,
    AsyncQuery,
    AsyncWriteBatch,
)
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from routing.backends.common import decode_rows, decode_strict
from routing.backends.firestore.client import (
    BACKEND,
    FirestoreDatabase,
    LostRace,
    Snapshot,
    Uncertain,
    translated,
)
from routing.backends.firestore.layout import (
    COMMANDS,
    EVENTS,
    OUTBOX_SHARDS,
    FieldValue,
    command_doc_id,
    document_size,
    outbox_collection,
    outbox_doc_id,
    outbox_shard,
    seq_doc_id,
    stream_doc_id,
    stream_of,
    write_size,
)
from spine.appending import (
    MAX_SEQ,
    appended,
    check_expected_version,
    check_seq_range,
    validate_append,
)
from spine.codec import encode, seal_after
from spine.errors import BackendUnavailable, ConcurrencyError, IntegrityError, InvalidAppend
from spine.events import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    AppendResult,
    EventEnvelope,
    ExpectedVersion,
    Mode,
    NewEvent,
)
from spine.feed import AppendListener, AppendListeners, Delivered, Pending
from spine.importing import ImportResult, command_runs, run_import, split
from spine.streams import parse_stream_id, scan_scope

#: Events one read asks for at once.
PAGE: Final = 500
#: How far past the last version it saw an ANY append looks for the stream's head.
PROBE: Final = 4
#: Streams whose last version a store remembers (the hint of ANY's reads).
SEEN: Final = 10_000
_HEAD_FIELDS: Final = ("first_seq", "last_seq", "hash")
_KEY: Final = FieldPath.document_id()
#: Past every character a stream document id holds (``~`` is the highest).
_PAST_PREFIX: Final = "\x7f"

Fields = dict[str, FieldValue]
Row = tuple[str, int, bytes]


@dataclass(frozen=True, slots=True)
class _Stream:
    doc: AsyncDocumentReference
    events: AsyncCollectionReference
    commands: AsyncCollectionReference


@dataclass(frozen=True, slots=True)
class _Head:
    """What an append reads before it writes: the command's seqs if the stream holds it
    already, else the version to append after and that event's hash."""

    command: tuple[int, int] | None
    version: int = 0
    prev_hash: str = GENESIS_HASH


class _InOrder:
    """One queue per stream: this process's appends to a stream run one at a time, in the
    order they were made (asyncio's lock is fair). Two appends made together thus chain
    as they would on one connection, and this process's writers do not race each other
    through the server; other processes still do, which the creates decide."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, stream_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(stream_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[stream_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[stream_id]
            if users == 1:
                del self._locks[stream_id]
            else:
                self._locks[stream_id] = (lock, users - 1)


class FirestoreEventStore:
    """:class:`spine.EventStore` and :class:`spine.feed.RelaySource` (its outbox) on one
    route's collections."""

    def __init__(self, db: FirestoreDatabase, route: str) -> None:
        self.db = db
        self.route = route
        self.streams = db.client.collection(route)
        self.outbox = db.client.collection(outbox_collection(route))
        self._in_order = _InOrder()
        self._seen: OrderedDict[str, int] = OrderedDict()
        """The last version seen of recently appended streams: a hint, never trusted."""
        self._listeners = AppendListeners(route)

    def on_append(self, listener: AppendListener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def _tell(
        self,
        stream_id: str,
        sealed: Sequence[EventEnvelope],
        result: AppendResult,
        written_at: datetime | None = None,
    ) -> None:
        """Tell the listeners of a write this process committed (its outbox marker,
        written at ``written_at``: by default, an append's recorded time)."""
        if not self._listeners:
            return
        first, last = sealed[0].seq, sealed[-1].seq
        marker = outbox_doc_id(stream_id, first)
        pending = Pending(stream_id, first, last, marker, written_at or sealed[0].recorded_at)
        self._listeners.tell(pending, result)

    def _saw(self, stream_id: str, version: int) -> None:
        seen = self._seen
        if seen.get(stream_id, 0) < version:
            seen[stream_id] = version
        seen.move_to_end(stream_id)
        if len(seen) > SEEN:
            seen.popitem(last=False)

    def _stream(self, stream_id: str) -> _Stream:
        doc = self.streams.document(stream_doc_id(stream_id))
        return _Stream(doc, doc.collection(EVENTS), doc.collection(COMMANDS))

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        command_id, batch = validate_append(
            stream_id, events, expected_version, max_events=self.db.limits.max_events
        )
        async with self._in_order.turn(stream_id):
            return await self._append(stream_id, command_id, batch, expected_version)

    async def _append(
        self,
        stream_id: str,
        command_id: str,
        batch: tuple[NewEvent, ...],
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        stream = self._stream(stream_id)
        marker = stream.commands.document(command_doc_id(command_id))
        uncertain: set[str] = set()  # first hashes of commits that may have been applied
        give_up = time.monotonic() + self.db.timeout
        attempt = 0
        with translated(self.route):
            while True:
                if attempt and time.monotonic() > give_up:
                    raise BackendUnavailable(
                        self.route,
                        BACKEND,
                        f"append to {stream_id!r} gave up after "
                        f"{attempt} attempts in {self.db.timeout:g} s (contention or errors)",
                    )
                attempt += 1
                head = await self._head(
                    stream_id, stream, marker, expected_version, again=attempt > 1
                )
                if head is None:  # the stream moved while it was read: read it again
                    continue
                if head.command is not None:
                    original = await self._read(stream_id, stream.events, *head.command)
                    ours = bool(original) and original[0].hash in uncertain
                    self._saw(stream_id, head.command[1])
                    result = appended(stream_id, original, deduplicated=not ours)
                    if ours:  # this process's commit, whose answer was lost
                        self._tell(stream_id, original, result)
                    return result
                sealed, write = self._prepare(stream_id, stream, batch, head)
                try:
                    await self.db.commit(write)
                except LostRace:
                    # Another append took a seq (or the command) first. An exact version
                    # reads again at once, which tells a conflict from a repeated command;
                    # ANY reads the new head and appends after it, after a short pause.
                    self._saw(stream_id, head.version + 1)
                    if expected_version is ANY:
                        await _pause(attempt)
                    continue
                except Uncertain:
                    # Applied or not: the next reads find this command's marker (with
                    # these hashes) if it was.
                    uncertain.add(sealed[0].hash)
                    await _pause(attempt)
                    continue
                self._saw(stream_id, sealed[-1].seq)
                result = appended(stream_id, sealed)
                self._tell(stream_id, sealed, result)
                return result

    async def _head(
        self,
        stream_id: str,
        stream: _Stream,
        marker: AsyncDocumentReference,
        expected: ExpectedVersion,
        *,
        again: bool,
    ) -> _Head | None:
        """The reads an append makes (one round trip): the command's marker and, for an
        exact version N, events N and N+1 (N's hash chains; N+1 must not exist); for ANY,
        :meth:`_any_head`. Raises :class:`ConcurrencyError` on a stale version; ``None``:
        the stream moved between two reads."""
        if expected is ANY:
            return await self._any_head(stream_id, stream, marker, again=again)
        after = 0 if expected is NO_STREAM else int(expected)
        following = stream.events.document(seq_doc_id(after + 1))
        at = stream.events.document(seq_doc_id(after)) if after else None
        wanted = [marker, following] if at is None else [marker, following, at]
        found = await self.db.get_all(wanted, fields=_HEAD_FIELDS)
        command = _command(found[marker.path])
        if command is not None:
            return _Head(command)
        previous = None if at is None else found[at.path]
        if (previous is not None and not previous.exists) or found[following.path].exists:
            last = await self._last(stream)
            check_expected_version(stream_id, expected, last[0] if last else 0)
            return None
        return _Head(None, after, GENESIS_HASH if previous is None else _text(previous, "hash"))

    async def _any_head(
        self, stream_id: str, stream: _Stream, marker: AsyncDocumentReference, *, again: bool
    ) -> _Head:
        """ANY's reads, by key in one round trip: the marker and the events from the last
        version this store saw of the stream (0: none) to :data:`PROBE` past it (eight
        times as far when ``again``: the append lost a race, others are writing); the
        head is the last of those before the first missing one. If all are there, once
        more as far past the last; then a query for the last event (the stream moved
        further, written from elsewhere): on the emulator a query costs many key reads,
        more as its database grows."""
        hint = self._seen.get(stream_id, 0)
        window = PROBE * 8 if again else PROBE
        wanted: list[AsyncDocumentReference] = [marker]
        for _ in range(2):
            seqs = range(max(hint, 1), hint + window + 1)
            refs = [stream.events.document(seq_doc_id(seq)) for seq in seqs]
            found = await self.db.get_all([*wanted, *refs], fields=_HEAD_FIELDS)
            if wanted:
                command = _command(found[marker.path])
                if command is not None:
                    return _Head(command)
                wanted = []
            present = [found[ref.path] for ref in refs]
            if hint and not present[0].exists:
                break  # not what this store saw: ask the query
            for seq, snapshot in zip(seqs, present, strict=True):
                if snapshot.exists:
                    continue
                if seq == 1:
                    return _Head(None)
                return _Head(None, seq - 1, _text(present[seq - 1 - seqs.start], "hash"))
            hint, window = seqs[-1], PROBE * 8
        last = await self._last(stream)
        version, prev_hash = last or (0, GENESIS_HASH)
        return _Head(None, version, prev_hash)

    async def _last(self, stream: _Stream) -> tuple[int, str] | None:
        """The stream's last event: its seq and hash (``None``: no event)."""
        query = (
            stream.events.order_by("seq", direction=AsyncQuery.DESCENDING).limit(1).select(["hash"])
        )
        found = await self.db.query(query)
        return (_seq(found[0]), _text(found[0], "hash")) if found else None

    def _prepare(
        self, stream_id: str, stream: _Stream, batch: tuple[NewEvent, ...], head: _Head
    ) -> tuple[list[EventEnvelope], AsyncWriteBatch]:
        """Seal the events after ``head`` and build the one commit that writes them
        (:meth:`_commit_of`)."""
        now = datetime.now(UTC)
        chain = seal_after(
            batch,
            stream_id=stream_id,
            head=head.version,
            prev_hash=head.prev_hash,
            recorded_at=now,
        )
        write = self._commit_of(stream_id, stream, chain, now)
        return [envelope for envelope, _ in chain], write

    def _commit_of(
        self,
        stream_id: str,
        stream: _Stream,
        chain: Sequence[tuple[EventEnvelope, bytes]],
        now: datetime,
    ) -> AsyncWriteBatch:
        """The one commit that writes sealed events (each with its stored form), as an
        append and an import do: a create per event and per command marker (the
        conditions), the outbox marker and, with seq 1, the stream's document."""
        creates: list[tuple[AsyncDocumentReference, Fields]] = []
        sealed = [envelope for envelope, _ in chain]
        for envelope, body in chain:
            fields: Fields = {"seq": envelope.seq, "hash": envelope.hash, "body": body}
            creates.append((stream.events.document(seq_doc_id(envelope.seq)), fields))
        for command_id, first_seq, last_seq in command_runs(sealed):
            marker = stream.commands.document(command_doc_id(command_id))
            values: Fields = {"command_id": command_id, "first_seq": first_seq}
            creates.append((marker, {**values, "last_seq": last_seq}))
        first, last = sealed[0].seq, sealed[-1].seq
        outbox: Fields = {
            "stream_id": stream_id,
            "first_seq": first,
            "last_seq": last,
            "shard": outbox_shard(stream_id, first),
            "written_at": now,
        }
        sets = [(self.outbox.document(outbox_doc_id(stream_id, first)), outbox)]
        if first == 1:
            sets.append((stream.doc, {"stream_id": stream_id}))
        self._check_limits(stream_id, creates, sets, events=len(sealed))
        write = self.db.client.batch()
        for ref, values in creates:
            write.create(ref, values)
        for ref, values in sets:
            write.set(ref, values)
        return write

    async def import_events(
        self, stream_id: str, events: Sequence[EventEnvelope], *, dry_run: bool = False
    ) -> ImportResult:
        """As :class:`spine.EventStore` says: a commit per 500 writes (events, a marker
        per command, the outbox marker, the stream's document) and request size."""
        limits = self.db.limits
        return await run_import(
            stream_id,
            events,
            read=self.read_stream,
            write=self._import_chunk,
            cut=partial(
                split,
                max_items=limits.max_writes,
                per_command=1,
                extra=2,
                max_bytes=limits.max_request_bytes - 64 * 1024,
                size=lambda e: len(encode(e)) + 512,
            ),
            find_command=self.find_command,
            dry_run=dry_run,
        )

    async def _import_chunk(self, stream_id: str, chunk: tuple[EventEnvelope, ...]) -> None:
        stream = self._stream(stream_id)
        now = datetime.now(UTC)
        write = self._commit_of(stream_id, stream, [(e, encode(e)) for e in chunk], now)
        async with self._in_order.turn(stream_id):
            with translated(self.route):
                try:
                    await self.db.commit(write)
                except (LostRace, Uncertain):  # applied or not, the next plan reads which
                    last = await self._last(stream)
                    actual = last[0] if last else 0
                    raise ConcurrencyError(stream_id, chunk[0].seq - 1, actual) from None
        self._saw(stream_id, chunk[-1].seq)
        self._tell(stream_id, chunk, appended(stream_id, chunk), now)

    def _check_limits(
        self,
        stream_id: str,
        creates: list[tuple[AsyncDocumentReference, Fields]],
        sets: list[tuple[AsyncDocumentReference, Fields]],
        *,
        events: int,
    ) -> None:
        """Refuse (:class:`InvalidAppend`) a write one commit cannot hold."""
        limits = self.db.limits
        writes = creates + sets
        if len(writes) > limits.max_writes:
            raise InvalidAppend(
                f"append of {events} events to {stream_id!r} needs {len(writes)} writes, over "
                f"Firestore's {limits.max_writes} per commit; it is refused, not split"
            )
        request = 512
        for position, (ref, values) in enumerate(writes, start=1):
            size = document_size(ref.path.split("/"), values)
            if size > limits.max_document_bytes:
                raise InvalidAppend(
                    f"event {position} of {events} appended to {stream_id!r} takes {size} "
                    f"bytes as a Firestore document, over its limit of "
                    f"{limits.max_document_bytes}; it is refused, not split"
                )
            request += write_size(f"{self.db.documents}/{ref.path}", values)
        if request > limits.max_request_bytes:
            raise InvalidAppend(
                f"append of {events} events to {stream_id!r} takes about {request} bytes in "
                f"one commit, over the {limits.max_request_bytes} a Firestore request may "
                "take here; it is refused, not split"
            )

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        check_seq_range(from_seq, to_seq)
        first, last = max(from_seq, 1), MAX_SEQ if to_seq is None else to_seq
        if first > last:
            return []
        with translated(self.route):
            return await self._read(stream_id, self._stream(stream_id).events, first, last)

    async def find_command(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        stream = self._stream(stream_id)
        marker = stream.commands.document(command_doc_id(command_id))
        with translated(self.route):
            found = await self.db.get_all([marker])
            command = _command(found[marker.path])
            if command is None:
                return []
            return await self._read(stream_id, stream.events, *command)

    async def _read(
        self, stream_id: str, events: AsyncCollectionReference, first: int, last: int
    ) -> list[EventEnvelope]:
        """Events ``first`` to ``last`` of one stream, in seq order, page by page."""
        out: list[EventEnvelope] = []
        while True:
            page = await self._page(stream_id, events, first, last, PAGE)
            out += page
            if len(page) < PAGE:
                return out
            first = page[-1].seq + 1

    async def _page(
        self, stream_id: str, events: AsyncCollectionReference, first: int, last: int, size: int
    ) -> list[EventEnvelope]:
        return decode_strict(await self._rows(stream_id, events, first, last, size))

    async def _rows(
        self, stream_id: str, events: AsyncCollectionReference, first: int, last: int, size: int
    ) -> list[Row]:
        """The stored forms of up to ``size`` events from ``first`` to ``last``, in seq order."""
        query = (
            events.where(filter=FieldFilter(_KEY, ">=", events.document(seq_doc_id(first))))
            .where(filter=FieldFilter(_KEY, "<=", events.document(seq_doc_id(last))))
            .order_by(_KEY)
            .limit(size)
            .select(["body"])
        )
        found = await self.db.query(query)
        return [(stream_id, _seq(doc), _bytes(doc, "body")) for doc in found]

    async def scan(
        self,
        *,
        domain: str | None = None,
        tenant_id: str | None = None,
        mode: Mode | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[EventEnvelope]:
        async for rows in self._scan_rows(domain, tenant_id, mode, batch_size):
            for event in decode_strict(rows):
                yield event

    async def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]:
        """As :meth:`scan` of ``domain``, an undecodable event as :class:`Unreadable`."""
        async for rows in self._scan_rows(domain, None, None, batch_size):
            for event in decode_rows(rows):
                yield event

    async def _scan_rows(
        self, domain: str | None, tenant_id: str | None, mode: Mode | None, batch_size: int
    ) -> AsyncIterator[list[Row]]:
        """The stored events in scope, a page at a time: the stream documents in key
        order (a scope's prefix is a key range), each stream's events in seq order."""
        scope = scan_scope(domain, tenant_id, mode)
        size = max(1, batch_size)
        prefix = stream_doc_id(scope.prefix)  # the stream documents' key range
        after: str | None = None
        while True:
            query = self.streams.order_by(_KEY).limit(size)
            if after is not None:
                query = query.where(filter=FieldFilter(_KEY, ">", self.streams.document(after)))
            elif prefix:
                query = query.where(filter=FieldFilter(_KEY, ">=", self.streams.document(prefix)))
            if prefix:
                past = self.streams.document(prefix + _PAST_PREFIX)
                query = query.where(filter=FieldFilter(_KEY, "<", past))
            with translated(self.route):
                streams = await self.db.query(query.select([]))
            for doc in streams:
                stream_id = stream_of(doc.id)
                if not scope.holds(stream_id):
                    continue
                events = self._stream(stream_id).events
                first = 1
                while True:
                    with translated(self.route):
                        rows = await self._rows(stream_id, events, first, MAX_SEQ, size)
                    if rows:
                        yield rows
                    if len(rows) < size:
                        break
                    first = rows[-1][1] + 1
            if len(streams) < size:
                return
            after = streams[-1].id

    async def pending(self, *, older_than: float = 0.0, limit: int = 1000) -> list[Pending]:
        if limit <= 0:
            return []
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        query = (
            self.outbox.where(filter=FieldFilter("shard", "in", list(range(OUTBOX_SHARDS))))
            .where(filter=FieldFilter("written_at", "<=", cutoff))
            .order_by("written_at")
            .limit(limit)
        )
        with translated(self.route):
            found = await self.db.query(query)
        return [
            Pending(
                stream_id=_text(doc, "stream_id"),
                first_seq=_int(doc, "first_seq"),
                last_seq=_int(doc, "last_seq"),
                marker=doc.id,
                written_at=_time(doc, "written_at"),
            )
            for doc in found
        ]

    async def clear(self, pending: Sequence[Pending]) -> None:
        markers = list(dict.fromkeys(p.marker for p in pending))
        step = self.db.limits.max_writes
        for start in range(0, len(markers), step):
            write = self.db.client.batch()
            for marker in markers[start : start + step]:
                write.delete(self.outbox.document(marker))  # no precondition: gone is fine
            with translated(self.route):  # a delete is idempotent: retried like a read
                await write.commit(retry=self.db.retry, timeout=self.db.timeout)


async def _pause(attempt: int) -> None:
    """A short random pause before another try, growing with the attempts (at most 0.2 s)."""
    await asyncio.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))


def _command(snapshot: Snapshot) -> tuple[int, int] | None:
    """A command marker's first and last seq (``None``: there is none)."""
    if not snapshot.exists:
        return None
    return _int(snapshot, "first_seq"), _int(snapshot, "last_seq")


def _field(snapshot: Snapshot, name: str) -> object:
    data = snapshot.to_dict() or {}
    if name not in data:
        raise IntegrityError(f"firestore document {snapshot.reference.path} has no {name!r}")
    value: object = data[name]
    return value


def _int(snapshot: Snapshot, name: str) -> int:
    value = _field(snapshot, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IntegrityError(f"firestore document {snapshot.reference.path}: {name} not an int")
    return value


def _text(snapshot: Snapshot, name: str) -> str:
    value = _field(snapshot, name)
    if not isinstance(value, str):
        raise IntegrityError(f"firestore document {snapshot.reference.path}: {name} not text")
    return value


def _bytes(snapshot: Snapshot, name: str) -> bytes:
    """A stored body: one that is not bytes reads as empty, which does not decode (so the
    reader names the event)."""
    value = (snapshot.to_dict() or {}).get(name)
    return value if isinstance(value, bytes) else b""


def _time(snapshot: Snapshot, name: str) -> datetime:
    value = _field(snapshot, name)
    if not isinstance(value, datetime):
        raise IntegrityError(f"firestore document {snapshot.reference.path}: {name} not a time")
    return value


def _seq(snapshot: Snapshot) -> int:
    """An event document's seq: its key."""
    if not snapshot.id.isdigit():
        raise IntegrityError(f"firestore document {snapshot.reference.path} is not an event")
    return int(snapshot.id)
