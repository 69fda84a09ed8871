"""Views on Cosmos DB: one container per view route, partitioned by ``/pk``.

Physical layout
---------------

==========  ===========================  ===========================  ==================
item        ``pk``                       ``id`` (:func:`.ids.item_id`)  fields
==========  ===========================  ===========================  ==================
record      ``{tenant_id}/{mode}`` of    ``r`` + the key (a digest    type ``record``,
            its scope                    past 255 characters: keys    key, tenant_id,
                                         hold ``/`` and reach 512)    mode, user_id,
                                                                      surface_id,
                                                                      project_id,
                                                                      version, deleted,
                                                                      expires_at (epoch
                                                                      seconds or null),
                                                                      data
progress    ``{tenant_id}/{mode}`` of    ``a`` + [projector,          type ``applied``,
            the stream (stream ids       stream id] as JSON           projector,
            begin ``{domain}/{tenant}/                                stream_id, seq
            {mode}/``, DESIGN §3)
==========  ===========================  ===========================  ==================

A tenant's records in one mode share a logical partition (at most 20 GB and 10,000
RU/s: a tenant's view in one mode is that big at most), so every query, which names
tenant and mode, is a one-partition query. The container indexes every path (queries
filter and order on any data field); :meth:`CosmosViewStore.declare` adds composite
indexes ``(order field, key)`` in both directions for the declared shapes' order
fields, which Cosmos DB needs for a query ordered by two fields.

Why a commit is atomic and conditional
--------------------------------------

A :class:`~projections.views.ViewWrite` is ONE transactional batch in its stream's
partition: the progress item first, then each record. The progress is a ``create``
when the writer read none (``applied_from`` 0; 409 if it exists), else a ``replace``
conditional on the etag of the progress item read at ``applied_from``; a record is a
``create`` when it replaces version 0, else a ``replace`` conditional on the etag of
the item read at the version it replaces. The store reads those items (one query in
the partition) just before the batch, and refuses at once what does not match; a write
that changed meanwhile fails the batch (412), which Cosmos DB runs all or nothing. So
two runners applying the same events, a stale cache or a replay never apply an event
twice or move a view backwards. A write whose records lie outside its stream's tenant
and mode would need two partitions: it is refused (:class:`~spine.errors.InvalidInput`)
before anything is written, as is a write of more than :attr:`~CosmosViewStore.
max_write_records` records (a batch holds 100 operations) or 2 MB.

cosmosdb-server runs a batch in order, without interleaving, but not atomically (DESIGN
§8): it keeps what ran before a failing operation. The progress item goes first, so two
runners racing on one stream are told apart before anything is written; a race on a
record folded from several streams can leave the progress moved without the record
there (logged), which real Cosmos DB never does. It also reads the partition key of a
batch's ``replace`` from the operation, not the request's header: every operation
names it too (as the JavaScript SDK sends it; Cosmos DB takes either).

Reads
-----

``get`` and ``get_many`` know a key, not its tenant: they are cross-partition queries
by id (``c.id IN (...)``, a hundred ids a query), served from the always-indexed id at
about 2.5–3 RU per physical partition the query fans out to (a point read would be 1
RU, but needs the partition). ``applied`` is a one-partition query per tenant and mode.
A stream id outside the spine's ``{domain}/{tenant}/{mode}/...`` form (tools, tests)
has no partition of its own: its progress lives with its write's records (or, with
none, in the partition ``-``), and ``applied`` looks for it across partitions.

A query with ``order_by`` ordered by a composite index (declared) is one query ordered
by ``(order field, key)``. Without one, Cosmos DB cannot order by two fields, so the
page is read ordered by the order field alone (``limit + 1`` items); the records tied
on the last order value read are then read again ordered by key, and the page is put
together here, in the same order. The keyset cursor ``(order value, key)`` continues
after the last record either way, stable under concurrent writes. Strings compare as
the service compares them (by UTF-16 code units on cosmosdb-server, which differs from
code points only past the Basic Multilingual Plane); numbers are IEEE doubles (integers
beyond 2**53 lose precision).

The whole view (``records``, ``progress``, ``purge``: a rebuild's verification, a
sandbox, an in-place rebuild) is read across partitions in id order, keyset-paged
(``c.id > last``), so the copies of one id that sit in two partitions (a ``put`` moved
a key to another tenant or mode) come together and count once, at their highest
version or seq, as ``get_many`` reads them. A tenant's records are the keys whose
newest copy is in its partitions (its ``tenant_id``; a page's ids are looked up in the
other partitions too); its progress is that of the streams naming it (their second
segment), wherever kept. ``purge`` of a tenant deletes its partitions' records and the
older copies elsewhere of its keys (else they would show through), item by item (a
transactional batch would fail whole on an item deleted meanwhile); the container and
its indexing policy stay.

Expiry is the query's (``expires_at`` after now), not Cosmos DB's TTL, which would
forget a record's version with it (and which cosmosdb-server ignores anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from azure.core import MatchConditions
from azure.core.pipeline import PipelineRequest
from azure.core.rest import HttpRequest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from projections.views import (
    SCOPE_FIELDS,
    Page,
    QueryShape,
    ViewQuery,
    ViewRecord,
    ViewWrite,
    decode_cursor,
    encode_cursor,
)
from routing.backends.common import stream_tenant
from routing.backends.cosmos.errors import BACKEND, translate, translated
from routing.backends.cosmos.ids import item_id
from spine.codec import trusted
from spine.errors import BackendUnavailable, IntegrityError, InvalidInput
from spine.events import MODES, Scope

log = logging.getLogger(__name__)

PARTITION_KEY: Final = "/pk"
#: Every path indexed: queries filter and order on any data field.
INDEXING_POLICY: Final[dict[str, Any]] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": '/"_etag"/?'}],
}
#: A transactional batch holds at most 100 operations: the progress item and 99 records.
MAX_WRITE_RECORDS: Final = 99
#: ... and at most 2 MB.
MAX_BATCH_BYTES: Final = 2 * 1024 * 1024
#: Ids per lookup query.
IDS_PER_QUERY: Final = 100
#: How many writes of one commit may be in flight at once.
CONCURRENT_WRITES: Final = 16
#: The partition of the progress of a stream outside the spine's form, with no records.
UNSCOPED: Final = "-"
#: How often a ``put`` reads again after another writer moved the record meanwhile.
PUT_TRIES: Final = 10

RECORD: Final = "record"
APPLIED: Final = "applied"

_RECORDS = f"c.pk = @pk AND c.type = '{RECORD}'"


def partition_of(scope: Scope) -> str:
    return f"{scope.tenant_id}/{scope.mode}"


def stream_partition(stream_id: str) -> str | None:
    """The partition of a stream's progress: its tenant and mode (``None``: the id is
    not of the spine's ``{domain}/{tenant}/{mode}/...`` form)."""
    parts = stream_id.split("/", 3)
    if len(parts) < 4 or parts[2] not in MODES or not parts[1]:
        return None
    return f"{parts[1]}/{parts[2]}"


