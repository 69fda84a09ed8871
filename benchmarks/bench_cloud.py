"""Every event store and view store on its local server, beside the lab (SQLite), in one run.

    python benchmarks/bench_cloud.py [--quick] [--only NAME[,NAME]]

NAME: dynamodb, cosmos, firestore (the lab always runs: it is the baseline). Each cloud
backend is opened as a routes file would open it (its module's ``open_backend``), on
the server the tests start (``engines.devservers``: moto_server, cosmosdb-server, the
Cloud Firestore emulator, each on a free 127.0.0.1 port, stopped after its figures).
A server that is not installed is skipped with what to install. Every backend runs the
same code below, each figure on a fresh table / container / collection (a route of its
own), after a short warm-up (the emulator's JIT, connections, the database):

Sizes in a full run (``--quick``):

single     one writer, 200 (50) one-event appends, exact expected versions, streams of 10
writers    100 concurrent writers, 3 (1) one-event appends each, each to its own stream
batch      10 (3) appends of 98 events to one stream: the cloud stores' atomic limit less
           their markers (Cosmos DB and DynamoDB take 100 operations, less the command
           and outbox markers; Firestore would take 497 of its 500 writes), every column
           the same size
read       ``read_stream`` of a 10-event stream 100 (30) times, and of the batch
           figure's stream of 980 (294) events 20 (5) times: p50 and p99
catch-up   2,000 (500) notes events over 200 (50) streams appended to the spine, then a
           ``ProjectorRunner`` with the notes projector applies them, read from the
           spine's ``scan`` in pages of 1,000, into that backend's view store (parking
           on its checkpoint store): events/s from the first read to the last commit
cost       10 one-event appends to new streams (no read before them), then one more to
           each (an exact expected version: one read), then the relay's clear of each
           of their outbox markers, in the store's own unit: DynamoDB capacity units,
           Cosmos DB request units, Firestore document writes and reads. What the
           server reports is shown beside what is computed or counted, since no local
           server reports the real figure (see :class:`DynamoMeter`,
           :class:`CosmosMeter`, :class:`FirestoreMeter`)

Each figure is printed beside the lab's, with the ratio: "how much slower than the
embedded store on this machine", which other load on the machine moves less than the
figures themselves. Local servers are not the clouds: the figures compare designs and
round trips, not services. moto copies a table before each transaction and serves one
request at a time (``engines/devservers/moto_serial.py``); cosmosdb-server is an
in-memory Node.js process that scans a container per query; the emulator is one JVM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload  # benchmarks/ is on sys.path: run as `python benchmarks/bench_cloud.py`

from engines.devservers import (
    COSMOS_EMULATOR_KEY,
    COSMOS_SERVER,
    FIRESTORE_SERVER,
    HOST,
    MOTO_SERVER,
    DevServer,
    ServerFailed,
    ServerMissing,
    ServerProcess,
    free_port,
)
from projections.notes import NotesProjector
from projections.parking import ParkingStore
from projections.runner import ProjectorRunner
from projections.views import ViewStore
from routing.catalog import BACKENDS
from routing.config import (
    Connections,
    CosmosConnection,
    DynamoDBConnection,
    FirestoreConnection,
    Route,
    SqliteConnection,
)
from spine.events import NO_STREAM, EventEnvelope, NewEvent, new_id
from spine.feed import Pending
from spine.store import EventStore

BATCH = 98
WRITERS = 100
STREAM = 10
"""Events per stream in the single-writer, read and catch-up figures."""
PAGE = 1000
"""Events the catch-up reads from ``scan`` before each ``apply``."""
COST_APPENDS = 10
EQUINOX_RU = 24
"""What Equinox measures per one-event append on Cosmos DB (as issue 9 quotes it)."""


@dataclass(frozen=True)
class Size:
    single: int
    each: int
    batches: int
    short_reads: int
    long_reads: int
    catch_up_streams: int
    warm_up: int


FULL = Size(
    single=200,
    each=3,
    batches=10,
    short_reads=100,
    long_reads=20,
    catch_up_streams=200,
    warm_up=30,
)
QUICK = Size(
    single=50,
    each=1,
    batches=3,
    short_reads=30,
    long_reads=5,
    catch_up_streams=50,
    warm_up=10,
)


# -- the backends -------------------------------------------------------------------------


class Backend(Protocol):
    """What every backend module's ``open_backend`` returns, as used here."""

    async def event_store(self, route: Route) -> EventStore: ...

    async def view_store(self, route: Route) -> ViewStore: ...

    async def checkpoint_store(self, route: Route) -> ParkingStore: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Target:
    name: str
    """The backend's name in a routes file (``routing.catalog.BACKENDS``)."""
    label: str
    server: DevServer | None
    connections: Callable[[str, int, str], Connections]
    """The connections to the server at (host, port), for run ``run``."""


