"""Command → view through Kafka, beside the lab's in-process path, in one run.

    python benchmarks/bench_kafka.py [--quick]

Three paths, each a runtime (``engines.runtime.bootstrap``) on the packaged lab routes
(the spine and the views on SQLite):

lab        the lab as it is: commands dispatched in process, the SQLite feed
feed       ``spine_feed`` on Kafka: Tansu, started here on a free 127.0.0.1 port in memory
           (``engines.devservers``), with the connection settings of
           ``examples/routes/kafka.yaml``; commands dispatched in process, the relay
           publishing each append as it commits, the projectors consuming the topic as
           consumer groups (in this process)
bus        also ``command_bus`` on Kafka: each command sent by the producer client
           (``engines.client``, ``send_and_wait``) with a lab token, carried by a worker
           (``engines.worker.CommandWorker``, in this process) that verifies the token and
           answers, then on through the feed as above

latency    200 (50) notes commands one after another, each sent and then waited for
           (``Runtime.wait_for``) until the notes view holds it: p50, p99, max ms
sustained  2,000 (500) notes commands from 20 writers at once; events/s from the first
           send until the view holds the last one

Target (issue 10): p99 under 150 ms through Kafka on these local servers. A local broker
is not a cluster: the figures compare paths on one machine (a relay, a broker round
trip and a fetch against a position read of one SQLite file), not services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commands.notes import CreateNote, create_note_command
from engines.auth import mint_lab_token
from engines.client import CommandClient, client_for, message_for
from engines.devservers import HOST, ServerFailed, ServerMissing, free_port, start_tansu
from engines.runtime import Runtime, bootstrap, serving_gc
from engines.settings import Settings, load_settings
from engines.worker import CommandWorker, kafka_bus
from routing.backends.kafka.bus import Accepted
from routing.config import KafkaConnection, Route
from spine.events import Scope, new_id

SCOPE = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s1")
WRITERS = 20
PROJECTOR = "notes"


@dataclass
class Figures:
    name: str
    latencies: list[float]
    sustained: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def lab_settings() -> Settings:
    return load_settings(None)[0]


def kafka_settings(bootstrap_servers: str, *, bus: bool = False) -> Settings:
    settings = lab_settings()
    kafka = KafkaConnection(
        bootstrap_servers=bootstrap_servers,
        partitions=8,
        fetch_max_wait_ms=50,
        session_timeout_ms=1_000,
        heartbeat_interval_ms=100,
        rebalance_timeout_ms=1_000,
    )
    routes = dict(settings.routes) | {"spine_feed": Route(backend="kafka", name="bench.spine")}
    if bus:
        routes["command_bus"] = Route(backend="kafka", name="bench.commands")
    connections = settings.connections.model_copy(update={"kafka": kafka})
    return settings.model_copy(update={"routes": routes, "connections": connections})


def note(i: int) -> Any:
    return create_note_command(SCOPE, {"title": f"bench note {i}", "content": "x" * 200})


class Sender:
    """Sends a notes command and returns its stream and version: in process, or over the
    bus (``client``, with ``token``)."""

    def __init__(self, rt: Runtime, client: CommandClient | None, token: str) -> None:
        self.rt, self.client, self.token = rt, client, token

    async def __call__(self, i: int) -> tuple[str, int]:
        if self.client is None:
            result = await self.rt.dispatch(note(i))
            return result.stream_id, result.version
        payload = CreateNote(note_id=new_id(), title=f"bench note {i}", content="x" * 200)
        message = message_for(payload, token=self.token, command_id=new_id(), surface_id="s1")
        answer = await self.client.send_and_wait(message, timeout=30)
        if not isinstance(answer, Accepted):
            raise RuntimeError(f"command {i} refused: {answer}")
        return answer.stream_id, answer.version


@contextlib.asynccontextmanager
async def sender(rt: Runtime, d: Path) -> AsyncIterator[Sender]:
    """In process, or where the command bus is on Kafka, a client and a worker."""
    route = rt.settings.routes["command_bus"]
    if route.backend != "kafka":
        yield Sender(rt, None, "")
        return
    token = mint_lab_token(
        d, tenant_id="t1", user_id="u1", surfaces=["s1"], projects=[], ttl_seconds=3600
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(CommandWorker(rt, kafka_bus(rt)).run(stop))
    try:
        async with client_for(rt.settings, d, create=True) as client:
            yield Sender(rt, client, token)
    finally:
        stop.set()
        await worker


async def measure(name: str, settings: Settings, n: int, sustained_n: int) -> Figures:
    d = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    try:
        async with bootstrap(settings, d) as rt, sender(rt, d) as written:
            for i in range(20):  # warm-up: connections, the groups' joins, caches
                stream_id, seq = await written(-1 - i)
                assert await rt.wait_for(PROJECTOR, stream_id, seq, 60), "warm-up not seen"
            latencies = []
            with serving_gc():
                for i in range(n):
                    started = time.perf_counter()
                    stream_id, seq = await written(i)
                    if not await rt.wait_for(PROJECTOR, stream_id, seq, 30):
                        raise RuntimeError(f"{name}: command {i} not in the view within 30 s")
                    latencies.append(time.perf_counter() - started)
                per = sustained_n // WRITERS
                last: list[tuple[str, int]] = []

                async def writer(w: int) -> None:
                    for i in range(per):
                        last.append(await written(n + w * per + i))

                started = time.perf_counter()
                await asyncio.gather(*(writer(w) for w in range(WRITERS)))
                for stream_id, seq in last:
                    if not await rt.wait_for(PROJECTOR, stream_id, seq, 60):
                        raise RuntimeError(f"{name}: {stream_id} not in the view within 60 s")
                rate = len(last) / (time.perf_counter() - started)
            return Figures(name, latencies, rate)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.asynccontextmanager
async def tansu() -> AsyncIterator[str]:
    port = free_port()
    server = await asyncio.to_thread(start_tansu, HOST, port)
    try:
        yield f"{HOST}:{port}"
    finally:
        await asyncio.to_thread(server.stop)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    n, sustained_n = (50, 500) if args.quick else (200, 2_000)
    rows = [await measure("lab (in process)", lab_settings(), n, sustained_n)]
    try:
        async with tansu() as servers:
            rows.append(await measure("feed on Kafka", kafka_settings(servers), n, sustained_n))
            bus = kafka_settings(servers, bus=True)
            rows.append(await measure("bus + feed on Kafka", bus, n, sustained_n))
    except (ServerMissing, ServerFailed) as exc:
        print(f"kafka: skipped: {exc}", file=sys.stderr)
    print(f"command -> view, {n} commands one at a time; {sustained_n} from {WRITERS} writers")
    print(f"{'path':<20} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'sustained ev/s':>15}")
    base = rows[0].sustained
    for r in rows:
        ratio = "" if r is rows[0] else f" ({r.sustained / base:.2f}x)"
        print(
            f"{r.name:<20} {r.pct(0.5):>8.1f} {r.pct(0.99):>8.1f} "
            f"{max(r.latencies) * 1000:>8.1f} {r.sustained:>15,.0f}{ratio}"
        )
        print(f"{'':<20} mean {statistics.fmean(r.latencies) * 1000:.1f} ms")
    for r in rows[1:]:
        verdict = "met" if r.pct(0.99) < 150 else "NOT met"
        print(f"target p99 < 150 ms, {r.name}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
