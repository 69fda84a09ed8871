"""The Firestore spine against the local Cloud Firestore emulator (a measurement, not a test).

    python benchmarks/bench_firestore.py [--emulator HOST:PORT] [--quick]

Without ``--emulator`` it starts one (tests/servers/) and stops it after. Events are note
events of about 300 B of payload. The emulator is a single Java process on this machine:
its figures say what the code costs per round trip, not what Firestore itself sustains.

single    awaited single-event appends to one stream, exact expected versions
batch     awaited 100-event appends, a new stream each (NO_STREAM)
own       20 asyncio writers in one client, each appending to its own stream
any       20 writers on ONE stream with ANY, each with its own client (as 20 processes
          would be): appends/s, and commits tried per append landed
read      read_stream of a 1,000-event stream (p50 of 5)

Per one-event append, the store writes 3 documents (the event, the command marker, the
outbox marker; 4 on a stream's first append: its document) and the relay deletes 1 (the
marker); it reads 3 by key in one round trip (marker, event N, event N+1), or for ANY
the marker by key and the last event by a query.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing.backends.firestore import FirestoreBackend, FirestoreEventStore, open_backend
from routing.config import Connections, FirestoreConnection, Route
from spine.events import ANY, NO_STREAM, NewEvent, new_id
from spine.streams import stream_id
from tests.servers.fixtures import FirestoreEmulator, _firestore_emulator_script
from tests.servers.process import ServerProcess, free_port

PROJECT = "engines-bench"


def note_event(command_id: str) -> NewEvent:
    return NewEvent(
        event_type="note.updated",
        tenant_id="t1",
        mode="lab",
        user_id="u1",
        surface_id="s",
        run_id="bench",
        source="ui",
        command_id=command_id,
        payload={"title": "Bench note", "content": "x" * 200, "tags": ["bench", "lab"]},
    )


def new_stream() -> str:
    return stream_id("notes", "t1", "lab", new_id())


@asynccontextmanager
async def backend(host_port: str) -> AsyncIterator[FirestoreBackend]:
    settings = FirestoreConnection(project=PROJECT, emulator_host=host_port)
    opened = await open_backend(Connections(firestore=settings), Path("."))
    try:
        yield opened
    finally:
        await opened.aclose()


async def spine(b: FirestoreBackend, route: str) -> FirestoreEventStore:
    return await b.event_store(Route(backend="firestore", name=route))


async def single(host_port: str, n: int) -> str:
    async with backend(host_port) as b:
        store, sid = await spine(b, f"bench_{new_id()[-12:]}"), new_stream()
        started = time.perf_counter()
        for version in range(n):
            await store.append(sid, [note_event(new_id())], version or NO_STREAM)
        elapsed = time.perf_counter() - started
    return f"single  {n / elapsed:8.0f} appends/s  ({elapsed / n * 1000:.1f} ms each)"


async def batch(host_port: str, n: int) -> str:
    async with backend(host_port) as b:
        store = await spine(b, f"bench_{new_id()[-12:]}")
        started = time.perf_counter()
        for _ in range(n):
            command = new_id()
            await store.append(new_stream(), [note_event(command) for _ in range(100)], NO_STREAM)
        elapsed = time.perf_counter() - started
    return (
        f"batch   {n / elapsed:8.1f} appends/s of 100 events  ({n * 100 / elapsed:.0f} events/s,"
        f" {elapsed / n * 1000:.0f} ms each)"
    )


async def own_streams(host_port: str, n: int) -> str:
    async with backend(host_port) as b:
        store = await spine(b, f"bench_{new_id()[-12:]}")

        async def writer() -> None:
            sid = new_stream()
            for version in range(n):
                await store.append(sid, [note_event(new_id())], version or NO_STREAM)

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(20)))
        elapsed = time.perf_counter() - started
    return f"own     {20 * n / elapsed:8.0f} appends/s  (20 writers, a stream each)"


async def any_one_stream(host_port: str, n: int) -> str:
    route, sid = f"bench_{new_id()[-12:]}", new_stream()
    tried = 0
    clients = [backend(host_port) for _ in range(20)]
    opened = [await c.__aenter__() for c in clients]
    try:
        stores = [await spine(b, route) for b in opened]
        for store in stores:  # count the commits each append tries
            commit = store.db.commit

            async def counted(write: object, commit: object = commit) -> None:
                nonlocal tried
                tried += 1
                await commit(write)  # type: ignore[operator]

            store.db.commit = counted  # type: ignore[method-assign]

        async def writer(store: FirestoreEventStore) -> None:
            for _ in range(n):
                await store.append(sid, [note_event(new_id())], ANY)

        started = time.perf_counter()
        await asyncio.gather(*(writer(s) for s in stores))
        elapsed = time.perf_counter() - started
        landed = len(await stores[0].read_stream(sid))
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
    return (
        f"any     {landed / elapsed:8.0f} appends/s  (20 clients, one stream, ANY; "
        f"{tried / landed:.1f} commits tried per append)"
    )


async def read(host_port: str) -> str:
    async with backend(host_port) as b:
        store, sid = await spine(b, f"bench_{new_id()[-12:]}"), new_stream()
        for version in range(0, 1000, 100):
            command = new_id()
            await store.append(sid, [note_event(command) for _ in range(100)], version or NO_STREAM)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert len(await store.read_stream(sid)) == 1000
            times.append(time.perf_counter() - started)
    return f"read    {statistics.median(times) * 1000:8.0f} ms for 1,000 events (p50 of 5)"


async def run(host_port: str, quick: bool) -> None:
    n = 100 if quick else 500
    # The emulator runs on the JVM: a first pass of every scenario warms its JIT up.
    for warm in (True, False):
        m = 100 if warm else n
        lines = [
            await single(host_port, m),
            await batch(host_port, m // 10),
            await own_streams(host_port, m // 20),
            await any_one_stream(host_port, m // 50),
            await read(host_port),
        ]
        if not warm:
            print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emulator", help="HOST:PORT of a running emulator")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.emulator:
        asyncio.run(run(args.emulator, args.quick))
        return
    emulator = FirestoreEmulator(port=free_port(), project=PROJECT)
    script = _firestore_emulator_script()
    argv = [str(script), "start", f"--host={emulator.host}", f"--port={emulator.port}"]
    with ServerProcess.start(
        "cloud-firestore-emulator", argv, ready_url=f"{emulator.endpoint_url}/", timeout=60
    ):
        asyncio.run(run(emulator.host_port, args.quick))


if __name__ == "__main__":
    main()
