"""Views on DynamoDB: one table per view route (after the connection's
``table_prefix``), billed on demand, keys ``pk`` and ``sk``.

=================  ===============================  =====================================
item               key (``pk``, ``sk``)              attributes
=================  ===============================  =====================================
record             ``r#{key}``, ``r``               ``tenant_id``, ``mode``, ``user_id``,
                                                    ``surface_id``, ``project_id`` (absent
                                                    when ``None``), ``version``, ``deleted``,
                                                    ``expires_at`` (epoch seconds),
                                                    ``data`` (the JSON text), and per index
                                                    its ``ih_*`` and ``ir_*`` keys
applied progress   ``a#{stream_id}``, projector     ``seq``
declared shape     ``m#shape``, the shape's name    ``shape`` (JSON), ``index``, ``ready``
=================  ===============================  =====================================

``data`` is kept as its JSON text, so nested lists, floats and nulls read back exactly;
every filter and order is decided on the decoded record (:mod:`.viewindex`), and only
the index keys are extracted into attributes.

**Indexes.** The table is made with the global secondary index ``by__updated_at``: hash
``{tenant}#{mode}``, range the order value's sortable text, a terminator and the key
(:func:`~.viewindex.range_key`). Each declared :class:`QueryShape` gets one more index
(``declare``): hash ``{tenant}#{mode}#`` and the JSON of its equality values, range the
same way by its order field. Tombstones, and records whose equality fields hold no
scalar, carry no index keys: those indexes are sparse. Indexes project every
attribute, so a page is read from the index alone (each index costs one more write per
record write). DynamoDB takes 20 indexes a table and adds them one ``UpdateTable`` at a
time: ``declare`` adds each, waits until it is active, writes its keys onto the records
already there, and only then marks the shape ``ready`` for queries; shapes beyond 20
indexes are answered the general way. A process learns the declared shapes when it
opens the store and writes every shape's keys; a deployment declares its shapes at
start-up (the runtime does), so a process that opened the store before a new shape was
declared elsewhere does not write that shape's keys until it reopens the store.

**Queries.** Every query names tenant and mode. One naming an order field that a ready
index is ordered by (with equality fields all pinned by the query) reads that index's
partition as one key range from the cursor on, in order, checking each record against
the whole query, until the page is full (cost: what it reads up to the page's end,
including records the other filters reject). Any other query reads its best partition
(the ready index pinning the most of its equalities; at worst every record of tenant
and mode) whole, checks, sorts by the order value in memory and takes the page: correct
but costing a read of that partition per page. Index reads are eventually consistent
(DynamoDB has no consistent reads on a global index); ``get``, ``get_many`` and
``applied`` are strongly consistent. The cursor is the last record's sortable order
value and key (:func:`projections.views.encode_cursor`): keyset paging, stable under
concurrent writes.

**Expiry.** A record past ``expires_at`` reads absent everywhere but
``get_many(include_deleted=True)``. No DynamoDB TTL deletes it: as on SQLite, an
expired record keeps its version, so a late or replayed event can never write an older
version over it.

**The whole view.** ``records``, ``progress`` and ``purge`` (a rebuild's verification,
a sandbox, an in-place rebuild) read the table by a consistent ``Scan``, ``batch_size``
items a page, filtering on the item kind (and ``tenant_id``; a progress item's tenant is
its stream id's second segment, checked here): records have no tenant partition to
``Query`` instead, and the tenant indexes hold no tombstones. ``purge`` deletes what
the scan finds, 25 items a ``BatchWriteItem``; a record's index entries are its own
attributes and go with it, and the declared shapes stay.

**Why a commit is atomic and conditional.** Each :class:`ViewWrite` is all of one
``TransactWriteItems`` (several writes that touch different items may share one): a
``Put`` of each record conditional on the version it replaces (``0``:
``attribute_not_exists``), and a ``Put`` of the stream's progress conditional on
``applied_from`` (``0``: absent). The cancellation reasons, one per action, name the
refused writes; the others of that transaction are tried again without them. A write
touching a record that a refused write touched is refused too; writes run in order, so
one may build on the records of an earlier one. A transaction takes 100 actions and
4 MB and an item 400 KB: a write of more than :data:`MAX_WRITE_RECORDS` records (one
action is the progress), or one too large, raises ``InvalidInput`` before anything of
the commit is written. ``put`` and ``delete`` are single conditional puts (written only
above the stored version); ``delete`` writes a tombstone with a version, which no older
version can overwrite.

Every driver error becomes a :mod:`spine.errors` error naming the route and backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from projections.views import (
    Page,
    QueryShape,
    ViewQuery,
    ViewRecord,
    ViewWrite,
    decode_cursor,
    encode_cursor,
)
from routing.backends.common import stream_tenant
from routing.backends.dynamodb.common import BACKEND, Item, _n, _s, call, error_code, translate
from routing.backends.dynamodb.viewindex import (
    DEFAULT_SHAPE,
    MAX_INDEXES,
    MAX_RANGE_BYTES,
    answers,
    equalities,
    field_value,
    index_attributes,
    index_hash,
    index_keys,
    index_name,
    is_sortable,
    range_key,
    sortable,
)
from spine.codec import trusted
from spine.errors import BackendUnavailable, InvalidInput
from spine.events import Scope

#: Records one :class:`ViewWrite` may hold: a transaction's 100 actions, less the progress.
MAX_WRITE_RECORDS: Final = 99
MAX_ACTIONS: Final = 100
MAX_ITEM: Final = 400 * 1024
MAX_REQUEST: Final = 4 * 1024 * 1024 - 64 * 1024
SHAPE_PK: Final = "m#shape"
#: Deletes one ``BatchWriteItem`` takes.
DELETES_PER_BATCH: Final = 25
#: How many ``BatchWriteItem`` requests of a purge may be in flight at once.
CONCURRENT_DELETES: Final = 8
_RETRIES: Final = 8
_RETRYABLE: Final = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)

log = logging.getLogger(__name__)


def record_pk(key: str) -> dict[str, Any]:
    return {"pk": _s("r#" + key), "sk": _s("r")}


def progress_pk(projector: str, stream_id: str) -> dict[str, Any]:
    return {"pk": _s("a#" + stream_id), "sk": _s(projector)}


def _size(item: Item) -> int:
    """An item's size as DynamoDB counts it, rounded up (names and values)."""
    total = 0
    for name, value in item.items():
        ((kind, v),) = value.items()
        total += len(name.encode()) + (len(v.encode()) if kind in ("S", "N") else 1)
    return total


