"""The Cosmos DB event store against a local cosmosdb-server (not real Cosmos DB).

    python benchmarks/bench_cosmos.py [--quick]

Starts cosmosdb-server (``tests/servers``: ``npm ci`` there first) on a free 127.0.0.1
port, measures, and stops it. Events are note events of about 300 B of payload.

single   awaited one-event appends, one after another, on one stream of 100 (exact
         expected versions): appends/s and latency p50/p99.
writers  20 asyncio tasks through one client, each appending one-event appends to its
         own stream (exact expected versions): appends/s in all.
racing   20 writers on ONE stream with ``ANY``, each through a client of its own (as
         separate processes would), appending once each per round, all at once:
         appends/s, and the tries an append took (each try: 2 reads and a batch).
batch    awaited 98-event appends (the most one batch takes), a new stream each.
read     ``read_stream`` of a 980-event stream: p50.

cosmosdb-server is an in-memory Node.js process with none of Cosmos DB's replication,
and it answers every request with ``x-ms-request-charge: 1``: these figures compare
layouts and round trips, not what a Cosmos account would give; see the request-unit
estimate printed at the end for the cost side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.backends.cosmos import CosmosBackend, open_backend  # noqa: E402
from routing.backends.cosmos.spine import (  # noqa: E402
    MAX_EVENTS,
    CosmosEventStore,
    command_marker_id,
    event_item_id,
    outbox_marker_id,
)
from routing.config import Connections, CosmosConnection, Route  # noqa: E402
from spine.codec import seal  # noqa: E402
from spine.events import ANY, GENESIS_HASH, NO_STREAM, NewEvent, new_id  # noqa: E402
from spine.streams import stream_id  # noqa: E402

SERVER = ROOT / "tests" / "servers" / "node_modules" / ".bin" / "cosmosdb-server"
KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
WRITERS = 20


def note_event(command_id: str | None = None) -> NewEvent:
    return NewEvent.model_validate(
        {
            "event_type": "note.created",
            "tenant_id": "t1",
            "mode": "saas",
            "user_id": "u1",
            "surface_id": "chat",
            "run_id": "run-1",
            "step_id": "step-1",
            "source": "ui",
            "command_id": command_id or new_id(),
            "payload": {"title": "a note", "body": "x" * 250, "tags": ["a", "b"]},
        }
    )


@contextmanager
def cosmosdb_server() -> Iterator[str]:
    if not SERVER.exists():
        print("bench_cosmos: skipped, cosmosdb-server is not installed (`npm ci` in tests/servers)")
        sys.exit(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    process = subprocess.Popen(
        [str(SERVER), "--host", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=1, context=context):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("cosmosdb-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


@asynccontextmanager
async def backend(url: str, database: str) -> AsyncIterator[CosmosBackend]:
    connections = Connections(
        cosmos=CosmosConnection(endpoint=url, key=KEY, database=database, verify_tls=False)
    )
    opened = await open_backend(connections, ROOT, create=True)
    try:
        yield opened
    finally:
        await opened.aclose()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def single(store: CosmosEventStore, appends: int) -> dict[str, float]:
    sid = stream_id("notes", "t1", "saas", f"single-{new_id()}")
    latencies: list[float] = []
    start = time.perf_counter()
    for version in range(appends):
        began = time.perf_counter()
        await store.append(sid, [note_event()], version if version else NO_STREAM)
        latencies.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    return {
        "appends/s": appends / elapsed,
        "p50 ms": statistics.median(latencies) * 1000,
        "p99 ms": pct(latencies, 0.99) * 1000,
    }


async def writers(store: CosmosEventStore, appends: int) -> dict[str, float]:
    async def one(n: int) -> None:
        sid = stream_id("notes", "t1", "saas", f"w{n}-{new_id()}")
        for version in range(appends):
            await store.append(sid, [note_event()], version)

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(WRITERS)))
    return {"appends/s": WRITERS * appends / (time.perf_counter() - start)}


async def racing(stores: list[CosmosEventStore], rounds: int) -> dict[str, float]:
    """Rounds in which every writer appends once, all at once: each round's 20 appends
    race for the same seqs (what 20 processes appending to one hot stream meet)."""
    sid = stream_id("notes", "t1", "saas", f"racing-{new_id()}")
    tries: list[int] = []

    async def one(store: CosmosEventStore) -> None:
        calls = 0
        original = store._append_once

        async def counted(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            return await original(*args)

        store._append_once = counted  # type: ignore[method-assign]
        try:
            await store.append(sid, [note_event()], ANY)
        finally:
            del store._append_once
        tries.append(calls)

    start = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one(s) for s in stores))
    elapsed = time.perf_counter() - start
    events = await stores[0].read_stream(sid)
    assert [e.seq for e in events] == list(range(1, len(stores) * rounds + 1))
    return {
        "appends/s": len(stores) * rounds / elapsed,
        "tries mean": statistics.mean(tries),
        "tries max": max(tries),
    }


async def batch(store: CosmosEventStore, appends: int) -> dict[str, float]:
    start = time.perf_counter()
    for _ in range(appends):
        sid = stream_id("notes", "t1", "saas", f"batch-{new_id()}")
        command = new_id()
        await store.append(sid, [note_event(command) for _ in range(MAX_EVENTS)], NO_STREAM)
    elapsed = time.perf_counter() - start
    return {"appends/s": appends / elapsed, "events/s": appends * MAX_EVENTS / elapsed}


async def read(store: CosmosEventStore, rounds: int) -> dict[str, float]:
    sid = stream_id("notes", "t1", "saas", f"read-{new_id()}")
    for version in range(0, 10 * MAX_EVENTS, MAX_EVENTS):
        command = new_id()
        await store.append(sid, [note_event(command) for _ in range(MAX_EVENTS)], version)
    times: list[float] = []
    for _ in range(rounds):
        began = time.perf_counter()
        events = await store.read_stream(sid)
        times.append(time.perf_counter() - began)
    assert len(events) == 10 * MAX_EVENTS
    return {"events": len(events), "p50 ms": statistics.median(times) * 1000}


def item_sizes() -> dict[str, int]:
    """The bytes of each item a one-event append writes (as JSON, as stored)."""
    sid = stream_id("notes", "t1", "saas", "n-" + new_id())
    event = note_event()
    envelope, body = seal(
        event, stream_id=sid, seq=1, prev_hash=GENESIS_HASH, recorded_at=datetime.now(UTC)
    )
    items = {
        "event": {
            "id": event_item_id(1),
            "stream_id": sid,
            "type": "event",
            "seq": 1,
            "command_id": event.command_id,
            "hash": envelope.hash,
            "body": body.decode(),
        },
        "command": {
            "id": command_marker_id(event.command_id),
            "stream_id": sid,
            "type": "command",
            "command_id": event.command_id,
            "first_seq": 1,
            "last_seq": 1,
        },
        "outbox": {
            "id": outbox_marker_id(1),
            "stream_id": sid,
            "type": "outbox",
            "first_seq": 1,
            "last_seq": 1,
            "written_at": "2026-01-01T00:00:00.000000Z",
            "outbox_at": 1_767_225_600_000_000,
        },
    }
    return {name: len(orjson.dumps(item)) for name, item in items.items()}


async def main(quick: bool) -> None:
    scale = 1 if quick else 3
    results: dict[str, dict[str, float]] = {}
    with cosmosdb_server() as url:
        async with AsyncExitStack() as stack:
            opened = await stack.enter_async_context(backend(url, "bench"))
            clients = [
                await stack.enter_async_context(backend(url, "bench")) for _ in range(WRITERS)
            ]

            async def fresh(name: str) -> CosmosEventStore:
                # one container each: cosmosdb-server scans a whole container per query
                return await opened.event_store(Route(backend="cosmos", name=name))

            await single(await fresh("warmup"), 20)  # connections, the database
            results["single"] = await single(await fresh("single"), 100)
            results["writers"] = await writers(await fresh("writers"), 10 * scale)
            await fresh("racing")
            racers = [await c.event_store(Route(backend="cosmos", name="racing")) for c in clients]
            results["racing"] = await racing(racers, 2 * scale)
            results["batch"] = await batch(await fresh("batch"), 10 * scale)
            results["read"] = await read(await fresh("read"), 10 * scale)
    for name, figures in results.items():
        shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
        print(f"{name:<8} {shown}")
    print("item bytes per one-event append:", item_sizes())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
