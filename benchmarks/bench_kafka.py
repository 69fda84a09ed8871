"""Command → view through Kafka, beside the lab's in-process path, in one run.

    python benchmarks/bench_kafka.py [--quick]

Two runtimes (``engines.runtime.bootstrap``), each on the packaged lab routes (the
spine and the views on SQLite); the second puts ``spine_feed`` on Kafka: Tansu, started
here on a free 127.0.0.1 port in memory (``engines.devservers``), with the connection
settings of ``examples/routes/kafka.yaml``. Its projectors consume the topic as consumer
groups, in this process; the relay publishes each append as it commits.

latency    200 (50) notes commands one after another, each dispatched and then waited
           for (``Runtime.wait_for``) until the notes view holds it: p50, p99, max ms
sustained  2,000 (500) notes commands from 20 writers at once; events/s from the first
           dispatch until the view holds the last one

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

from commands.notes import create_note_command
from engines.devservers import HOST, ServerFailed, ServerMissing, free_port, start_tansu
from engines.runtime import Runtime, bootstrap, serving_gc
from engines.settings import Settings, load_settings
from routing.config import KafkaConnection, Route
from spine.events import Scope

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


def kafka_settings(bootstrap_servers: str) -> Settings:
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
    connections = settings.connections.model_copy(update={"kafka": kafka})
    return settings.model_copy(update={"routes": routes, "connections": connections})


def note(i: int) -> Any:
    return create_note_command(SCOPE, {"title": f"bench note {i}", "content": "x" * 200})


async def written(rt: Runtime, i: int) -> tuple[str, int]:
    result = await rt.dispatch(note(i))
    return result.stream_id, result.version


async def measure(name: str, settings: Settings, n: int, sustained_n: int) -> Figures:
    d = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    try:
        async with bootstrap(settings, d) as rt:
            for i in range(20):  # warm-up: connections, the groups' joins, caches
                stream_id, seq = await written(rt, -1 - i)
                assert await rt.wait_for(PROJECTOR, stream_id, seq, 60), "warm-up not seen"
            latencies = []
            with serving_gc():
                for i in range(n):
                    started = time.perf_counter()
                    stream_id, seq = await written(rt, i)
                    if not await rt.wait_for(PROJECTOR, stream_id, seq, 30):
                        raise RuntimeError(f"{name}: command {i} not in the view within 30 s")
                    latencies.append(time.perf_counter() - started)
                per = sustained_n // WRITERS
                last: list[tuple[str, int]] = []

                async def writer(w: int) -> None:
                    for i in range(per):
                        last.append(await written(rt, n + w * per + i))

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
        async with tansu() as bootstrap_servers:
            rows.append(
                await measure("kafka (Tansu)", kafka_settings(bootstrap_servers), n, sustained_n)
            )
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
    kafka = [r for r in rows if r is not rows[0]]
    if kafka:
        verdict = "met" if kafka[0].pct(0.99) < 150 else "NOT met"
        print(f"target p99 < 150 ms through Kafka: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