def _record(item: Item) -> ViewRecord:
    scope: dict[str, Any] = {
        name: item[name]["S"] if name in item else None
        for name in ("tenant_id", "mode", "user_id", "surface_id", "project_id")
    }
    expires = item.get("expires_at")
    return trusted(
        ViewRecord,
        {
            "key": item["pk"]["S"][2:],
            "scope": trusted(Scope, scope),
            "version": int(item["version"]["N"]),
            "data": orjson.loads(item["data"]["S"]),
            "expires_at": datetime.fromtimestamp(float(expires["N"]), UTC) if expires else None,
            "deleted": item["deleted"]["BOOL"],
        },
    )


@dataclass
class _Plan:
    """One :class:`ViewWrite` as transaction actions, and the items it touches."""

    write: ViewWrite
    actions: list[Item] = field(default_factory=list)
    items: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    size: int = 0
    valid: bool = True
    """False if the write is refused before any request (one record replacing another
    of the same write at a version that is not the other's)."""


class DynamoViewStore:
    """:class:`projections.ViewStore` on one table (see the module's docstring).
    ``create``: :meth:`declare` may build indexes; ``created`` gets a line for each."""

    max_write_records: int = MAX_WRITE_RECORDS

    def __init__(
        self, client: Any, table: str, route: str, *, create: bool, created: list[str]
    ) -> None:
        self._client = client
        self.table = table
        self.route = route
        self.create = create
        self._created = created
        self._shapes: dict[str, QueryShape] = {DEFAULT_SHAPE.name: DEFAULT_SHAPE}
        """Every shape whose keys a record write carries."""
        self._ready: dict[str, QueryShape] = {DEFAULT_SHAPE.name: DEFAULT_SHAPE}
        """The shapes whose index answers queries (built and filled)."""
        self._declaring = asyncio.Lock()

    # -- items -------------------------------------------------------------------------

    def _item(self, record: ViewRecord) -> Item:
        item: Item = {**record_pk(record.key)}
        s = record.scope
        for name in ("tenant_id", "mode", "user_id", "surface_id", "project_id"):
            value = getattr(s, name)
            if value is not None:
                item[name] = _s(value)
        item["version"] = _n(record.version)
        item["deleted"] = {"BOOL": record.deleted}
        if record.expires_at is not None:
            item["expires_at"] = {"N": repr(record.expires_at.timestamp())}
        item["data"] = _s(orjson.dumps(record.data).decode())
        for shape in self._shapes.values():
            keys = index_keys(shape, record)
            if keys is None:
                continue
            hash_attr, range_attr = index_attributes(shape)
            if len(keys[1].encode()) > MAX_RANGE_BYTES:
                raise InvalidInput(
                    f"view record {record.key!r}: its {shape.order_by!r} value and key are "
                    f"over the {MAX_RANGE_BYTES} bytes a DynamoDB index sort key takes"
                )
            item[hash_attr], item[range_attr] = _s(keys[0]), _s(keys[1])
        size = _size(item)
        if size > MAX_ITEM:
            raise InvalidInput(
                f"view record {record.key!r} is {size} bytes stored; a DynamoDB item takes "
                f"at most {MAX_ITEM} (it is refused, not split)"
            )
        return item

    def _unavailable(self, exc: Exception) -> Exception:
        return translate(self.route, exc)

    # -- reading -----------------------------------------------------------------------

    async def _batch_get(self, keys: Sequence[dict[str, Any]]) -> list[Item]:
        """The items under ``keys`` (read consistently, 100 a request)."""
        found: list[Item] = []
        unique = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
        for i in range(0, len(unique), 100):
            request: dict[str, Any] = {
                self.table: {"Keys": unique[i : i + 100], "ConsistentRead": True}
            }
            for attempt in range(_RETRIES * 4):
                answer = await call(self.route, self._client.batch_get_item, RequestItems=request)
                found += answer.get("Responses", {}).get(self.table, [])
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise BackendUnavailable(self.route, BACKEND, "keys left unprocessed, retried")
        return found

    async def get(self, key: str) -> ViewRecord | None:
        answer = await call(
            self.route,
            self._client.get_item,
            TableName=self.table,
            Key=record_pk(key),
            ConsistentRead=True,
        )
        item = answer.get("Item")
        if item is None:
            return None
        record = _record(item)
        return record if self._live(record) else None

    @staticmethod
    def _live(record: ViewRecord) -> bool:
        if record.deleted:
            return False
        return record.expires_at is None or record.expires_at > datetime.now(UTC)

    async def get_many(
        self, keys: Sequence[str], *, include_deleted: bool = False
    ) -> Mapping[str, ViewRecord]:
        found: dict[str, ViewRecord] = {}
        for item in await self._batch_get([record_pk(k) for k in keys]):
            record = _record(item)
            if include_deleted or self._live(record):
                found[record.key] = record
        return found

    async def applied(self, projector: str, stream_ids: Sequence[str]) -> dict[str, int]:
        items = await self._batch_get([progress_pk(projector, s) for s in stream_ids])
        return {i["pk"]["S"][2:]: int(i["seq"]["N"]) for i in items}

    # -- writing -----------------------------------------------------------------------

    async def put(self, record: ViewRecord) -> bool:
        return await self.put_many([record]) == 1

    async def put_many(self, records: Sequence[ViewRecord]) -> int:
        items = [self._item(r) for r in records]  # every refusal before any write
        by_key: dict[str, list[Item]] = {}
        for item in items:
            by_key.setdefault(item["pk"]["S"], []).append(item)

        async def one_key(chain: list[Item]) -> int:  # in order, as they were given
            return sum([await self._put_above(item) for item in chain])

        counts = await asyncio.gather(*(one_key(chain) for chain in by_key.values()))
        return sum(counts)

    async def _put_above(self, item: Item) -> bool:
        """Put ``item`` if its version is above the stored one."""
        try:
            await self._client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR version < :v",
                ExpressionAttributeValues={":v": item["version"]},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise self._unavailable(exc) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return True

    async def delete(self, key: str, scope: Scope, version: int) -> bool:
        return await self.put(ViewRecord(key=key, scope=scope, version=version, deleted=True))

    def _plan(self, projector: str, write: ViewWrite) -> _Plan:
        if len(write.records) > MAX_WRITE_RECORDS:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} holds {len(write.records)} "
                f"records; DynamoDB commits at most {MAX_WRITE_RECORDS} with the stream's "
                "progress in one transaction (split the write; it is refused, not split)"
            )
        plan = _Plan(write)
        # one item once a transaction: a record the write replaces twice is written once,
        # conditional on what the first replaced, if each replaces the one before
        latest: dict[str, tuple[ViewRecord, int]] = {}
        first: dict[str, int] = {}
        for record, replaced in write.records:
            if record.key in latest:
                if replaced != latest[record.key][0].version:
                    plan.valid = False
            else:
                first[record.key] = replaced
            latest[record.key] = (record, replaced)
        for key, (record, _) in latest.items():
            item = self._item(record)
            plan.size += _size(item)
            put: dict[str, Any] = {"TableName": self.table, "Item": item}
            if first[key] == 0:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                put["ConditionExpression"] = "version = :v"
                put["ExpressionAttributeValues"] = {":v": _n(first[key])}
            plan.actions.append({"Put": put})
            plan.items.add("r#" + key)
            plan.keys.add(key)
        progress: Item = {**progress_pk(projector, write.stream_id), "seq": _n(write.applied_to)}
        put = {"TableName": self.table, "Item": progress}
        if write.applied_from == 0:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "seq = :from"
            put["ExpressionAttributeValues"] = {":from": _n(write.applied_from)}
        plan.actions.append({"Put": put})
        plan.items.add(f"a#{write.stream_id}\n{projector}")
        plan.size += _size(progress)
        if plan.size > MAX_REQUEST:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} is {plan.size} bytes; a DynamoDB "
                "transaction takes at most 4 MB (it is refused, not split)"
            )
        return plan

    async def commit(self, projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        plans = [self._plan(projector, w) for w in writes]  # every refusal before any write
        refused: set[int] = set()
        lost: set[str] = set()
        batch: list[int] = []
        batch_items: set[str] = set()
        batch_actions = batch_size = 0

        async def flush() -> None:
            nonlocal batch, batch_items, batch_actions, batch_size
            for i in await self._transact([plans[i] for i in batch], batch):
                refused.add(i)
                lost.update(plans[i].keys)
            batch, batch_items, batch_actions, batch_size = [], set(), 0, 0

        for i, plan in enumerate(plans):
            # a write touching an item of the batch waits for the batch's outcome
            if batch and (
                plan.items & batch_items
                or batch_actions + len(plan.actions) > MAX_ACTIONS
                or batch_size + plan.size > MAX_REQUEST
            ):
                await flush()
            if not plan.valid or plan.keys & lost:
                refused.add(i)
                lost.update(plan.keys)
                continue
            batch.append(i)
            batch_items |= plan.items
            batch_actions += len(plan.actions)
            batch_size += plan.size
        if batch:
            await flush()
        return [w.stream_id for i, w in enumerate(writes) if i in refused]

    async def _transact(self, plans: list[_Plan], indices: list[int]) -> list[int]:
        """Write ``plans`` (independent writes) in one transaction; those whose
        conditions fail are left out and the rest written again. Returns the indices of
        the refused ones."""
        refused: list[int] = []
        remaining = list(zip(indices, plans, strict=True))
        attempt = 0
        while remaining:
            actions = [a for _, p in remaining for a in p.actions]
            try:
                await self._client.transact_write_items(TransactItems=actions)
                return refused
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise self._unavailable(exc) from exc
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                failed, retry, at = set(), False, 0
                for i, plan in remaining:
                    codes = reasons[at : at + len(plan.actions)]
                    at += len(plan.actions)
                    if "ConditionalCheckFailed" in codes:
                        failed.add(i)
                    elif any(c in _RETRYABLE for c in codes):
                        retry = True
                    elif any(c != "None" for c in codes):
                        raise self._unavailable(exc) from exc
                if not failed and not retry:
                    raise self._unavailable(exc) from exc
                if not failed:
                    attempt += 1
                    if attempt >= _RETRIES:
                        raise self._unavailable(exc) from exc
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                refused += [i for i, _ in remaining if i in failed]
                remaining = [(i, p) for i, p in remaining if i not in failed]
            except (TimeoutError, BotoCoreError, OSError) as exc:
                raise self._unavailable(exc) from exc
        return refused

    # -- the whole view (rebuild, sandbox) ---------------------------------------------

    async def _scan_pages(self, request: dict[str, Any]) -> AsyncIterator[list[Item]]:
        """The items a scan finds, a page (``request``'s ``Limit`` items read) at a time."""
        while True:
            answer = await call(self.route, self._client.scan, **request)
            yield answer.get("Items", [])
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return
            request = {**request, "ExclusiveStartKey": start}

    @staticmethod
    def _whole(condition: str, values: dict[str, Any], batch_size: int) -> dict[str, Any]:
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
        return {
            "FilterExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
            "Limit": batch_size,
        }

    async def records(
        self, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[ViewRecord]:
        """Every record item, by a consistent scan of the table (records are keyed by
        their key alone: no tenant partition to read instead; the tenant is a filter)."""
        condition, values = "begins_with(pk, :r)", {":r": _s("r#")}
        if tenant_id is not None:
            condition += " AND tenant_id = :t"
            values[":t"] = _s(tenant_id)
        request = {"TableName": self.table, **self._whole(condition, values, batch_size)}
        async for items in self._scan_pages(request):
            for item in items:
                yield _record(item)

    async def progress(
        self, projector: str, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, int]]:
        condition = "begins_with(pk, :a) AND sk = :p"
        values = {":a": _s("a#"), ":p": _s(projector)}
        if tenant_id is not None:  # narrows what comes back; the tenant is checked here
            condition += " AND contains(pk, :t)"
            values[":t"] = _s("/" + tenant_id)
        request = {
            "TableName": self.table,
            "ProjectionExpression": "pk, #s",
            "ExpressionAttributeNames": {"#s": "seq"},
            **self._whole(condition, values, batch_size),
        }
        async for items in self._scan_pages(request):
            for item in items:
                stream_id = item["pk"]["S"][2:]
                if tenant_id is None or stream_tenant(stream_id) == tenant_id:
                    yield stream_id, int(item["seq"]["N"])

    async def purge(self, *, tenant_id: str | None = None) -> int:
        """Delete the record and progress items (of ``tenant_id``) page by page, as one
        scan finds them, 25 a ``BatchWriteItem``. A record's index entries go with it
        (they are its attributes); the declared shapes (``m#shape``) stay, as do their
        indexes, so the purged table answers as a new one with those shapes declared."""
        condition, values = (
            "begins_with(pk, :a) OR begins_with(pk, :r)",
            {
                ":a": _s("a#"),
                ":r": _s("r#"),
            },
        )
        if tenant_id is not None:
            condition = "begins_with(pk, :a) OR (begins_with(pk, :r) AND tenant_id = :t)"
            values[":t"] = _s(tenant_id)
        request = {
            "TableName": self.table,
            "ProjectionExpression": "pk, sk",
            **self._whole(condition, values, 500),
        }
        deleted = 0
        async for items in self._scan_pages(request):
            keys = []
            for item in items:
                pk = item["pk"]["S"]
                if pk.startswith("a#") and tenant_id not in (None, stream_tenant(pk[2:])):
                    continue  # another tenant's progress
                deleted += pk.startswith("r#")
                keys.append({"pk": item["pk"], "sk": item["sk"]})
            await self._delete(keys)
        return deleted

    async def _delete(self, keys: Sequence[dict[str, Any]]) -> None:
        """Delete the items under ``keys``, 25 a request, retrying what comes back
        unprocessed."""
        gate = asyncio.Semaphore(CONCURRENT_DELETES)

        async def one(chunk: Sequence[dict[str, Any]]) -> None:
            request = {self.table: [{"DeleteRequest": {"Key": k}} for k in chunk]}
            async with gate:
                for attempt in range(_RETRIES * 4):
                    answer = await call(
                        self.route, self._client.batch_write_item, RequestItems=request
                    )
                    request = answer.get("UnprocessedItems") or {}
                    if not request:
                        return
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
            raise BackendUnavailable(self.route, BACKEND, "deletes left unprocessed, retried")

        chunks = [keys[i : i + DELETES_PER_BATCH] for i in range(0, len(keys), DELETES_PER_BATCH)]
        await asyncio.gather(*(one(chunk) for chunk in chunks))

    # -- shapes and their indexes ------------------------------------------------------

    async def load(self) -> None:
        """Learn the shapes declared on this table (by any process)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": _s(SHAPE_PK)},
            "ConsistentRead": True,
        }
        for item in await self._query(request):
            shape = QueryShape.model_validate_json(item["shape"]["S"])
            self._shapes[shape.name] = shape
            if item.get("ready", {}).get("BOOL"):
                self._ready[shape.name] = shape

    async def declare(self, shapes: Sequence[QueryShape]) -> None:
        """Build an index for each shape not ready yet; without ``create``, only learn
        what other processes have declared and built."""
        if not shapes:
            return
        async with self._declaring:
            await self.load()
            if not self.create:
                return
            for shape in shapes:
                if shape.name not in self._ready:
                    await self._build(shape)

    async def _indexes(self) -> dict[str, str]:
        answer = await call(self.route, self._client.describe_table, TableName=self.table)
        indexes = answer["Table"].get("GlobalSecondaryIndexes", [])
        return {i["IndexName"]: i.get("IndexStatus", "ACTIVE") for i in indexes}

    async def _build(self, shape: QueryShape) -> None:
        """Add ``shape``'s index, wait until it is active, write its keys onto the records
        there, then mark the shape ready."""
        name = index_name(shape)
        hash_attr, range_attr = index_attributes(shape)
        indexes = await self._indexes()
        if name not in indexes and len(indexes) >= MAX_INDEXES:
            log.warning(
                "view table %s has %d indexes already: shape %s is answered without one",
                self.table,
                len(indexes),
                shape.name,
            )
            return
        # first recorded, so every writer that opens the store from now on indexes it
        await self._shape_item(shape, ready=False)
        self._shapes[shape.name] = shape
        if name not in indexes:
            await self._create_index(name, hash_attr, range_attr)
        await self._wait_active(name)
        await self._fill(shape)
        await self._shape_item(shape, ready=True)
        self._ready[shape.name] = shape

    async def _shape_item(self, shape: QueryShape, *, ready: bool) -> None:
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": _s(SHAPE_PK), "sk": _s(shape.name)},
            "UpdateExpression": "SET #s = :s, #i = :i" + (", #r = :r" if ready else ""),
            "ExpressionAttributeNames": {"#s": "shape", "#i": "index"},
            "ExpressionAttributeValues": {
                ":s": _s(shape.model_dump_json()),
                ":i": _s(index_name(shape)),
            },
        }
        if ready:
            request["ExpressionAttributeNames"]["#r"] = "ready"
            request["ExpressionAttributeValues"][":r"] = {"BOOL": True}
        await call(self.route, self._client.update_item, **request)

    async def _create_index(self, name: str, hash_attr: str, range_attr: str) -> None:
        update = {
            "Create": {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": hash_attr, "KeyType": "HASH"},
                    {"AttributeName": range_attr, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        }
        definitions = [
            {"AttributeName": hash_attr, "AttributeType": "S"},
            {"AttributeName": range_attr, "AttributeType": "S"},
        ]
        for attempt in range(120):  # one index change at a time per table
            try:
                await self._client.update_table(
                    TableName=self.table,
                    AttributeDefinitions=definitions,
                    GlobalSecondaryIndexUpdates=[update],
                )
            except ClientError as exc:
                if error_code(exc) not in ("ResourceInUseException", "LimitExceededException"):
                    raise self._unavailable(exc) from exc
                if name in await self._indexes():
                    return  # another process made it meanwhile
                await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
                continue
            except (TimeoutError, BotoCoreError, OSError) as exc:
                raise self._unavailable(exc) from exc
            self._created.append(f"index {name} on DynamoDB table {self.table}")
            return
        raise BackendUnavailable(self.route, BACKEND, f"could not add index {name!r}")

    async def _wait_active(self, name: str) -> None:
        for _ in range(1200):
            status = (await self._indexes()).get(name)
            if status == "ACTIVE":
                return
            await asyncio.sleep(1.0)
        raise BackendUnavailable(self.route, BACKEND, f"index {name!r} did not become active")

    async def _fill(self, shape: QueryShape) -> None:
        """Write ``shape``'s index keys onto every live record lacking them (each only if
        it is still at the version read: a newer one was written with them)."""
        hash_attr, range_attr = index_attributes(shape)
        request: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :r) AND attribute_not_exists(#h)",
            "ExpressionAttributeNames": {"#h": hash_attr},
            "ExpressionAttributeValues": {":r": _s("r#")},
            "ConsistentRead": True,
        }
        for item in await self._query(request, scan=True):
            keys = index_keys(shape, _record(item))
            if keys is None:
                continue
            try:
                await self._client.update_item(
                    TableName=self.table,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    UpdateExpression="SET #h = :h, #o = :o",
                    ConditionExpression="version = :v",
                    ExpressionAttributeNames={"#h": hash_attr, "#o": range_attr},
                    ExpressionAttributeValues={
                        ":h": _s(keys[0]),
                        ":o": _s(keys[1]),
                        ":v": item["version"],
                    },
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise self._unavailable(exc) from exc
            except (TimeoutError, BotoCoreError, OSError) as exc:
                raise self._unavailable(exc) from exc

    # -- queries -----------------------------------------------------------------------

    async def _query(self, request: dict[str, Any], *, scan: bool = False) -> list[Item]:
        items: list[Item] = []
        what = self._client.scan if scan else self._client.query
        while True:
            answer = await call(self.route, what, **request)
            items += answer.get("Items", [])
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return items
            request = {**request, "ExclusiveStartKey": start}

    def _index_for(self, query: ViewQuery, pinned: Mapping[str, object]) -> tuple[QueryShape, bool]:
        """The ready index to read: one ordered by the query's order field if any, with
        the most equality fields pinned; and whether it is so ordered."""
        usable = [s for s in self._ready.values() if all(f in pinned for f in s.equal)]
        ordered = [s for s in usable if s.order_by == query.order_by]
        best = max(ordered or usable, key=lambda s: (len(s.equal), s.name))
        return best, bool(ordered)

    async def query(self, query: ViewQuery) -> Page:
        after: str | None = None
        if query.cursor is not None:
            value, key = decode_cursor(query.cursor)
            if not isinstance(value, str) or not is_sortable(value):
                raise InvalidInput("cursor is malformed")
            after = range_key(value, key)
        if query.grants == ():
            return Page(items=())
        pinned = equalities(query)
        shape, ordered = self._index_for(query, pinned)
        hash_key = index_hash(query.tenant_id, query.mode, tuple(pinned[f] for f in shape.equal))
        hash_attr, range_attr = index_attributes(shape)
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index_name(shape),
            "KeyConditionExpression": "#h = :h",
            "ExpressionAttributeNames": {"#h": hash_attr},
            "ExpressionAttributeValues": {":h": _s(hash_key)},
        }
        now = datetime.now(UTC)
        if ordered:
            rows = await self._ordered(query, request, range_attr, after, now)
        else:
            rows = await self._sorted(query, request, after, now)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        cursor = encode_cursor(rows[-1][0], rows[-1][1].key) if more else None
        return Page(items=tuple(r for _, r in rows), next_cursor=cursor)

    def _order(self, query: ViewQuery, record: ViewRecord) -> str:
        return sortable(field_value(record, query.order_by))

    async def _ordered(
        self,
        query: ViewQuery,
        request: dict[str, Any],
        range_attr: str,
        after: str | None,
        now: datetime,
    ) -> list[tuple[str, ViewRecord]]:
        """Up to a page and one record, read in order from one index range."""
        request["ScanIndexForward"] = not query.descending
        if after is not None:
            request["KeyConditionExpression"] += " AND #o " + ("<" if query.descending else ">")
            request["ExpressionAttributeNames"]["#o"] = range_attr
            request["ExpressionAttributeValues"][":a"] = _s(after)
            request["KeyConditionExpression"] += " :a"
        rows: list[tuple[str, ViewRecord]] = []
        limit = query.limit + 1
        while True:
            answer = await call(self.route, self._client.query, **request, Limit=limit)
            for item in answer.get("Items", []):
                record = _record(item)
                if answers(record, query, now):
                    rows.append((self._order(query, record), record))
                    if len(rows) > query.limit:
                        return rows
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return rows
            request["ExclusiveStartKey"] = start
            limit = min(limit * 2, 1000)

    async def _sorted(
        self, query: ViewQuery, request: dict[str, Any], after: str | None, now: datetime
    ) -> list[tuple[str, ViewRecord]]:
        """A page and one record of the whole partition, sorted here."""
        keyed = []
        for item in await self._query(request):
            record = _record(item)
            if not answers(record, query, now):
                continue
            order = self._order(query, record)
            position = range_key(order, record.key)
            if after is not None and (position >= after if query.descending else position <= after):
                continue
            keyed.append((position, order, record))
        keyed.sort(key=lambda row: row[0], reverse=query.descending)
        return [(order, record) for _, order, record in keyed[: query.limit + 1]]