def _sqlite(host: str, port: int, run: str) -> Connections:
    return Connections(sqlite=SqliteConnection(path=f"bench-{run}.db", synchronous="FULL"))


def _dynamodb(host: str, port: int, run: str) -> Connections:
    return Connections(
        dynamodb=DynamoDBConnection(
            endpoint_url=MOTO_SERVER.url(host, port),
            access_key_id="testing",
            secret_access_key="testing",
            table_prefix=f"bench{run}_",
        )
    )


def _cosmos(host: str, port: int, run: str) -> Connections:
    return Connections(
        cosmos=CosmosConnection(
            endpoint=COSMOS_SERVER.url(host, port),
            key=COSMOS_EMULATOR_KEY,
            database=f"bench{run}",
            verify_tls=False,  # cosmosdb-server's self-signed certificate
        )
    )


def _firestore(host: str, port: int, run: str) -> Connections:
    return Connections(
        firestore=FirestoreConnection(project="engines-bench", emulator_host=f"{host}:{port}")
    )


LAB = Target("sqlite", "sqlite (lab)", None, _sqlite)
CLOUDS = {
    t.name: t
    for t in (
        Target("dynamodb", "dynamodb (moto)", MOTO_SERVER, _dynamodb),
        Target("cosmos", "cosmos (cosmosdb-server)", COSMOS_SERVER, _cosmos),
        Target("firestore", "firestore (emulator)", FIRESTORE_SERVER, _firestore),
    )
}


@asynccontextmanager
async def opened(target: Target, data_dir: Path) -> AsyncIterator[Backend]:
    """``target``'s backend on its server (started here, stopped after), through the
    backend module a routes file naming it would load."""
    server: ServerProcess | None = None
    port = 0
    if target.server is not None:
        port = free_port()
        server = target.server.start(HOST, port)
    try:
        module: Any = importlib.import_module(str(BACKENDS[target.name].module))
        connections = target.connections(HOST, port, new_id()[-8:].lower())
        backend: Backend = await module.open_backend(connections, data_dir, create=True)
        try:
            yield backend
        finally:
            await backend.aclose()
    finally:
        if server is not None:
            server.stop()


def route(target: Target, name: str) -> Route:
    return Route(backend=target.name, name=name, lab=target is LAB)


# -- the events ---------------------------------------------------------------------------


def note_event(note_id: str, seq: int, command_id: str | None = None) -> NewEvent:
    """The benchmarks' notes event (workload.py), as a saas deployment's."""
    return workload.note_event(
        note_id, seq, command_id, mode="saas", surface_id="chat", run_id=None, tag="cloud"
    )


def new_note() -> tuple[str, str]:
    return workload.new_note("saas")


expected = workload.expected


