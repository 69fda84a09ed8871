"""The cloud event stores against their local servers, beside the lab store, in one run.

    python benchmarks/bench_cloud.py [--quick]

For each backend whose event store is built, on a fresh table / container per figure:

single     one writer, one-event appends to new streams, one after another
writers    100 concurrent writers, each appending to its own stream
batch      appends of 98 events (every cloud store's atomic limit, less its markers)
read       a 980-event stream read whole, p50 and p99
cost       what one one-event append writes, in the store's own unit: DynamoDB write
           units computed from item sizes (moto reports none: 1 unit per KB of each item,
           twice inside a transaction, plus the outbox index's copy)

The lab (SQLite) store runs the same figures first: the ratio reads as "how much slower
than the embedded store on this machine", which the noisy machine cannot change.
Local servers are not the clouds: these figures compare designs, not services. moto in
particular copies a table whole before each transaction (to roll it back on a
cancellation) and takes one request at a time (see tests/servers/moto_serial.py), so
its rates fall as a table grows: they measure moto, and bound nothing about DynamoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from routing.backends.sqlite import open_backend as open_sqlite
from routing.config import Connections, DynamoDBConnection, Route, SqliteConnection
from spine.codec import seal
from spine.events import GENESIS_HASH, NO_STREAM, NewEvent, new_id
from spine.store import EventStore
from spine.streams import stream_id

BATCH = 98
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers


def event(command_id: str) -> NewEvent:
    return NewEvent(
        event_type="note.created",
        tenant_id="t1",
        mode="saas",
        user_id="u1",
        surface_id="chat",
        source="ui",
        command_id=command_id,
        payload={"title": "a note", "content": "x" * 400},
    )


@dataclass
class Target:
    name: str
    open: Callable[[str], AsyncIterator[EventStore]]
    """A fresh store on a fresh physical name, closed when the block ends."""


def lab_target(data_dir: Path) -> Target:
    @contextlib.asynccontextmanager
    async def open_store(name: str) -> AsyncIterator[EventStore]:
        connections = Connections(sqlite=SqliteConnection(path=f"{name}.db", synchronous="FULL"))
        backend = await open_sqlite(connections, data_dir)
        try:
            yield await backend.event_store(Route(backend="sqlite", name="spine", lab=True))
        finally:
            await backend.aclose()

    return Target("sqlite (lab)", open_store)


def dynamodb_target(endpoint: str, data_dir: Path) -> Target:
    from routing.backends.dynamodb import open_backend as open_dynamodb

    @contextlib.asynccontextmanager
    async def open_store(name: str) -> AsyncIterator[EventStore]:
        settings = DynamoDBConnection(
            endpoint_url=endpoint,
            access_key_id="testing",
            secret_access_key="testing",
            table_prefix=f"{name}_",
        )
        backend = await open_dynamodb(Connections(dynamodb=settings), data_dir)
        try:
            yield await backend.event_store(Route(backend="dynamodb", name="spine"))
        finally:
            await backend.aclose()

    return Target("dynamodb (moto)", open_store)


async def timed(run: Callable[[], Awaitable[int]]) -> float:
    started = time.perf_counter()
    count = await run()
    return count / (time.perf_counter() - started)


async def figures(target: Target, quick: bool) -> dict[str, str]:
    n_single = 100 if quick else 400
    writers, each = (20, 5) if quick else (100, 5)
    batches = 3 if quick else 10
    reads = 10 if quick else 30
    out: dict[str, str] = {}

    async with target.open(f"s{new_id()[-8:]}") as store:

        async def single() -> int:
            for i in range(n_single):
                sid = stream_id("notes", "t1", "saas", f"s{i}")
                await store.append(sid, [event(new_id())], NO_STREAM)
            return n_single

        out["single appends/s"] = f"{await timed(single):,.0f}"

    async with target.open(f"w{new_id()[-8:]}") as store:

        async def writer(w: int) -> None:
            sid = stream_id("notes", "t1", "saas", f"w{w}")
            for i in range(each):
                await store.append(sid, [event(new_id())], i or NO_STREAM)

        async def concurrent() -> int:
            await asyncio.gather(*(writer(w) for w in range(writers)))
            return writers * each

        out[f"{writers} writers, appends/s"] = f"{await timed(concurrent):,.0f}"

    async with target.open(f"b{new_id()[-8:]}") as store:
        sid = stream_id("notes", "t1", "saas", "big")

        async def batched() -> int:
            for b in range(batches):
                command = new_id()
                await store.append(sid, [event(command) for _ in range(BATCH)], b * BATCH)
            return batches * BATCH

        out[f"{BATCH}-event appends, events/s"] = f"{await timed(batched):,.0f}"
        timings = []
        for _ in range(reads):
            started = time.perf_counter()
            await store.read_stream(sid)
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        p99 = timings[min(len(timings) - 1, math.ceil(len(timings) * 0.99) - 1)]
        read_name = f"read {batches * BATCH} events, p50/p99 ms"
        out[read_name] = f"{statistics.median(timings):.1f} / {p99:.1f}"
    return out


def dynamodb_write_units() -> str:
    """Write units of a one-event append, from item sizes: every item of a transaction
    costs twice its 1 KB units; the outbox index writes its copy of the marker once."""
    sealed, body = seal(
        event(new_id()),
        stream_id=stream_id("notes", "t1", "saas", "n1"),
        seq=1,
        prev_hash=GENESIS_HASH,
        recorded_at=datetime.now(UTC),
    )
    event_item = len(body) + len(sealed.stream_id) + 24 + 64 + len(sealed.command_id) + 40
    marker = len(sealed.stream_id) + len(sealed.command_id) + 40
    outbox = len(sealed.stream_id) * 2 + 80
    units = sum(math.ceil(size / 1024) for size in (event_item, marker, outbox))
    return f"{2 * units + 1} WCU (event item {event_item} B; 2x3 in the transaction, +1 index)"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from tests.servers.fixtures import HERE as SERVERS  # the servers the suites start
    from tests.servers.process import HOST, ServerProcess, free_port

    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        results["sqlite (lab)"] = await figures(lab_target(data_dir), args.quick)
        port = free_port()
        moto = [sys.executable, str(SERVERS / "moto_serial.py"), HOST, str(port)]
        server = ServerProcess.start(
            "moto_server", moto, ready_url=f"http://{HOST}:{port}/moto-api/", timeout=30
        )
        try:
            target = dynamodb_target(f"http://{HOST}:{port}", data_dir)
            results[target.name] = await figures(target, args.quick)
        finally:
            server.stop()
    names = list(next(iter(results.values())))
    print("\nCloud event stores on local servers, beside the lab store (same run)\n")
    print(f"{'figure':<34}" + "".join(f"{t:>20}" for t in results))
    print("-" * (34 + 20 * len(results)))
    for name in names:
        print(f"{name:<34}" + "".join(f"{r[name]:>20}" for r in results.values()))
    print(f"\none-event append, DynamoDB: {dynamodb_write_units()}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
