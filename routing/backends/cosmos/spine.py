"""The event store and its outbox on one Cosmos DB container.

The layout, and why an append is atomic and conditional, are in the package's
docstring (:mod:`routing.backends.cosmos`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import orjson
from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosBatchOperationError, CosmosResourceNotFoundError

from routing.backends.common import decode_rows, decode_strict
from routing.backends.cosmos.errors import translate, translated
from spine.appending import (
    MAX_SEQ,
    appended,
    check_expected_version,
    check_seq_range,
    validate_append,
)
from spine.codec import encode, seal_after, timestamp_text
from spine.errors import ConcurrencyError, IntegrityError, InvalidAppend
from spine.events import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    AppendResult,
    EventEnvelope,
    ExpectedVersion,
    Mode,
    NewEvent,
    StreamState,
)
from spine.feed import AppendListener, AppendListeners, Delivered, Pending
from spine.importing import ImportResult, command_runs, run_import, split
from spine.streams import ScanScope, parse_stream_id, scan_scope

log = logging.getLogger(__name__)

#: Cosmos DB's transactional batch: at most this many operations ...
MAX_BATCH_OPERATIONS: Final = 100
#: ... so an append takes at most this many events (with its two markers) ...
MAX_EVENTS: Final = MAX_BATCH_OPERATIONS - 2
#: ... and at most this many bytes of request (2 MB).
MAX_BATCH_BYTES: Final = 2 * 1024 * 1024
#: How long an append keeps trying after other writers moved the stream (an ``ANY``
#: append that lost a race; an exact one that found the stream short of its expected
#: version, and then at it), in seconds, before it gives up with a conflict ...
PATIENCE: Final = 10.0
#: ... waiting a random time up to this long between tries (full jitter, doubling).
MAX_BACKOFF: Final = 0.1
#: How many items a query page holds.
PAGE: Final = 1000

EVENT: Final = "event"
COMMAND: Final = "command"
OUTBOX: Final = "outbox"

_STREAM = "c.stream_id = @stream"  # every one-stream query names it (see the package notes)
_LAST = (
    f"SELECT TOP 1 c.seq, c.hash FROM c WHERE {_STREAM} AND c.type = '{EVENT}' ORDER BY c.seq DESC"
)
# Items that may be absent are looked up by a query, not a point read: cosmosdb-server
# answers a point read of a missing item with 500, not 404 (see the package notes).
_LOOKUP = (
    f"SELECT c.id, c.hash, c.first_seq, c.last_seq FROM c WHERE {_STREAM} AND c.id IN (@a, @b)"
)
_RANGE = (
    f"SELECT c.seq, c.body FROM c WHERE {_STREAM} AND c.type = '{EVENT}'"
    " AND c.seq >= @first AND c.seq <= @last ORDER BY c.seq"
)
_PAGE = (
    f"SELECT TOP @limit c.seq, c.body FROM c WHERE {_STREAM} AND c.type = '{EVENT}'"
    " AND c.seq >= @first ORDER BY c.seq"
)
_STREAMS = f"SELECT c.stream_id FROM c WHERE c.type = '{EVENT}' AND c.seq = 1"
_STREAMS_UNDER = _STREAMS + " AND STARTSWITH(c.stream_id, @prefix)"
_PENDING = (
    "SELECT TOP @limit c.id, c.stream_id, c.first_seq, c.last_seq, c.written_at FROM c"
    f" WHERE c.type = '{OUTBOX}' AND c.outbox_at <= @cutoff ORDER BY c.outbox_at"
)

Item = dict[str, object]
Operation = tuple[str, tuple[Item]]


class _Taken(Exception):
    """A write's batch failed with 409: an item it creates exists already."""


def event_item_id(seq: int) -> str:
    """The id of a stream's event ``seq``: sorts as the seqs do."""
    return f"e{seq:020d}"


def command_marker_id(command_id: str) -> str:
    """The id of a command's marker: any command id, base64url-encoded, so the id never
    holds what Cosmos refuses in one (``/ \\ ? #``) and two command ids never share one."""
    return "c" + base64.urlsafe_b64encode(command_id.encode()).decode().rstrip("=")