async def fill(store: EventStore, streams: int, per_stream: int, batch: int) -> list[str]:
    """``streams`` notes of ``per_stream`` events each, appended ``batch`` at a time,
    4 streams at once (moto serves one request at a time: a longer queue would only
    wait, up to the client's read timeout); their stream ids."""
    notes = [new_note() for _ in range(streams)]
    gate = asyncio.Semaphore(4)

    async def one(note_id: str, sid: str) -> None:
        async with gate:
            for start in range(0, per_stream, batch):
                command = new_id()
                events = [
                    note_event(note_id, seq, command)
                    for seq in range(start + 1, min(start + batch, per_stream) + 1)
                ]
                await store.append(sid, events, expected(start))

    await asyncio.gather(*(one(n, s) for n, s in notes))
    return [sid for _, sid in notes]


# -- the figures --------------------------------------------------------------------------


Figure = float | tuple[float, float]
"""A rate (higher is better), or p50 and p99 in ms (lower is better)."""


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def rate(count: int, run: Awaitable[object]) -> float:
    started = time.perf_counter()
    await run
    return count / (time.perf_counter() - started)


async def read_times(store: EventStore, sid: str, reads: int, events: int) -> tuple[float, float]:
    timings = []
    for _ in range(reads):
        started = time.perf_counter()
        found = await store.read_stream(sid)
        timings.append((time.perf_counter() - started) * 1000)
        if len(found) != events:
            raise RuntimeError(f"read {len(found)} events of {sid}, not {events}")
    return statistics.median(timings), pct(timings, 99)