def record_id(key: str) -> str:
    return item_id("r", key)


def progress_id(projector: str, stream_id: str) -> str:
    return item_id("a", orjson.dumps([projector, stream_id]).decode())


def _path(name: str) -> str:
    """The query expression of a field a query filters or orders by: a scope field, or
    the data field (bracketed: a field may be named as a keyword, ``value``)."""
    return f"c.{name}" if name in SCOPE_FIELDS else f'c.data["{name}"]'


def _index_path(name: str) -> str:
    return f"/{name}" if name in SCOPE_FIELDS else f"/data/{name}"


def _body(record: ViewRecord) -> dict[str, Any]:
    s = record.scope
    return {
        "id": record_id(record.key),
        "pk": partition_of(s),
        "type": RECORD,
        "key": record.key,
        "tenant_id": s.tenant_id,
        "mode": s.mode,
        "user_id": s.user_id,
        "surface_id": s.surface_id,
        "project_id": s.project_id,
        "version": record.version,
        "deleted": record.deleted,
        "expires_at": record.expires_at.timestamp() if record.expires_at else None,
        # as JSON has it (times as text), which is what reads give back
        "data": orjson.loads(orjson.dumps(record.data)),
    }


def _record(item: Mapping[str, Any]) -> ViewRecord:
    try:
        scope = {name: item[name] for name in ("tenant_id", "mode", *SCOPE_FIELDS)}
        expires = item["expires_at"]
        return trusted(
            ViewRecord,
            {
                "key": item["key"],
                "scope": trusted(Scope, scope),
                "version": int(item["version"]),
                "data": item["data"],
                "expires_at": datetime.fromtimestamp(expires, UTC) if expires else None,
                "deleted": bool(item["deleted"]),
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"view item {item.get('id')!r} is malformed: {exc!r}") from exc


def _live(record: ViewRecord | None) -> ViewRecord | None:
    if record is None or record.deleted:
        return None
    if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
        return None
    return record


def _rank(value: Any) -> tuple[int, Any]:
    """Sorts values as Cosmos DB orders them: null, booleans, numbers, strings."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    return (4, 0)


def _order_value(item: Mapping[str, Any], name: str) -> Any:
    return item.get(name) if name in SCOPE_FIELDS else (item.get("data") or {}).get(name)


def _naming_partition(pk: str) -> Callable[[PipelineRequest[HttpRequest]], None]:
    """A request hook that names the partition key in each operation of a batch, as the
    JavaScript SDK sends it (the batch's header names it too). Cosmos DB takes either;
    cosmosdb-server reads only the operation's for any operation but a create."""
    key = orjson.dumps([pk]).decode()

    def hook(request: PipelineRequest[HttpRequest]) -> None:
        http = request.http_request
        body = http.data if isinstance(http.data, str | bytes) else http.body
        operations = orjson.loads(body)
        for operation in operations:
            operation["partitionKey"] = key
        http.set_json_body(operations)

    return hook


class _Params:
    """Query parameters, named in order."""

    def __init__(self) -> None:
        self.values: list[dict[str, object]] = []

    def __call__(self, value: object) -> str:
        name = f"@v{len(self.values)}"
        self.values.append({"name": name, "value": value})
        return name


class CosmosViewStore:
    """:class:`projections.ViewStore` on one container (see the module's docstring).
    ``create``: :meth:`declare` may change the container's indexing policy."""

    max_write_records: int = MAX_WRITE_RECORDS
    """The most records one :class:`~projections.views.ViewWrite` may hold here (with
    its progress, one transactional batch); a bigger write is refused, never split."""

    def __init__(
        self,
        container: ContainerProxy,
        database: DatabaseProxy,
        route: str,
        properties: Mapping[str, Any],
        *,
        create: bool,
        created: list[str],
    ) -> None:
        self.container = container
        self.database = database
        self.route = route
        self.create = create
        self._created = created
        self._policy: dict[str, Any] = dict(properties.get("indexingPolicy") or INDEXING_POLICY)

    # -- reads -------------------------------------------------------------------------

    async def _items(
        self, query: str, parameters: list[dict[str, object]], *, pk: str | None = None
    ) -> list[dict[str, Any]]:
        with translated(self.route):
            if pk is None:
                found = self.container.query_items(query, parameters=parameters)
            else:
                found = self.container.query_items(query, parameters=parameters, partition_key=pk)
            return [item async for item in found]

    async def _by_ids(self, ids: Sequence[str], *, pk: str | None = None) -> list[dict[str, Any]]:
        """The items with these ids (in partition ``pk``; ``None``: in any)."""
        items: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), IDS_PER_QUERY):
            p = _Params()
            marks = ", ".join(p(i) for i in unique[start : start + IDS_PER_QUERY])
            where = f"c.id IN ({marks})"
            if pk is not None:
                where = f"c.pk = {p(pk)} AND {where}"
            items += await self._items(f"SELECT * FROM c WHERE {where}", p.values, pk=pk)
        return items

    async def get(self, key: str) -> ViewRecord | None:
        return (await self.get_many([key])).get(key)

    async def get_many(
        self, keys: Sequence[str], *, include_deleted: bool = False
    ) -> Mapping[str, ViewRecord]:
        found: dict[str, ViewRecord] = {}
        for item in await self._by_ids([record_id(k) for k in keys]):
            record: ViewRecord | None = _record(item)
            if not include_deleted:
                record = _live(record)
            if record is not None:
                held = found.get(record.key)
                if held is None or held.version < record.version:
                    found[record.key] = record
        return found

    async def applied(self, projector: str, stream_ids: Sequence[str]) -> dict[str, int]:
        by_partition: dict[str | None, list[str]] = {}
        for sid in dict.fromkeys(stream_ids):
            by_partition.setdefault(stream_partition(sid), []).append(progress_id(projector, sid))
        progress: dict[str, int] = {}
        for pk, ids in by_partition.items():
            for item in await self._by_ids(ids, pk=pk):
                stream, seq = item.get("stream_id"), item.get("seq")
                if not isinstance(stream, str) or not isinstance(seq, int):
                    raise IntegrityError(f"{self.route}: progress item {item.get('id')!r}")
                progress[stream] = max(seq, progress.get(stream, 0))
        return progress

    # -- plain writes ------------------------------------------------------------------

    async def put(self, record: ViewRecord) -> bool:
        body = _body(record)
        with translated(self.route):
            for _ in range(PUT_TRIES):
                found = await self._by_ids([body["id"]], pk=body["pk"])
                try:
                    if not found:
                        await self.container.create_item(body)
                        return True
                    if int(found[0].get("version", 0)) >= record.version:
                        return False
                    await self.container.replace_item(
                        body["id"],
                        body,
                        etag=found[0]["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return True
                except (
                    CosmosResourceExistsError,
                    CosmosAccessConditionFailedError,
                    CosmosResourceNotFoundError,
                ):
                    continue  # another writer moved it since: read again
        raise BackendUnavailable(
            self.route, BACKEND, f"key {record.key!r} kept changing over {PUT_TRIES} tries"
        )

    async def put_many(self, records: Sequence[ViewRecord]) -> int:
        written = 0
        for record in records:
            written += await self.put(record)
        return written

    async def delete(self, key: str, scope: Scope, version: int) -> bool:
        return await self.put(ViewRecord(key=key, scope=scope, version=version, deleted=True))

    # -- commits -----------------------------------------------------------------------

    def _partition(self, write: ViewWrite) -> str:
        """The one partition ``write`` is written in (see the module's docstring)."""
        if len(write.records) > self.max_write_records:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} holds {len(write.records)} "
                f"records; Cosmos DB writes at most {self.max_write_records} with the "
                "stream's progress in one transactional batch (100 operations): split it"
            )
        own = stream_partition(write.stream_id)
        partitions = {partition_of(r.scope) for r, _ in write.records}
        if own is not None:
            partitions.add(own)
        if len(partitions) > 1:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} touches records of "
                f"{sorted(partitions)}: one Cosmos DB transactional batch writes one "
                "partition (a tenant and mode), so a stream's write must stay in its own"
            )
        return partitions.pop() if partitions else UNSCOPED

    async def commit(self, projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        """Each write is one batch. Writes run in order, but a run of writes that share
        no stream and no record goes concurrently (their order cannot matter)."""
        planned = [(write, self._partition(write)) for write in writes]  # refuse before any
        refused: set[int] = set()
        lost: set[str] = set()
        gate = asyncio.Semaphore(CONCURRENT_WRITES)

        async def one(index: int, write: ViewWrite, pk: str) -> None:
            async with gate:
                if not await self._commit_one(projector, write, pk):
                    refused.add(index)

        start = 0
        while start < len(planned):
            wave: list[tuple[int, ViewWrite, str]] = []
            touched: set[str] = set()
            index = start
            for index in range(start, len(planned)):
                write, pk = planned[index]
                names = {"\0" + write.stream_id, *(r.key for r, _ in write.records)}
                if names & touched:
                    break
                touched |= names
                if names & lost:
                    refused.add(index)  # built on a refused write
                else:
                    wave.append((index, write, pk))
            else:
                index = len(planned)
            await asyncio.gather(*(one(i, w, pk) for i, w, pk in wave))
            for i in range(start, index):
                if i in refused:
                    lost |= {r.key for r, _ in planned[i][0].records}
            start = index
        return [planned[i][0].stream_id for i in sorted(refused)]

    async def _commit_one(self, projector: str, write: ViewWrite, pk: str) -> bool:
        """Write ``write`` as one batch in ``pk``; False (nothing written) if refused."""
        progress: dict[str, Any] = {
            "id": progress_id(projector, write.stream_id),
            "pk": pk,
            "type": APPLIED,
            "projector": projector,
            "stream_id": write.stream_id,
            "seq": write.applied_to,
        }
        bodies = [(_body(record), replaced) for record, replaced in write.records]
        found: dict[str, dict[str, Any]] = {}
        if write.applied_from or any(replaced for _, replaced in bodies):
            ids = [progress["id"], *(body["id"] for body, _ in bodies)]
            found = {item["id"]: item for item in await self._by_ids(ids, pk=pk)}
        operations: list[tuple[Any, ...]] = []
        for body, stored, field, expected in [
            (progress, found.get(progress["id"]), "seq", write.applied_from),
            *((b, found.get(b["id"]), "version", replaced) for b, replaced in bodies),
        ]:
            if expected == 0:
                if stored is not None:
                    return False
                operations.append(("create", (body,)))
            elif stored is None or stored.get(field) != expected:
                return False
            else:
                operations.append(
                    ("replace", (body["id"], body), {"if_match_etag": stored["_etag"]})
                )
        size = len(orjson.dumps([op[1] for op in operations]))
        if size > MAX_BATCH_BYTES:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} takes {size} bytes, over "
                f"Cosmos DB's {MAX_BATCH_BYTES} per transactional batch: split it"
            )
        with translated(self.route):
            try:
                await self.container.execute_item_batch(
                    operations, partition_key=pk, raw_request_hook=_naming_partition(pk)
                )
            except CosmosBatchOperationError as exc:
                if exc.status_code not in (404, 409, 412):
                    raise translate(exc, self.route) from exc
                if exc.error_index:
                    log.warning(
                        "cosmos view %s: a write of %s failed at operation %d of its batch;"
                        " a store without atomic batches kept the ones before it",
                        self.route,
                        write.stream_id,
                        exc.error_index,
                    )
                return False
        return True

    # -- the whole view (rebuild, sandbox) ---------------------------------------------

    async def _in_id_order(
        self, select: str, where: str, p: _Params, batch_size: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The items matching ``where`` in every partition, by id, about ``batch_size`` a
        page (keyset paging on the id). The copies of one id in several partitions come
        in one page: a full page's last id is read again whole."""
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
        after = ""
        while True:
            q = _Params()
            q.values = list(p.values)
            text = (
                f"SELECT TOP {q(batch_size)} {select} FROM c WHERE ({where}) "
                f"AND c.id > {q(after)} ORDER BY c.id"
            )
            items = await self._items(text, q.values)
            if len(items) < batch_size:
                yield items
                return
            after = items[-1]["id"]
            q = _Params()
            q.values = list(p.values)
            last = f"SELECT {select} FROM c WHERE ({where}) AND c.id = {q(after)}"
            yield [i for i in items if i["id"] != after] + await self._items(last, q.values)

    def _where_records(self, tenant_id: str | None, p: _Params) -> str:
        where = f"c.type = '{RECORD}'"
        if tenant_id is not None:
            where += f" AND c.tenant_id = {p(tenant_id)}"
        return where

    async def _newer_elsewhere(
        self, newest: Mapping[str, int], tenant_id: str
    ) -> tuple[set[str], list[dict[str, Any]]]:
        """Of the record ids ``newest`` maps to their highest version in ``tenant_id``'s
        partitions: those with a newer copy in another partition (the key is not the
        tenant's: ``get_many`` reads that copy), and the older copies elsewhere of the
        others (which would show through once the tenant's were gone)."""
        newer: set[str] = set()
        older: list[dict[str, Any]] = []
        ids = list(newest)
        for start in range(0, len(ids), IDS_PER_QUERY):
            p = _Params()
            marks = ", ".join(p(i) for i in ids[start : start + IDS_PER_QUERY])
            text = (
                f"SELECT c.id, c.pk, c.version FROM c WHERE c.type = '{RECORD}' "
                f"AND c.tenant_id != {p(tenant_id)} AND c.id IN ({marks})"
            )
            for item in await self._items(text, p.values):
                if int(item["version"]) > newest[item["id"]]:
                    newer.add(item["id"])
                else:
                    older.append(item)
        return newer, [i for i in older if i["id"] not in newer]

    async def records(
        self, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[ViewRecord]:
        """Every record item, across partitions, by id. A key kept in several partitions
        (a ``put`` moved it to another tenant or mode) is one record, its copy of the
        highest version, as ``get_many`` reads it: with ``tenant_id``, the tenant's if
        that copy is in its partitions (one more lookup of the page's ids elsewhere)."""
        p = _Params()
        where = self._where_records(tenant_id, p)
        async for items in self._in_id_order("*", where, p, batch_size):
            best: dict[str, tuple[str, ViewRecord]] = {}
            for item in items:
                record = _record(item)
                held = best.get(record.key)
                if held is None or held[1].version < record.version:
                    best[record.key] = (item["id"], record)
            newer: set[str] = set()
            if tenant_id is not None and best:
                versions = {i: r.version for i, r in best.values()}
                newer, _ = await self._newer_elsewhere(versions, tenant_id)
            for found, record in best.values():
                if found not in newer:
                    yield record

    async def progress(
        self, projector: str, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, int]]:
        p = _Params()
        where = f"c.type = '{APPLIED}' AND c.projector = {p(projector)}"
        if tenant_id is not None:  # narrows what comes back; the tenant is checked here
            where += f" AND CONTAINS(c.stream_id, {p('/' + tenant_id)})"
        select = "c.id, c.stream_id, c.seq"
        async for items in self._in_id_order(select, where, p, batch_size):
            seqs: dict[str, int] = {}
            for item in items:
                stream, seq = item.get("stream_id"), item.get("seq")
                if not isinstance(stream, str) or not isinstance(seq, int):
                    raise IntegrityError(f"{self.route}: progress item {item.get('id')!r}")
                if tenant_id is None or stream_tenant(stream) == tenant_id:
                    seqs[stream] = max(seq, seqs.get(stream, 0))
            for stream, seq in seqs.items():
                yield stream, seq

    async def purge(self, *, tenant_id: str | None = None) -> int:
        """Delete the record items (of ``tenant_id``'s partitions, and the older copies
        elsewhere of its keys), then the progress items (of its streams, wherever kept),
        one by one, several at once, a page at a time. Counts the records as
        :meth:`records` yields them."""
        gate = asyncio.Semaphore(CONCURRENT_WRITES)

        async def delete(item: Mapping[str, Any]) -> None:
            async with gate:
                with translated(self.route), contextlib.suppress(CosmosResourceNotFoundError):
                    await self.container.delete_item(item["id"], partition_key=item["pk"])

        deleted = 0
        p = _Params()
        where = self._where_records(tenant_id, p)
        async for items in self._in_id_order("c.id, c.pk, c.version", where, p, 500):
            newest: dict[str, int] = {}
            for item in items:
                newest[item["id"]] = max(int(item["version"]), newest.get(item["id"], 0))
            newer: set[str] = set()
            if tenant_id is not None and newest:
                newer, older = await self._newer_elsewhere(newest, tenant_id)
                items = [*items, *older]
            await asyncio.gather(*(delete(item) for item in items))
            deleted += len(newest) - len(newer)
        p = _Params()
        applied = f"c.type = '{APPLIED}'"
        async for items in self._in_id_order("c.id, c.pk, c.stream_id", applied, p, 500):
            await asyncio.gather(
                *(
                    delete(item)
                    for item in items
                    if tenant_id is None or stream_tenant(str(item["stream_id"])) == tenant_id
                )
            )
        return deleted

    # -- queries -----------------------------------------------------------------------

    def _ordered(self, name: str, descending: bool) -> bool:
        """Whether a composite index orders by ``(name, key)`` in this direction."""
        order = "descending" if descending else "ascending"
        want = [(_index_path(name), order), ("/key", order)]
        return any(
            [(i.get("path"), i.get("order", "ascending")) for i in index] == want
            for index in self._policy.get("compositeIndexes") or []
        )

    async def query(self, query: ViewQuery) -> Page:
        if query.grants == ():
            return Page(items=())  # no grant: nothing is visible
        p = _Params()
        pk = f"{query.tenant_id}/{query.mode}"
        where = [
            f"c.pk = {p(pk)}",
            f"c.type = '{RECORD}'",
            "c.deleted = false",
            f"(IS_NULL(c.expires_at) OR c.expires_at > {p(datetime.now(UTC).timestamp())})",
        ]
        for name in SCOPE_FIELDS:
            value = getattr(query, name)
            if value is not None:
                where.append(f"c.{name} = {p(value)}")
        if query.grants is not None:
            visible = []
            for grant in query.grants:
                if grant.project_ids:
                    projects = f"c.project_id IN ({', '.join(map(p, grant.project_ids))})"
                else:
                    projects = "IS_NULL(c.project_id)"
                visible.append(f"(c.surface_id = {p(grant.surface_id)} AND {projects})")
            where.append("(" + " OR ".join(visible) + ")")
        for f in query.where:
            field = _path(f.field)
            if f.op == "eq":
                where.append(f"{field} = {p(f.value)}")
            elif f.op == "contains":
                where.append(f"ARRAY_CONTAINS({field}, {p(f.value)})")
            else:
                where.append(f"{field} {'>=' if f.op == 'ge' else '<'} {p(f.value)}")
        order = _path(query.order_by)
        past = "<" if query.descending else ">"
        if query.cursor is not None:
            after_value, after_key = decode_cursor(query.cursor)
            v = p(after_value)
            where.append(f"({order} {past} {v} OR ({order} = {v} AND c.key {past} {p(after_key)}))")
        direction = "DESC" if query.descending else "ASC"
        limit = query.limit

        def sql(conditions: list[str], top: int, ordering: str) -> str:
            return (
                f"SELECT TOP {p(top)} * FROM c WHERE {' AND '.join(conditions)} ORDER BY {ordering}"
            )

        def sort_key(item: Mapping[str, Any]) -> tuple[tuple[int, Any], str]:
            return _rank(_order_value(item, query.order_by)), str(item.get("key"))

        if self._ordered(query.order_by, query.descending):
            text = sql(where, limit + 1, f"{order} {direction}, c.key {direction}")
            items = await self._items(text, p.values, pk=pk)
        else:
            # one field: the order field; then the ties on its last value, by key
            items = await self._items(
                sql(where, limit + 1, f"{order} {direction}"), p.values, pk=pk
            )
            if len(items) > limit:
                last = _order_value(items[-1], query.order_by)
                items = [i for i in items if _order_value(i, query.order_by) != last]
                items.sort(key=sort_key, reverse=query.descending)
                tied = [*where, f"{order} = {p(last)}"]
                text = sql(tied, limit + 1 - len(items), f"c.key {direction}")
                items += await self._items(text, p.values, pk=pk)
            else:
                items.sort(key=sort_key, reverse=query.descending)
        more = len(items) > limit
        items = items[:limit]
        records = tuple(_record(item) for item in items)
        cursor = None
        if more:
            cursor = encode_cursor(_order_value(items[-1], query.order_by), records[-1].key)
        return Page(items=records, next_cursor=cursor)

    # -- shapes ------------------------------------------------------------------------

    async def declare(self, shapes: Sequence[QueryShape]) -> None:
        """A composite index ``(order field, key)`` in each direction per declared order
        field, added to the container's indexing policy (Cosmos DB builds it online).
        Equality filters are served by the range indexes every path has."""
        if not self.create or not shapes:
            return
        wanted: list[list[dict[str, str]]] = []
        for name in dict.fromkeys(shape.order_by for shape in shapes):
            for descending in (False, True):
                if not self._ordered(name, descending):
                    order = "descending" if descending else "ascending"
                    wanted.append(
                        [
                            {"path": _index_path(name), "order": order},
                            {"path": "/key", "order": order},
                        ]
                    )
        if not wanted:
            return
        policy = dict(self._policy)
        policy["compositeIndexes"] = [*(policy.get("compositeIndexes") or []), *wanted]
        with translated(self.route):
            await self.database.replace_container(
                self.container,
                partition_key=PartitionKey(path=PARTITION_KEY),
                indexing_policy=policy,
            )
        self._policy = policy
        added = sorted({w[0]["path"] for w in wanted})
        self._created.append(
            f"cosmos container {self.route!r}: composite indexes (field, key) on {', '.join(added)}"
        )
