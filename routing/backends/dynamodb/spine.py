"""The event store on DynamoDB, with its outbox.

Physical layout of an ``event_spine`` route: one table, named by the route (after the
connection's ``table_prefix``), billed on demand.

================  =========================  =========================================
item              key (``stream_id``, ``sk``)  attributes
================  =========================  =========================================
event             ``e#{seq:020d}``           ``seq``, ``command_id``, ``hash``, ``body``
                                             (the envelope's stored form, JSON text)
command marker    ``c#{command_id}``         ``first_seq``, ``last_seq``
outbox marker     ``o#{first_seq:020d}``     ``last_seq``, ``outbox_shard`` (one of 16,
                                             by stream), ``outbox_at`` (written, UTC)
================  =========================  =========================================

A sparse global secondary index ``outbox`` (``outbox_shard``, ``outbox_at``) holds only
the outbox markers: the relay and the sweeper read pending appends from it, oldest
first, sixteen partitions wide so no one index partition takes every append.

**Why an append is per-stream atomic and conditional.** An append is one
``TransactWriteItems``: a ``Put`` of each event item, of the command marker and of the
outbox marker, every one conditional on ``attribute_not_exists(sk)``. DynamoDB applies
all or none. The stream's head is never a separate item every append must rewrite:
the event at the next seq is created only if absent, which is the same check.

* An exact expected version ``N`` reads event ``N`` first (it gives ``prev_hash``); a
  stream that does not hold it is behind: a conflict naming the actual version.
* ``NO_STREAM`` creates seq 1; ``ANY`` reads the stream's last event and retries when
  another writer wins the next seq.
* The transaction's cancellation reasons tell a repeated command (its marker exists:
  the original events are answered, ``deduplicated``) from a lost race (an event item
  exists: a conflict, or for ``ANY`` another round).
* ``ClientRequestToken`` is derived from the stream, command and version, so the SDK's
  own retry of one attempt within ten minutes is idempotent.

**Limits.** A transaction takes 100 actions and 4 MB, an item 400 KB: an append of more
than 98 events (two actions are markers), an event whose stored form is over 380 KB, or
a request over 4 MB is refused (``InvalidAppend``), never split.

**Imports** (:meth:`DynamoEventStore.import_events`) write sealed events through the
same transaction, a marker per command they hold, as many events as fit in 100 actions
and 4 MB a transaction (:func:`spine.importing.split`).

Every driver error becomes :class:`~spine.errors.BackendUnavailable` naming the route
and the backend.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from routing.backends.common import decode_rows, decode_strict
from routing.backends.dynamodb.common import BACKEND, Item, T, _n, _s, call, translate
from spine.appending import (
    MAX_SEQ,
    appended,
    check_expected_version,
    check_seq_range,
    validate_append,
)
from spine.codec import encode, seal_after, timestamp_text
from spine.errors import (
    BackendUnavailable,
    ConcurrencyError,
    EnginesError,
    InvalidAppend,
)
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

#: Actions a transaction takes, less the two markers every append writes.
MAX_EVENTS: Final = 98
MAX_ITEM_BODY: Final = 380 * 1024
MAX_REQUEST: Final = 4 * 1024 * 1024 - 64 * 1024
OUTBOX_SHARDS: Final = 16
OUTBOX_INDEX: Final = "outbox"
_ANY_ROUNDS: Final = 200


class _Taken(Exception):
    """A write's transaction was cancelled: an event item (``event``) or a command
    marker (``command``) it creates exists already, or something else (neither)."""

    def __init__(self, error: ClientError, *, event: bool, command: bool) -> None:
        self.error = error
        self.event = event
        self.command = command
        super().__init__(str(error))


def event_sk(seq: int) -> str:
    return f"e#{seq:020d}"


def _shard(stream_id: str) -> str:
    return str(zlib.crc32(stream_id.encode()) % OUTBOX_SHARDS)


class DynamoEventStore:
    """:class:`spine.EventStore` and :class:`spine.feed.Outbox` on one table (see the
    module's docstring)."""

    def __init__(self, client: Any, table: str, route: str) -> None:
        self._client = client
        self.table = table
        self.route = route
        self._listeners = AppendListeners(route)

    async def _call(self, what: Callable[[], Awaitable[T]]) -> T:
        try:
            return await what()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ValidationException" and "size" in str(exc).lower():
                raise InvalidAppend(f"DynamoDB refused the write as too large: {exc}") from exc
            raise BackendUnavailable(self.route, BACKEND, f"{code}: {exc}") from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise BackendUnavailable(self.route, BACKEND, f"{type(exc).__name__}: {exc}") from exc

    # -- appending ---------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        command_id, batch = validate_append(
            stream_id, events, expected_version, max_events=MAX_EVENTS
        )
        for _ in range(_ANY_ROUNDS):
            head, prev_hash = await self._head(stream_id, command_id, expected_version)
            if isinstance(head, AppendResult):
                return head  # the command is in the stream already
            result = await self._transact(
                stream_id, command_id, batch, expected_version, head, prev_hash
            )
            if result is not None:
                return result
        raise ConcurrencyError(stream_id, "ANY", await self._last_seq(stream_id))

    async def _head(
        self, stream_id: str, command_id: str, expected: ExpectedVersion
    ) -> tuple[int | AppendResult, str]:
        """The version to append after and its hash; or, if the stream cannot be at the
        expected version but holds the command, the command's original result."""
        if expected is NO_STREAM:
            return 0, GENESIS_HASH
        if expected is ANY:
            last = await self._last(stream_id)
            return (0, GENESIS_HASH) if last is None else last
        assert isinstance(expected, int)
        if expected == 0:
            return 0, GENESIS_HASH
        item = await self._get(stream_id, event_sk(expected))
        if item is None:  # the stream is behind the version expected
            original = await self.find_command(stream_id, command_id)
            if original:
                return appended(stream_id, original, deduplicated=True), ""
            raise ConcurrencyError(stream_id, expected, await self._last_seq(stream_id))
        return expected, item["hash"]["S"]

    async def _transact(
        self,
        stream_id: str,
        command_id: str,
        batch: Sequence[NewEvent],
        expected: ExpectedVersion,
        head: int,
        prev_hash: str,
    ) -> AppendResult | None:
        """One attempt at appending after ``head``: the result, or ``None`` if ``ANY``
        lost the race (try again)."""
        now = datetime.now(UTC)
        chain = seal_after(
            batch, stream_id=stream_id, head=head, prev_hash=prev_hash, recorded_at=now
        )
        token = uuid.uuid5(uuid.NAMESPACE_URL, f"{stream_id}\n{command_id}\n{head}")
        try:
            sealed = await self._write(stream_id, chain, now, token)
        except _Taken as taken:
            if taken.command:
                original = await self.find_command(stream_id, command_id)
                if original:
                    return appended(stream_id, original, deduplicated=True)
            if taken.event:
                if expected is ANY:
                    return None
                actual = await self._last_seq(stream_id)
                check_expected_version(stream_id, expected, actual)
                raise ConcurrencyError(stream_id, expected, actual) from taken.error
            raise self._unavailable(taken.error) from taken.error
        return self._told(stream_id, sealed, now)

    def _told(self, stream_id: str, sealed: list[EventEnvelope], now: datetime) -> AppendResult:
        """The result of a write of ``sealed``, told to this store's listeners."""
        result = appended(stream_id, sealed)
        first, last = sealed[0].seq, sealed[-1].seq
        self._listeners.tell(Pending(stream_id, first, last, f"o#{first:020d}", now), result)
        return result

    async def _write(
        self,
        stream_id: str,
        chain: Sequence[tuple[EventEnvelope, bytes]],
        now: datetime,
        token: uuid.UUID,
    ) -> list[EventEnvelope]:
        """Write sealed events (each with its stored form) in one transaction: an item
        per event, a marker per command, the outbox marker, each created only if absent.
        What an append and an import write; raises :class:`_Taken` if an item exists."""
        sealed: list[EventEnvelope] = []
        puts: list[Item] = []
        size = 0
        for envelope, body in chain:
            if len(body) > MAX_ITEM_BODY:
                raise InvalidAppend(
                    f"event {envelope.event_type} is {len(body)} bytes stored; a DynamoDB item "
                    f"takes at most {MAX_ITEM_BODY} here (it is refused, not split)"
                )
            size += len(body)
            sealed.append(envelope)
            puts.append(
                {
                    "stream_id": _s(stream_id),
                    "sk": _s(event_sk(envelope.seq)),
                    "seq": _n(envelope.seq),
                    "command_id": _s(envelope.command_id),
                    "hash": _s(envelope.hash),
                    "body": _s(body.decode()),
                }
            )
        if size > MAX_REQUEST:
            raise InvalidAppend(
                f"an append of {size} bytes is over DynamoDB's transaction limit of 4 MB "
                "(it is refused, not split)"
            )
        for command_id, first_seq, last_seq in command_runs(sealed):
            puts.append(
                {
                    "stream_id": _s(stream_id),
                    "sk": _s("c#" + command_id),
                    "first_seq": _n(first_seq),
                    "last_seq": _n(last_seq),
                }
            )
        first, last = sealed[0].seq, sealed[-1].seq
        puts.append(
            {
                "stream_id": _s(stream_id),
                "sk": _s(f"o#{first:020d}"),
                "last_seq": _n(last),
                "outbox_shard": _s(_shard(stream_id)),
                "outbox_at": _s(f"{timestamp_text(now)}#{stream_id}"),
            }
        )
        items = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(sk)",
                }
            }
            for item in puts
        ]
        try:
            await self._client.transact_write_items(
                TransactItems=items, ClientRequestToken=str(token)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise self._unavailable(exc) from exc
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            taken = [reason == "ConditionalCheckFailed" for reason in reasons]
            events, markers = taken[: len(sealed)], taken[len(sealed) : len(puts) - 1]
            raise _Taken(exc, event=any(events), command=any(markers)) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise BackendUnavailable(self.route, BACKEND, f"{type(exc).__name__}: {exc}") from exc
        return sealed

    async def import_events(
        self, stream_id: str, events: Sequence[EventEnvelope], *, dry_run: bool = False
    ) -> ImportResult:
        """As :class:`spine.EventStore` says: a transaction per 100 items (events, a
        marker per command, the outbox marker) and 4 MB."""
        return await run_import(
            stream_id,
            events,
            read=self.read_stream,
            write=self._import_chunk,
            cut=partial(
                split,
                max_items=MAX_EVENTS + 2,
                per_command=1,
                extra=1,
                max_bytes=MAX_REQUEST,
                size=lambda e: len(encode(e)),
            ),
            find_command=self.find_command,
            dry_run=dry_run,
        )

    async def _import_chunk(self, stream_id: str, chunk: tuple[EventEnvelope, ...]) -> None:
        now = datetime.now(UTC)
        first, last = chunk[0].seq, chunk[-1].seq
        key = f"{stream_id}\nimport {first}..{last}\n{timestamp_text(now)}"
        token = uuid.uuid5(uuid.NAMESPACE_URL, key)
        try:
            sealed = await self._write(stream_id, [(e, encode(e)) for e in chunk], now, token)
        except _Taken as taken:
            if not (taken.event or taken.command):
                raise self._unavailable(taken.error) from taken.error
            raise ConcurrencyError(stream_id, first - 1, await self._last_seq(stream_id)) from None
        self._told(stream_id, sealed, now)

    def _unavailable(self, exc: ClientError) -> EnginesError:
        return translate(self.route, exc)

    # -- reading -----------------------------------------------------------------------

    async def _get(self, stream_id: str, sk: str) -> Item | None:
        answer = await self._call(
            lambda: self._client.get_item(
                TableName=self.table,
                Key={"stream_id": _s(stream_id), "sk": _s(sk)},
                ConsistentRead=True,
            )
        )
        item: Item | None = answer.get("Item")
        return item

    async def _last(self, stream_id: str) -> tuple[int, str] | None:
        answer = await self._call(
            lambda: self._client.query(
                TableName=self.table,
                KeyConditionExpression="stream_id = :s AND begins_with(sk, :e)",
                ExpressionAttributeValues={":s": _s(stream_id), ":e": _s("e#")},
                ProjectionExpression="seq, #h",
                ExpressionAttributeNames={"#h": "hash"},
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
        )
        items = answer.get("Items", [])
        if not items:
            return None
        return int(items[0]["seq"]["N"]), items[0]["hash"]["S"]

    async def _last_seq(self, stream_id: str) -> int:
        last = await self._last(stream_id)
        return 0 if last is None else last[0]

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        check_seq_range(from_seq, to_seq)
        return decode_strict(await self._rows(stream_id, from_seq, to_seq))

    async def _rows(
        self, stream_id: str, from_seq: int, to_seq: int | None
    ) -> list[tuple[str, int, bytes]]:
        """The stored forms of the stream's events ``from_seq..to_seq``, in seq order."""
        upper = MAX_SEQ if to_seq is None else to_seq
        if upper < from_seq:
            return []
        rows: list[tuple[str, int, bytes]] = []
        start: Item | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "stream_id = :s AND sk BETWEEN :a AND :b",
                "ExpressionAttributeValues": {
                    ":s": _s(stream_id),
                    ":a": _s(event_sk(max(from_seq, 1))),
                    ":b": _s(event_sk(upper)),
                },
                "ConsistentRead": True,
            }
            if start is not None:
                request["ExclusiveStartKey"] = start
            answer = await call(self.route, self._client.query, **request)
            rows += [
                (stream_id, int(i["seq"]["N"]), i["body"]["S"].encode())
                for i in answer.get("Items", [])
            ]
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return rows

    async def find_command(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        marker = await self._get(stream_id, "c#" + command_id)
        if marker is None:
            return []
        first, last = int(marker["first_seq"]["N"]), int(marker["last_seq"]["N"])
        return await self.read_stream(stream_id, first, last)

    async def scan(
        self,
        *,
        domain: str | None = None,
        tenant_id: str | None = None,
        mode: Mode | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[EventEnvelope]:
        """Every stream in scope (found by its first event's item), then each stream's
        events by key order, so each stream comes in seq order."""
        async for sid in self._streams(domain, tenant_id, mode, batch_size):
            seq = 1
            while True:
                events = await self.read_stream(sid, seq, seq + batch_size - 1)
                for event in events:
                    yield event
                if len(events) < batch_size:
                    break
                seq += batch_size

    async def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]:
        """As :meth:`scan`, an undecodable event as :class:`~spine.feed.Unreadable`."""
        async for sid in self._streams(domain, None, None, batch_size):
            seq = 1
            while True:
                rows = await self._rows(sid, seq, seq + batch_size - 1)
                for event in decode_rows(rows):
                    yield event
                if len(rows) < batch_size:
                    break
                seq += batch_size

    async def _streams(
        self, domain: str | None, tenant_id: str | None, mode: Mode | None, batch_size: int
    ) -> AsyncIterator[str]:
        """The ids of the streams in scope, a page of the table at a time."""
        scope = scan_scope(domain, tenant_id, mode)
        start: Item | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table,
                "FilterExpression": "sk = :first AND begins_with(stream_id, :p)",
                "ExpressionAttributeValues": {":first": _s(event_sk(1)), ":p": _s(scope.prefix)},
                "ProjectionExpression": "stream_id",
                "Limit": max(batch_size, 1),
            }
            if not scope.prefix:
                request["FilterExpression"] = "sk = :first"
                del request["ExpressionAttributeValues"][":p"]
            if start is not None:
                request["ExclusiveStartKey"] = start
            answer = await call(self.route, self._client.scan, **request)
            for item in answer.get("Items", []):
                sid = item["stream_id"]["S"]
                if scope.by_prefix or scope.holds(sid):
                    yield sid
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return

    # -- the outbox --------------------------------------------------------------------

    async def pending(self, *, older_than: float = 0.0, limit: int = 1000) -> list[Pending]:
        cutoff = timestamp_text(datetime.now(UTC) - timedelta(seconds=older_than)) + "#\uffff"

        async def shard(number: int) -> list[Item]:
            answer = await self._call(
                lambda: self._client.query(
                    TableName=self.table,
                    IndexName=OUTBOX_INDEX,
                    KeyConditionExpression="outbox_shard = :s AND outbox_at <= :t",
                    ExpressionAttributeValues={":s": _s(str(number)), ":t": _s(cutoff)},
                    Limit=limit,
                )
            )
            found: list[Item] = answer.get("Items", [])
            return found

        shards = await asyncio.gather(*(shard(n) for n in range(OUTBOX_SHARDS)))
        items = sorted((i for found in shards for i in found), key=lambda i: i["outbox_at"]["S"])
        return [
            Pending(
                stream_id=i["stream_id"]["S"],
                first_seq=int(i["sk"]["S"][2:]),
                last_seq=int(i["last_seq"]["N"]),
                marker=i["sk"]["S"],
                written_at=datetime.fromisoformat(i["outbox_at"]["S"].split("#", 1)[0]),
            )
            for i in items[:limit]
        ]

    async def clear(self, pending: Sequence[Pending]) -> None:
        keys = [{"stream_id": _s(p.stream_id), "sk": _s(p.marker)} for p in pending]
        for start in range(0, len(keys), 25):
            requests: dict[str, Any] = {
                self.table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + 25]]
            }
            for _ in range(10):
                answer = await call(
                    self.route, self._client.batch_write_item, RequestItems=requests
                )
                requests = answer.get("UnprocessedItems") or {}
                if not requests:
                    break
                await asyncio.sleep(0.05)
            else:
                raise BackendUnavailable(
                    self.route, BACKEND, "outbox markers were left unprocessed ten times"
                )

    def on_append(self, listener: AppendListener) -> Callable[[], None]:
        return self._listeners.add(listener)