async def single_writer(store: EventStore, appends: int) -> None:
    """One-event appends one after another, each stream's next seq exactly."""
    notes = [new_note() for _ in range(-(-appends // STREAM))]
    for i in range(appends):
        note_id, sid = notes[i // STREAM]
        version = i % STREAM
        await store.append(sid, [note_event(note_id, version + 1)], expected(version))


async def writers(store: EventStore, each: int) -> None:
    async def writer() -> None:
        note_id, sid = new_note()
        for version in range(each):
            await store.append(sid, [note_event(note_id, version + 1)], expected(version))

    await asyncio.gather(*(writer() for _ in range(WRITERS)))


async def batches(store: EventStore, sid: str, note_id: str, count: int) -> None:
    for b in range(count):
        command = new_id()
        events = [note_event(note_id, b * BATCH + k + 1, command) for k in range(BATCH)]
        await store.append(sid, events, expected(b * BATCH))


async def catch_up(backend: Backend, target: Target, streams: int) -> float:
    """Events/s of the notes projector applying ``streams`` x 10 events from ``scan``."""
    spine = await backend.event_store(route(target, "catchup"))
    views = await backend.view_store(route(target, "catchupview"))
    parking = await backend.checkpoint_store(route(target, "catchupparked"))
    projector = NotesProjector()
    await views.declare(projector.shapes)
    ids = await fill(spine, streams, STREAM, STREAM)
    runner = ProjectorRunner(projector, spine=spine, views=views, parking=parking)
    total = streams * STREAM
    started = time.perf_counter()
    applied = 0
    page: list[EventEnvelope] = []
    async for event in spine.scan(domain="notes"):
        page.append(event)
        if len(page) == PAGE:
            applied += await runner.apply(page)
            page = []
    if page:
        applied += await runner.apply(page)
    elapsed = time.perf_counter() - started
    runner.invalidate()  # ask the view store itself, not the runner's cache
    progress = await runner.applied(ids)
    if applied != total or set(progress.values()) != {STREAM} or len(progress) != streams:
        raise RuntimeError(f"catch-up applied {applied} of {total} events: {progress}")
    if await parking.parked(projector.name):
        raise RuntimeError("catch-up parked a stream")
    return total / elapsed


async def figures(backend: Backend, target: Target, size: Size) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    step = time.perf_counter()

    def done(what: str) -> None:
        nonlocal step
        print(f"  {target.label}: {what} ({time.perf_counter() - step:.1f} s)", flush=True)
        step = time.perf_counter()

    warm = await backend.event_store(route(target, "warmup"))
    await single_writer(warm, size.warm_up)
    note_id, sid = new_note()
    await batches(warm, sid, note_id, 1)
    await warm.read_stream(sid)
    done("warm-up")

    store = await backend.event_store(route(target, "single"))
    out["single writer, appends/s"] = await rate(size.single, single_writer(store, size.single))
    done("single writer")

    store = await backend.event_store(route(target, "writers"))
    out[f"{WRITERS} writers, appends/s"] = await rate(
        WRITERS * size.each, writers(store, size.each)
    )
    done("writers")

    store = await backend.event_store(route(target, "batch"))
    note_id, long_sid = new_note()
    out[f"{BATCH}-event appends, events/s"] = await rate(
        size.batches * BATCH, batches(store, long_sid, note_id, size.batches)
    )
    done("batch")

    short_sid = (await fill(store, 1, STREAM, 1))[0]
    out[f"read {STREAM} events, p50/p99 ms"] = await read_times(
        store, short_sid, size.short_reads, STREAM
    )
    long_events = size.batches * BATCH
    out[f"read {long_events:,} events, p50/p99 ms"] = await read_times(
        store, long_sid, size.long_reads, long_events
    )
    done("reads")

    out["projector catch-up, events/s"] = await catch_up(backend, target, size.catch_up_streams)
    done("projector catch-up")
    return out


# -- the cost of an append ----------------------------------------------------------------


@dataclass
class Tally:
    """What a stretch of requests cost, per append."""

    requests: float = 0.0
    writes: float = 0.0
    """Write units: WCU (computed), RU of writes (computed), document writes (counted)."""
    reads: float = 0.0
    """Read units: RCU (computed), RU of queries (computed), document reads (counted)."""
    reported: float | None = None
    """What the server reported, if it reported anything."""
    items: tuple[int, ...] = ()
    """The bytes of each item the stretch's first write request created (DynamoDB and
    Cosmos DB price an item by its size)."""

    def per(self, appends: int) -> Tally:
        reported = None if self.reported is None else self.reported / appends
        return Tally(
            self.requests / appends,
            self.writes / appends,
            self.reads / appends,
            reported,
            self.items,
        )

    @property
    def sized(self) -> str:
        if not self.items:
            return ""
        sizes = [f"{n:,}" for n in self.items]
        return f"; items of {', '.join(sizes[:-1])} and {sizes[-1]} B"


def plural(n: float, what: str) -> str:
    return f"{n:g} {what}" + ("" if n == 1 else "s")


def requests(n: float) -> str:
    return plural(n, "request")


class Meter:
    """Counts the requests a backend's client sends, and what they cost."""

    def __init__(self) -> None:
        self.tally = Tally()

    def take(self, appends: int) -> Tally:
        tally, self.tally = self.tally, Tally()
        return tally.per(appends)

    def report(self, units: float) -> None:
        self.tally.reported = (self.tally.reported or 0.0) + units

    how = ""
    """How the units are had: measured (reported by the server), computed or counted."""

    def describe(self, tally: Tally) -> str:
        raise NotImplementedError


def dynamodb_size(item: dict[str, dict[str, Any]]) -> int:
    """An item's size as DynamoDB bills it: each attribute's name and value in UTF-8; a
    number about one byte per two significant digits, plus one."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(value["S"].encode())
        elif "N" in value:
            digits = value["N"].lstrip("-").replace(".", "").strip("0") or "0"
            size += math.ceil(len(digits) / 2) + 1
        elif "B" in value:
            size += len(value["B"])
        else:
            size += len(repr(value))  # not written by the stores measured here
    return size


class DynamoMeter(Meter):
    """Asks for ``ReturnConsumedCapacity: TOTAL`` on every request and adds up what the
    server reports (moto reports none for ``TransactWriteItems`` and fixed figures for
    reads, so it is shown, not used). Computes the units from the items instead, per
    DynamoDB's pricing: a transactional write 2 WCU per KB of each item, rounded up; a
    plain write or delete 1 WCU per KB; the outbox index's copy of a marker (projection
    ALL: the item and 100 B) 1 WCU per KB, written and deleted; a strongly consistent
    read 1 RCU per 4 KB read."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self.sizes: dict[tuple[str, str], int] = {}
        client.meta.events.register("before-parameter-build.dynamodb", self.before)
        client.meta.events.register("after-call.dynamodb", self.after)

    @staticmethod
    def indexed(item: dict[str, Any]) -> bool:
        return "outbox_shard" in item

    def before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params["ReturnConsumedCapacity"] = "TOTAL"
        tally = self.tally
        created: list[int] = []
        for action in params.get("TransactItems", []):
            put = action.get("Put")
            if put is None:
                continue
            size = dynamodb_size(put["Item"])
            created.append(size)
            tally.writes += 2 * math.ceil(size / 1024)
            if self.indexed(put["Item"]):
                tally.writes += math.ceil((size + 100) / 1024)
            self.sizes[(put["Item"]["stream_id"]["S"], put["Item"]["sk"]["S"])] = size
        for requests in params.get("RequestItems", {}).values():
            for request in requests:
                key = request.get("DeleteRequest", {}).get("Key")
                if key is None:
                    continue
                size = self.sizes.get((key["stream_id"]["S"], key["sk"]["S"]), 1024)
                tally.writes += math.ceil(size / 1024) + math.ceil((size + 100) / 1024)
        if created and not tally.items:
            tally.items = tuple(created)

    def after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.tally.requests += 1
        consumed = parsed.get("ConsumedCapacity")
        for entry in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.report(float(entry.get("CapacityUnits", 0.0)))
        if model.name in ("GetItem", "Query"):
            items = [parsed["Item"]] if "Item" in parsed else parsed.get("Items", [])
            read = sum(dynamodb_size(item) for item in items)
            self.tally.reads += max(1, math.ceil(read / 4096))

    how = (
        "computed from the item sizes sent and read: 2 WCU per KB of each item in a\n"
        "  transaction, 1 WCU per KB for the outbox index's copy of a marker and for each\n"
        "  delete, 1 RCU per 4 KB of a consistent read. moto reports no consumed capacity\n"
        "  for TransactWriteItems and fixed figures for reads (shown as 'moto said')"
    )

    def describe(self, tally: Tally) -> str:
        reported = "none" if not tally.reported else f"{tally.reported:g} CU"
        return (
            f"{tally.writes:g} WCU + {tally.reads:g} RCU ({requests(tally.requests)};"
            f" moto said {reported}{tally.sized})"
        )


def cosmos_create_ru(size: int) -> float:
    """Cosmos DB's documented cost of writing an item: 5 RU at 1 KB, 50 RU at 100 KB
    (with every path indexed; this container indexes four), interpolated on a log-log
    line between them; no less than 5."""
    return 5.0 * math.sqrt(max(1.0, size / 1024))


COSMOS_QUERY_RU = 2.8
"""A small query in one partition, served from the index: documented as variable;
about 2.5 to 3 RU (one page, a few items)."""


class CosmosMeter(Meter):
    """Adds up ``x-ms-request-charge`` of every response (cosmosdb-server answers 1 to
    every request, so that sum counts requests, not RU) and computes the RU from the
    requests per Cosmos DB's documented model: each create in a batch
    (:func:`cosmos_create_ru` of its JSON), each delete as a 1 KB write (5 RU), each
    query :data:`COSMOS_QUERY_RU`."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        pipeline = client.client_connection.pipeline_client._pipeline
        run = pipeline.run

        async def counted(request: Any, **kwargs: Any) -> Any:
            self.charge(request)
            response = await run(request, **kwargs)
            self.tally.requests += 1
            charge = response.http_response.headers.get("x-ms-request-charge")
            if charge is not None:
                self.report(float(charge))
            return response

        pipeline.run = counted

    def charge(self, request: Any) -> None:
        import orjson

        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("x-ms-cosmos-is-batch-request", "").lower() == "true":
            created: list[int] = []
            for operation in orjson.loads(request.data or request.body or b"[]"):
                if operation.get("operationType") in ("Create", "Upsert", "Replace"):
                    created.append(len(orjson.dumps(operation.get("resourceBody", {}))))
                    self.tally.writes += cosmos_create_ru(created[-1])
            if created and not self.tally.items:
                self.tally.items = tuple(created)
        elif request.method == "DELETE":
            self.tally.writes += cosmos_create_ru(0)
        elif headers.get("x-ms-documentdb-isquery", "").lower() == "true" and not headers.get(
            "x-ms-cosmos-is-query-plan-request"
        ):
            self.tally.reads += COSMOS_QUERY_RU

    how = (
        "computed from the requests sent, per Cosmos DB's documented figures: writing a\n"
        "  1 KB item 5 RU (with every path indexed; this container indexes four), a small\n"
        "  query in one partition about 2.8 RU. cosmosdb-server answers every request\n"
        "  with x-ms-request-charge: 1 (shown as 'server said': a count of requests)"
    )

    def describe(self, tally: Tally) -> str:
        reported = "none" if tally.reported is None else f"{tally.reported:g}"
        return (
            f"{tally.writes + tally.reads:.1f} RU ({tally.writes:.1f} writing, "
            f"{tally.reads:.1f} querying; {requests(tally.requests)}; server "
            f"said {reported}{tally.sized})"
        )


class FirestoreMeter(Meter):
    """Counts document writes in every commit (appends and the relay's clear) and the
    documents each read asks for: by key, each asked (found or not); a query, what it
    returns but at least one. Firestore bills per document, so these counts are the
    bill's units; the emulator reports nothing."""

    def __init__(self, db: Any) -> None:
        super().__init__()
        client = db.client
        new_batch, get_all, query = client.batch, db.get_all, db.query

        def batch() -> Any:
            write = new_batch()
            commit = write.commit

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.tally.requests += 1
                self.tally.writes += len(write._write_pbs)
                return await commit(*args, **kwargs)

            write.commit = counted
            return write

        async def counted_get_all(refs: Sequence[Any], **kwargs: Any) -> Any:
            self.tally.requests += 1
            self.tally.reads += len(refs)
            return await get_all(refs, **kwargs)

        async def counted_query(q: Any) -> Any:
            self.tally.requests += 1
            found = await query(q)
            self.tally.reads += max(1, len(found))
            return found

        client.batch = batch
        db.get_all = counted_get_all
        db.query = counted_query

    how = (
        "counted in the requests sent (Firestore bills documents written and read; the\n"
        "  emulator reports no usage): each document a commit writes or deletes, each one\n"
        "  a read asks for by key, found or not, and what a query returns, at least one"
    )

    def describe(self, tally: Tally) -> str:
        return (
            f"{plural(tally.writes, 'document write')}, {plural(tally.reads, 'document read')}"
            f" ({requests(tally.requests)})"
        )


def meter(target: Target, backend: Any) -> Meter:
    if target.name == "dynamodb":
        return DynamoMeter(backend._client)
    if target.name == "cosmos":
        return CosmosMeter(backend.client)
    return FirestoreMeter(backend.db)


async def cost(backend: Backend, target: Target) -> tuple[Meter, dict[str, Tally]]:
    """Per one-event append: the first of a stream, a later one, the relay's clear."""
    measure = meter(target, backend)
    store: Any = await backend.event_store(route(target, "cost"))
    pending: list[Pending] = []
    store.on_append(lambda p, _: pending.append(p))
    notes = [new_note() for _ in range(COST_APPENDS)]
    measure.take(1)  # opening the store
    tallies: dict[str, Tally] = {}
    for note_id, sid in notes:
        await store.append(sid, [note_event(note_id, 1)], NO_STREAM)
    tallies["first append of a stream"] = measure.take(COST_APPENDS)
    for note_id, sid in notes:
        await store.append(sid, [note_event(note_id, 2)], 1)
    later = tallies["later append (exact version)"] = measure.take(COST_APPENDS)
    for marker in pending[COST_APPENDS:]:
        await store.clear([marker])
    cleared = tallies["the relay's clear of its marker"] = measure.take(COST_APPENDS)
    reported = None
    if later.reported is not None or cleared.reported is not None:
        reported = (later.reported or 0.0) + (cleared.reported or 0.0)
    tallies["later append and its clear"] = Tally(
        later.requests + cleared.requests,
        later.writes + cleared.writes,
        later.reads + cleared.reads,
        reported,
        later.items,
    )
    return measure, tallies


# -- the run ------------------------------------------------------------------------------


def cell(value: Figure, lab: Figure) -> str:
    if isinstance(value, tuple):
        assert isinstance(lab, tuple)
        return f"{value[0]:,.1f} / {value[1]:,.1f} ({value[0] / lab[0]:,.0f}x)"
    assert not isinstance(lab, tuple)
    return f"{value:,.0f} ({value / lab:.2g}x)"


def table(results: dict[str, dict[str, Figure]]) -> None:
    lab = results[LAB.label]
    width = 26
    print("\nEvent and view stores on local servers, beside the lab store (same run)")
    print("(in brackets: the figure over the lab's; below 1 a slower rate, above 1 a")
    print("longer p50 read)\n")
    print(f"{'figure':<34}" + "".join(f"{label:>{width}}" for label in results))
    print("-" * (34 + width * len(results)))
    for name, value in lab.items():
        cells = [cell(figures[name], value) for figures in results.values()]
        print(f"{name:<34}" + "".join(f"{c:>{width}}" for c in cells))


def costs(results: dict[str, tuple[Meter, dict[str, Tally]]]) -> None:
    if not results:
        return
    print("\nCost of a one-event append, in each store's own unit (the lab has none)")
    for label, (measure, tallies) in results.items():
        print(f"\n{label}\n  {measure.how}")
        for what, tally in tallies.items():
            print(f"  {what:<34} {measure.describe(tally)}")
    for measure, tallies in results.values():
        if isinstance(measure, CosmosMeter):
            append = tallies["later append (exact version)"]
            both = tallies["later append and its clear"]
            print(
                f"\nCosmos DB: a one-event append costs about {append.writes + append.reads:.0f}"
                f" RU, {both.writes + both.reads:.0f} with its relay's clear (computed, not"
                f" measured: no local server charges as Cosmos DB does);\nEquinox measures"
                f" about {EQUINOX_RU} RU."
            )


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer of everything")
    parser.add_argument(
        "--only", help=f"cloud backends to run, comma-separated: {', '.join(CLOUDS)}"
    )
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CLOUDS)
    unknown = [n for n in names if n not in CLOUDS and n != LAB.name]
    if unknown:
        parser.error(f"unknown backend {unknown[0]!r}: choose from {', '.join(CLOUDS)}")
    size = QUICK if args.quick else FULL
    started = time.perf_counter()
    results: dict[str, dict[str, Figure]] = {}
    prices: dict[str, tuple[Meter, dict[str, Tally]]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as tmp:
        for target in [LAB, *(CLOUDS[n] for n in names if n in CLOUDS)]:
            try:
                async with opened(target, Path(tmp)) as backend:
                    results[target.label] = await figures(backend, target, size)
                    if target is not LAB:
                        prices[target.label] = await cost(backend, target)
            except (ServerMissing, ServerFailed) as exc:
                skipped[target.label] = str(exc)
                print(f"  {target.label}: skipped: {exc}", flush=True)
    table(results)
    costs(prices)
    for label, why in skipped.items():
        print(f"\n{label} not run: {why}")
    print(f"\n({'--quick, ' if args.quick else ''}{time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