def outbox_marker_id(first_seq: int) -> str:
    return f"o{first_seq:020d}"


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _int(item: Mapping[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise IntegrityError(f"{where}: stored item has no integer {key!r}")
    return int(value)


def _str(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise IntegrityError(f"{where}: stored item has no text {key!r}")
    return value


def request_bytes(items: Sequence[Item]) -> int:
    """The size of the batch request creating ``items``, as the SDK may send it (it may
    escape every non-ASCII character, which only ever makes the request longer)."""
    operations = [{"operationType": "Create", "resourceBody": item} for item in items]
    data = orjson.dumps(operations)
    if data.isascii():
        return len(data)
    return len(json.dumps(operations, separators=(",", ":")))


def _label(expected: ExpectedVersion) -> int | str:
    return expected.name if isinstance(expected, StreamState) else expected


@dataclass(slots=True)
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class CosmosEventStore:
    """:class:`spine.EventStore` and :class:`spine.feed.RelaySource` (an outbox an
    in-process relay follows) on one container."""

    def __init__(self, container: ContainerProxy, route: str) -> None:
        self.container = container
        self.route = route
        """The route's physical name (the container), named in every error."""
        self._turns: dict[str, _Turn] = {}
        self._listeners = AppendListeners(route)

    # -- append ---------------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        """Append as :class:`spine.EventStore` says. Appends to one stream through this
        store are sent one at a time, in call order (as the lab backend commits them):
        coroutines of one process never race each other for a seq. Processes do, and the
        conditional creates decide."""
        command_id, batch = validate_append(
            stream_id, events, expected_version, max_events=MAX_EVENTS
        )
        async with self._turn(stream_id):
            with translated(self.route):
                deadline = time.monotonic() + PATIENCE
                backoff = 0.001
                while True:
                    result = await self._append_once(stream_id, command_id, batch, expected_version)
                    if result is not None:
                        return result
                    if time.monotonic() > deadline:
                        break
                    # another writer moved the stream meanwhile: back off a little and re-read
                    await asyncio.sleep(random.uniform(0, backoff))
                    backoff = min(MAX_BACKOFF, backoff * 2)
                actual, _ = await self._last(stream_id)
        check_expected_version(stream_id, expected_version, actual)
        raise ConcurrencyError(stream_id, _label(expected_version), actual)

    @asynccontextmanager
    async def _turn(self, stream_id: str) -> AsyncIterator[None]:
        """Wait for this stream's earlier appends through this store to finish."""
        turn = self._turns.get(stream_id)
        if turn is None:
            turn = self._turns[stream_id] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[stream_id]

    async def _append_once(
        self,
        stream_id: str,
        command_id: str,
        events: tuple[NewEvent, ...],
        expected: ExpectedVersion,
    ) -> AppendResult | None:
        """One try: read where the stream is, write one batch. ``None``: another writer
        moved the stream meanwhile, and the append may try again (see :meth:`_refused`)."""
        marker_id = command_marker_id(command_id)
        marker: dict[str, Any] | None = None
        if expected is ANY:
            head = await self._last(stream_id)
            if head[0]:  # read after the head: a racing repeat then fails the first create
                marker = (await self._lookup(stream_id, marker_id)).get(marker_id)
        elif expected is NO_STREAM or expected == 0:
            head = (0, GENESIS_HASH)  # the create of seq 1 is the whole check
        else:
            assert isinstance(expected, int)
            head_id = event_item_id(expected)
            found = await self._lookup(stream_id, head_id, marker_id)  # one snapshot
            marker = found.get(marker_id)
            if marker is None and head_id not in found:  # behind the expected version
                return await self._refused(stream_id, command_id, expected)
            if marker is None:
                head = (expected, _str(found[head_id], "hash", f"{stream_id} seq {expected}"))
        if marker is not None:
            original = await self._marked(stream_id, command_id, marker)
            return appended(stream_id, original, deduplicated=True)
        now = datetime.now(UTC)
        chain = seal_after(
            events, stream_id=stream_id, head=head[0], prev_hash=head[1], recorded_at=now
        )
        envelopes = [envelope for envelope, _ in chain]
        try:
            outbox = await self._write(stream_id, chain, now)
        except _Taken:
            return await self._refused(stream_id, command_id, expected)
        return self._told(stream_id, envelopes, outbox)

    def _told(self, stream_id: str, envelopes: list[EventEnvelope], outbox: Item) -> AppendResult:
        """The result of a write of ``envelopes``, told to this store's listeners."""
        result = appended(stream_id, envelopes)
        where = f"{stream_id} outbox marker"
        self._listeners.tell(
            Pending(
                stream_id=stream_id,
                first_seq=_int(outbox, "first_seq", where),
                last_seq=_int(outbox, "last_seq", where),
                marker=_str(outbox, "id", where),
                written_at=datetime.fromisoformat(_str(outbox, "written_at", where)),
            ),
            result,
        )
        return result

    async def _write(
        self, stream_id: str, chain: Sequence[tuple[EventEnvelope, bytes]], now: datetime
    ) -> Item:
        """Write sealed events (each with its stored form) in one transactional batch, as
        an append and an import do: the first event's create first, then a marker per
        command, the other events and the outbox marker (see the package's notes on
        cosmosdb-server). Raises :class:`_Taken` if an item exists; answers the outbox
        marker."""
        items = self._items(stream_id, chain, now)
        events = len(chain)
        first, rest = items[0], items[1:events]
        markers, outbox = items[events:-1], items[-1]
        operations: list[Operation] = [
            ("create", (item,)) for item in (first, *markers, *rest, outbox)
        ]
        try:
            await self.container.execute_item_batch(operations, partition_key=stream_id)
        except CosmosBatchOperationError as exc:
            if exc.status_code != 409:
                raise translate(exc, self.route) from exc
            if exc.error_index:
                log.warning(
                    "cosmos %s: a write to %s failed at operation %d of its batch; a "
                    "store without atomic batches kept the ones before it",
                    self.route,
                    stream_id,
                    exc.error_index,
                )
            raise _Taken(str(exc)) from exc
        return outbox

    async def import_events(
        self, stream_id: str, events: Sequence[EventEnvelope], *, dry_run: bool = False
    ) -> ImportResult:
        """As :class:`spine.EventStore` says: a batch per 100 operations (events, a
        marker per command, the outbox marker) and 2 MB."""
        return await run_import(
            stream_id,
            events,
            read=self.read_stream,
            write=self._import_chunk,
            cut=partial(
                split,
                max_items=MAX_BATCH_OPERATIONS,
                per_command=1,
                extra=1,
                max_bytes=MAX_BATCH_BYTES - 64 * 1024,
                size=lambda e: request_bytes([{"body": encode(e).decode()}]) + 256,
            ),
            find_command=self.find_command,
            dry_run=dry_run,
        )

    async def _import_chunk(self, stream_id: str, chunk: tuple[EventEnvelope, ...]) -> None:
        now = datetime.now(UTC)
        async with self._turn(stream_id):
            with translated(self.route):
                try:
                    outbox = await self._write(stream_id, [(e, encode(e)) for e in chunk], now)
                except _Taken:
                    actual, _ = await self._last(stream_id)
                    raise ConcurrencyError(stream_id, chunk[0].seq - 1, actual) from None
        self._told(stream_id, list(chunk), outbox)

    def on_append(self, listener: AppendListener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def _items(
        self, stream_id: str, chain: Sequence[tuple[EventEnvelope, bytes]], now: datetime
    ) -> list[Item]:
        """The items that store sealed events: one per event, a marker per command, then
        the outbox marker. A batch too big for Cosmos DB is refused."""
        items: list[Item] = [
            {
                "id": event_item_id(envelope.seq),
                "stream_id": stream_id,
                "type": EVENT,
                "seq": envelope.seq,
                "command_id": envelope.command_id,
                "hash": envelope.hash,
                "body": body.decode(),
            }
            for envelope, body in chain
        ]
        envelopes = [envelope for envelope, _ in chain]
        for command_id, first, last in command_runs(envelopes):
            items.append(
                {
                    "id": command_marker_id(command_id),
                    "stream_id": stream_id,
                    "type": COMMAND,
                    "command_id": command_id,
                    "first_seq": first,
                    "last_seq": last,
                }
            )
        first_seq, last_seq = envelopes[0].seq, envelopes[-1].seq
        items.append(
            {
                "id": outbox_marker_id(first_seq),
                "stream_id": stream_id,
                "type": OUTBOX,
                "first_seq": first_seq,
                "last_seq": last_seq,
                "written_at": timestamp_text(now),
                "outbox_at": _micros(now),
            }
        )
        size = request_bytes(items)
        if size > MAX_BATCH_BYTES:
            raise InvalidAppend(
                f"a write of {len(chain)} events to {stream_id!r} takes {size} bytes as one "
                f"Cosmos DB transactional batch, over its limit of {MAX_BATCH_BYTES}; it is "
                "refused, not split"
            )
        return items

    async def _refused(
        self, stream_id: str, command_id: str, expected: ExpectedVersion
    ) -> AppendResult | None:
        """The answer to an append whose expected version did not hold: the original
        events if the stream holds its command already, else a conflict; ``None`` (try
        again) for ``ANY``, or if the stream has reached the expected version since."""
        if expected is ANY:
            return None  # the next try reads the marker after the head anyway
        original = await self._find(stream_id, command_id)
        if original:
            return appended(stream_id, original, deduplicated=True)
        actual, _ = await self._last(stream_id)
        check_expected_version(stream_id, expected, actual)
        return None

    # -- reads ----------------------------------------------------------------------------

    async def _lookup(self, stream_id: str, *item_ids: str) -> dict[str, dict[str, Any]]:
        """The items of ``stream_id`` with these ids (one or two) that exist, by id."""
        first, second = (*item_ids, item_ids[0])[:2]
        parameters: list[dict[str, object]] = [
            {"name": "@stream", "value": stream_id},
            {"name": "@a", "value": first},
            {"name": "@b", "value": second},
        ]
        items = self.container.query_items(_LOOKUP, parameters=parameters, partition_key=stream_id)
        return {_str(item, "id", stream_id): item async for item in items}

    async def _last(self, stream_id: str) -> tuple[int, str]:
        """The stream's last seq and hash (``0`` and the genesis hash: no events)."""
        items = self.container.query_items(
            _LAST, parameters=[{"name": "@stream", "value": stream_id}], partition_key=stream_id
        )
        async for item in items:
            where = f"{stream_id} (last event)"
            return _int(item, "seq", where), _str(item, "hash", where)
        return 0, GENESIS_HASH

    async def _rows(
        self, stream_id: str, query: str, parameters: list[dict[str, object]]
    ) -> list[tuple[str, int, str]]:
        items = self.container.query_items(
            query,
            parameters=[{"name": "@stream", "value": stream_id}, *parameters],
            partition_key=stream_id,
            max_item_count=PAGE,
        )
        rows: list[tuple[str, int, str]] = []
        async for item in items:
            seq = _int(item, "seq", stream_id)
            rows.append((stream_id, seq, _str(item, "body", f"{stream_id} seq {seq}")))
        return rows

    async def _read(self, stream_id: str, first: int, last: int) -> list[EventEnvelope]:
        parameters: list[dict[str, object]] = [
            {"name": "@first", "value": first},
            {"name": "@last", "value": last},
        ]
        return decode_strict(await self._rows(stream_id, _RANGE, parameters))

    async def _find(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        marker_id = command_marker_id(command_id)
        marker = (await self._lookup(stream_id, marker_id)).get(marker_id)
        return [] if marker is None else await self._marked(stream_id, command_id, marker)

    async def _marked(
        self, stream_id: str, command_id: str, marker: Mapping[str, Any]
    ) -> list[EventEnvelope]:
        """The events a command's marker names."""
        where = f"{stream_id} command {command_id!r}"
        first, last = _int(marker, "first_seq", where), _int(marker, "last_seq", where)
        events = await self._read(stream_id, first, last)
        if len(events) != last - first + 1:
            raise IntegrityError(
                f"{where}: its marker names seqs {first}..{last} but {len(events)} are stored"
            )
        return events

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        check_seq_range(from_seq, to_seq)
        with translated(self.route):
            return await self._read(stream_id, from_seq, MAX_SEQ if to_seq is None else to_seq)

    async def find_command(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        with translated(self.route):
            return await self._find(stream_id, command_id)

    async def scan(
        self,
        *,
        domain: str | None = None,
        tenant_id: str | None = None,
        mode: Mode | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[EventEnvelope]:
        """Each stream in scope (found by its seq-1 item, one cross-partition query),
        then its events in seq order, ``batch_size`` a query (one partition each)."""
        async for rows in self._scanned(scan_scope(domain, tenant_id, mode), batch_size):
            for event in decode_strict(rows):
                yield event

    async def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]:
        """As :meth:`scan`, an undecodable event as :class:`~spine.feed.Unreadable`."""
        async for rows in self._scanned(scan_scope(domain), batch_size):
            for event in decode_rows(rows):
                yield event

    async def _scanned(
        self, scope: ScanScope, batch_size: int
    ) -> AsyncIterator[list[tuple[str, int, str]]]:
        """The stored rows of every stream in ``scope``, a stream's page at a time."""
        size = max(1, batch_size)
        parameters: list[dict[str, object]] = []
        query = _STREAMS
        if scope.prefix:
            query = _STREAMS_UNDER
            parameters.append({"name": "@prefix", "value": scope.prefix})
        with translated(self.route):
            pages = self.container.query_items(
                query, parameters=parameters, max_item_count=size
            ).by_page()
            async for page in pages:
                streams = [_str(item, "stream_id", self.route) async for item in page]
                for stream_id in streams:
                    if not scope.by_prefix and not scope.holds(stream_id):
                        continue
                    first = 1
                    while True:
                        window: list[dict[str, object]] = [
                            {"name": "@first", "value": first},
                            {"name": "@limit", "value": size},
                        ]
                        rows = await self._rows(stream_id, _PAGE, window)
                        yield rows
                        if len(rows) < size:
                            break
                        first = rows[-1][1] + 1

    # -- outbox ---------------------------------------------------------------------------

    async def pending(self, *, older_than: float = 0.0, limit: int = 1000) -> list[Pending]:
        if limit <= 0:
            return []
        cutoff = _micros(datetime.now(UTC)) - int(older_than * 1_000_000)
        parameters: list[dict[str, object]] = [
            {"name": "@limit", "value": limit},
            {"name": "@cutoff", "value": cutoff},
        ]
        found: list[Pending] = []
        with translated(self.route):
            items = self.container.query_items(
                _PENDING, parameters=parameters, max_item_count=min(limit, PAGE)
            )
            async for item in items:
                stream_id = _str(item, "stream_id", f"{self.route} outbox marker")
                where = f"{stream_id} outbox marker"
                found.append(
                    Pending(
                        stream_id=stream_id,
                        first_seq=_int(item, "first_seq", where),
                        last_seq=_int(item, "last_seq", where),
                        marker=_str(item, "id", where),
                        written_at=datetime.fromisoformat(_str(item, "written_at", where)),
                    )
                )
                if len(found) == limit:
                    break
        return found

    async def clear(self, pending: Sequence[Pending]) -> None:
        with translated(self.route):
            await asyncio.gather(*(self._delete(p.stream_id, p.marker) for p in pending))

    async def _delete(self, stream_id: str, item_id: str) -> None:
        try:
            await self.container.delete_item(item_id, partition_key=stream_id)
        except CosmosResourceNotFoundError:
            return
