"""The lab (embedded SQLite) backend beside same-run baselines (see ``baselines.py``).

    python benchmarks/bench_lab.py [--quick] [--synchronous FULL|NORMAL|BOTH]
                                   [--only NAME[,NAME]] [--profile NAME]

Each figure runs on a fresh database in a fresh temporary directory, at each
``PRAGMA synchronous`` asked for (FULL and NORMAL by default), beside the
``eventsourcing`` library ("lib") and raw ``sqlite3`` ("raw", the ceiling) measured in
the same run at the same setting. Events are note events of about 300 B of payload.

single   awaited single-event appends, one after another (streams of 100, exact
         expected versions). Lib: ``app.save`` of one event. Raw: per transaction,
         what any append must run (read the head, look up the command id, INSERT).
writers  100 asyncio tasks, each appending single events to its own stream with exact
         expected versions; beside it, the p99 delay of a 1 ms timer on the event loop
         meanwhile. Lib: its single-save rate. Raw: 100 appends' statements (head,
         command id, INSERT; one stream each) per transaction.
shared   as ``writers`` but onto 10 shared streams with ``ANY`` (hot streams inside one
         group). No baseline, no target.
batch    awaited 100-event appends, a new stream each. Lib: ``app.save`` of a new
         100-event aggregate. Raw: one executemany of 100 rows per transaction.
catchup  the notes projector catching up from an empty checkpoint over notes of 10
         events appended in rounds (so notes interleave in the feed). Lib: its pull
         path (select_notifications, to_domain_event) into a minimal view.
read     ``read_stream`` of a 1,000-event stream; lib: ``repository.get`` of 1,000.
http     ``engines serve`` (uvicorn subprocess, real TCP): sequential POST /notes, each
         answered once the notes view has it; GET /healthz on the same client is the floor.

``--profile NAME`` runs one scenario at the first ``--synchronous`` with cProfile on
the event-loop thread during our timed sections only: light write groups run there,
heavy ones (100 writers, catch-up commits) on the SQLite writer's thread, which is not
profiled, nor are the readers' threads, the baselines, or ``http`` (a subprocess).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.metadata
import os
import pstats
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple

import baselines  # benchmarks/ is on sys.path: run as `python benchmarks/bench_lab.py`
import httpx
import yaml
from workload import expected, new_note, note_event  # benchmarks/ is on sys.path

from commands.handler import fold
from commands.notes import NotesDecider
from engines.auth import mint_lab_token
from engines.domains import DOMAINS
from engines.runtime import bootstrap, serving_gc
from engines.settings import Settings, load_settings
from routing.backends.sqlite import SqliteBackend, SqliteEventStore, open_backend
from routing.config import Connections, Route, SqliteConnection
from spine.events import ANY, NO_STREAM, new_id

SPINE = Route(backend="sqlite", name="spine_events", lab=True)
WRITERS = 100
PROFILER: cProfile.Profile | None = None  # set by --profile

# -- measuring ----------------------------------------------------------------------------


def tick() -> float:
    """Our timed section starts (the profiler, if any, runs until :func:`tock`)."""
    if PROFILER:
        PROFILER.enable()
    return time.perf_counter()


def tock(started: float) -> float:
    elapsed = time.perf_counter() - started
    if PROFILER:
        PROFILER.disable()
    return elapsed


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in ms of ``values`` in seconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


def fresh() -> Path:
    return Path(tempfile.mkdtemp(prefix="ours-"))


@contextlib.asynccontextmanager
async def lab(d: Path, sync: str) -> AsyncIterator[tuple[SqliteBackend, SqliteEventStore]]:
    """Our backend on ``d/lab.sqlite3``, its writer connection checked to run at ``sync``
    (a per-connection setting: only that connection can tell)."""
    connections = Connections(sqlite=SqliteConnection(path="lab.sqlite3", synchronous=sync))
    backend = await open_backend(connections, d)
    try:
        actual = await backend.db.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        if actual != baselines.SYNC_VALUES[sync]:
            raise RuntimeError(f"our writer runs synchronous={actual}, not {sync}")
        yield backend, await backend.event_store(SPINE)
    finally:
        await backend.aclose()


def stored_body(d: Path) -> float:
    """Mean stored body per event, read through a connection of our own."""
    with contextlib.closing(sqlite3.connect(d / "lab.sqlite3")) as conn:
        return float(conn.execute("SELECT avg(length(body)) FROM spine_events").fetchone()[0])


async def lateness(delays: list[float]) -> None:
    """Sleep 1 ms again and again, recording how late each wake-up is."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        delays.append(time.perf_counter() - started - 0.001)


# -- our side: each returns its figures ---------------------------------------------------


async def ours_single(d: Path, sync: str, n: int) -> dict[str, float]:
    plan = []
    for i in range(n):
        if i % 100 == 0:
            note_id, sid = new_note()
        plan.append((sid, [note_event(note_id, i % 100 + 1)], expected(i % 100)))
    async with lab(d, sync) as (_, store):
        started = tick()
        for args in plan:
            await store.append(*args)
        elapsed = tock(started)
    return {"rate": n / elapsed, "body": stored_body(d)}


async def ours_writers(
    d: Path, sync: str, per_writer: int, *, shared: bool = False
) -> dict[str, float]:
    """WRITERS tasks of ``per_writer`` single appends: own streams with exact versions,
    or (``shared``) onto 10 streams with ANY."""
    notes = [new_note() for _ in range(10 if shared else WRITERS)]
    delays: list[float] = []
    async with lab(d, sync) as (backend, store):

        async def writer(w: int) -> None:
            note_id, sid = notes[w % len(notes)]
            for v in range(per_writer):
                event = note_event(note_id, 2 if shared else v + 1)
                await store.append(sid, [event], ANY if shared else expected(v))

        if shared:  # each stream starts with its note.created, untimed
            await asyncio.gather(
                *(store.append(s, [note_event(n, 1)], NO_STREAM) for n, s in notes)
            )
        commits = backend.db.commits
        with serving_gc():  # as `engines serve` runs
            probe = asyncio.create_task(lateness(delays))
            started = tick()
            await asyncio.gather(*(writer(w) for w in range(WRITERS)))
            elapsed = tock(started)
            probe.cancel()
        commits = backend.db.commits - commits
        lengths = {len(await store.read_stream(sid)) for _, sid in notes}
    total = WRITERS * per_writer
    per_stream = total // len(notes) + (1 if shared else 0)
    if lengths != {per_stream}:
        raise RuntimeError(f"streams hold {lengths} events, not {per_stream}")
    return {
        "rate": total / elapsed,
        "per_commit": total / max(commits, 1),
        "lag_p99": pct(delays, 99),
        "lag_max": max(delays) * 1000,
        "body": stored_body(d),
    }


async def ours_batch(d: Path, sync: str, batches: int) -> dict[str, float]:
    plan = []
    for _ in range(batches):
        (note_id, sid), command_id = new_note(), new_id()
        plan.append((sid, [note_event(note_id, s, command_id) for s in range(1, 101)]))
    async with lab(d, sync) as (_, store):
        started = tick()
        for sid, events in plan:
            await store.append(sid, events, NO_STREAM)
        elapsed = tock(started)
    return {"rate": batches * 100 / elapsed, "body": stored_body(d)}


def lab_settings(sync: str) -> Settings:
    """The packaged lab settings at ``sync``."""
    settings, _ = load_settings(None)
    sqlite = settings.connections.sqlite.model_copy(update={"synchronous": sync})
    connections = settings.connections.model_copy(update={"sqlite": sqlite})
    return settings.model_copy(update={"connections": connections})


async def ours_catchup(d: Path, sync: str, notes: int) -> dict[str, float]:
    """``notes`` notes x 10 events, appended in rounds (round r gives each note its r-th
    event), then the notes projector catches up from empty (the runtime is built with
    the notes domain alone: each other domain's projector would read the same feed)."""
    ids = [new_note() for _ in range(notes)]
    only_notes = [d for d in DOMAINS if d.name == "notes"]
    # the runtime keeps its database to itself: synchronous is as lab_settings says
    async with bootstrap(
        lab_settings(sync), d, run_projectors=False, domains=only_notes
    ) as runtime:
        for v in range(10):
            await asyncio.gather(
                *(runtime.spine.append(s, [note_event(n, v + 1)], expected(v)) for n, s in ids)
            )
        with serving_gc():  # as `engines serve` runs
            started = tick()
            read = await runtime.catch_up()
            elapsed = tock(started)
        status = await runtime.status("notes")
    if read != notes * 10 or status.lag or status.parked:
        raise RuntimeError(f"catch-up read {read} of {notes * 10}: {status}")
    return {"rate": read / elapsed}


async def ours_read(d: Path, sync: str, repeats: int) -> dict[str, float]:
    note_id, sid = new_note()
    decider = NotesDecider()
    async with lab(d, sync) as (_, store):
        for start in range(0, 1_000, 100):
            command_id = new_id()
            events = [note_event(note_id, s + 1, command_id) for s in range(start, start + 100)]
            await store.append(sid, events, expected(start))
        if fold(decider, await store.read_stream(sid)).version != 1_000:
            raise RuntimeError("the stream does not fold to version 1,000")
        reads, folds = [], []
        with serving_gc():  # as `engines serve` runs
            started = tick()
            for _ in range(repeats):
                t0 = time.perf_counter()
                stream = await store.read_stream(sid)
                t1 = time.perf_counter()
                fold(decider, stream)
                reads.append(t1 - t0)
                folds.append(time.perf_counter() - t0)
            tock(started)
    return {"p50": pct(reads, 50), "p99": pct(reads, 99), "fold_p50": pct(folds, 50)}


def ours_http(d: Path, sync: str, n: int) -> dict[str, float]:
    """POST→view latencies from one keep-alive client, one request after another."""
    settings = lab_settings(sync)
    (d / "routes.yaml").write_text(
        yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True))
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["serve", "--routes", "routes.yaml", "--data-dir", "data", "--port", str(port)]
    with (d / "server.log").open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "engines.cli", *args, "--log-level", "warning"],
            cwd=d,
            stdout=out,
            stderr=out,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(300):
                if server.poll() is not None:
                    raise RuntimeError((d / "server.log").read_text()[-2000:])
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        break
                time.sleep(0.05)
            else:
                raise RuntimeError("the server did not start in 15 s")
            token = mint_lab_token(
                d / "data",
                tenant_id="t1",
                user_id="u1",
                surfaces=["s"],
                projects=[],
                ttl_seconds=3600,
                settings=settings.auth,
            )
            client.headers["Authorization"] = f"Bearer {token}"

            def timed(request: Callable[[], httpx.Response]) -> tuple[float, int]:
                started = time.perf_counter()
                status = request().status_code
                return time.perf_counter() - started, status

            body = {"title": "Bench", "content": "x" * 200, "tags": ["bench", "lab"]}
            post = [timed(lambda: client.post("/notes", json=body)) for _ in range(n // 5 + n)]
            health = [timed(lambda: client.get("/healthz"))[0] for _ in range(n)]
    finally:
        server.terminate()
        server.wait(timeout=15)
    post = post[n // 5 :]  # the first fifth warmed up
    statuses = [status for _, status in post]
    if any(status not in (201, 202) for status in statuses):
        raise RuntimeError(f"POST /notes answered {set(statuses)}")
    latencies = [t for t, _ in post]
    return {
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "accepted": statuses.count(202),
        "health_p50": pct(health, 50),
        "health_p99": pct(health, 99),
    }


# -- figures ------------------------------------------------------------------------------


class Row(NamedTuple):
    figure: str
    sync: str
    unit: str  # "ev/s" (higher is better) or "ms" (lower is better)
    ours: float
    lib: float | None = None
    raw: float | None = None
    targets: tuple[tuple[str, float], ...] = ()  # ("lib" | "raw", ratio) or ("abs", bound)
    note: str = ""


def ratio(row: Row, base: float | None) -> float | None:
    """How many times better than ``base`` ours is (> 1: ours is faster)."""
    if base is None:
        return None
    return base / row.ours if row.unit == "ms" else row.ours / base


def met(row: Row) -> bool | None:
    if not row.targets:
        return None
    for kind, bound in row.targets:
        if kind == "abs":
            ok = row.ours <= bound if row.unit == "ms" else row.ours >= bound
        else:
            ok = (ratio(row, row.lib if kind == "lib" else row.raw) or 0) >= bound
        if not ok:
            return False
    return True


def run(
    measure: Callable[..., Coroutine[Any, Any, dict[str, float]]], *args: Any, **kw: Any
) -> dict[str, float]:
    return asyncio.run(measure(fresh(), *args, **kw))


def single(sync: str, n: int) -> list[Row]:
    ours = run(ours_single, sync, n)
    return [
        Row(
            "sequential single appends",
            sync,
            "ev/s",
            ours["rate"],
            lib=baselines.lib_single(sync),
            raw=baselines.raw_single(sync, n, round(ours["body"])),
            targets=(("lib", 1.0 if sync == "FULL" else 1.5),),
            note=f"{n} appends; stored body {ours['body']:.0f} B/event",
        )
    ]


def writers(sync: str, per_writer: int) -> list[Row]:
    ours = run(ours_writers, sync, per_writer)
    return [
        Row(
            f"{WRITERS} writers, own streams",
            sync,
            "ev/s",
            ours["rate"],
            lib=baselines.lib_single(sync),
            raw=baselines.raw_group(sync, WRITERS, per_writer, round(ours["body"])),
            targets=(("raw", 0.75), ("lib", 9.0)) if sync == "FULL" else (("raw", 0.75),),
            note=f"{WRITERS}x{per_writer} appends, {ours['per_commit']:.1f} appends/commit",
        ),
        Row(
            "  event loop: 1 ms timer late, p99",
            sync,
            "ms",
            ours["lag_p99"],
            targets=(("abs", 20),),
            note=f"max {ours['lag_max']:.1f} ms, while the {WRITERS} writers ran",
        ),
    ]


def shared(sync: str, per_writer: int) -> list[Row]:
    ours = run(ours_writers, sync, per_writer, shared=True)
    return [
        Row(
            f"{WRITERS} writers, 10 shared streams, ANY",
            sync,
            "ev/s",
            ours["rate"],
            note=f"{ours['per_commit']:.1f} appends/commit;"
            f" 1 ms timer late p99 {ours['lag_p99']:.1f} ms",
        )
    ]


def batch(sync: str, batches: int) -> list[Row]:
    ours = run(ours_batch, sync, batches)
    return [
        Row(
            "100-event appends",
            sync,
            "ev/s",
            ours["rate"],
            lib=baselines.lib_batch(sync, batches, 100),
            raw=baselines.raw_batch(sync, batches, 100, round(ours["body"])),
            targets=(("raw", 0.7),),
        )
    ]


def catchup(sync: str, notes: int) -> list[Row]:
    ours = run(ours_catchup, sync, notes)
    return [
        Row(
            "projector catch-up, notes view",
            sync,
            "ev/s",
            ours["rate"],
            lib=baselines.lib_projection(sync, notes * 10),
            targets=(("abs", 50_000),),
            note=f"{notes * 10:,} events over {notes:,} notes",
        )
    ]


def read(sync: str, repeats: int) -> list[Row]:
    ours, lib = run(ours_read, sync, repeats), baselines.lib_fold()
    return [
        Row("read a 1,000-event stream, p50", sync, "ms", ours["p50"], lib, targets=(("abs", 5),)),
        Row(
            "read a 1,000-event stream, p99",
            sync,
            "ms",
            ours["p99"],
            lib,
            targets=(("abs", 10),),
            note=f"{repeats} reads; read + fold p50 {ours['fold_p50']:.2f} ms; lib: its fold, p50",
        ),
    ]


def http(sync: str, n: int) -> list[Row]:
    ours = ours_http(fresh(), sync, n)
    return [
        Row(
            "HTTP POST→view p99",
            sync,
            "ms",
            ours["p99"],
            targets=(("abs", 10),),
            note=f"{n} POSTs: p50 {ours['p50']:.2f} ms, {ours['accepted']:.0f} x 202 (view late);"
            f" floor GET /healthz p50 {ours['health_p50']:.2f}, p99 {ours['health_p99']:.2f} ms",
        )
    ]


# name: (rows beside the baselines, size by default, size with --quick)
SCENARIOS: dict[str, tuple[Callable[[str, int], list[Row]], int, int]] = {
    "single": (single, 2_000, 500),  # appends
    "writers": (writers, 50, 10),  # appends per writer
    "shared": (shared, 50, 10),  # appends per writer
    "batch": (batch, 100, 30),  # 100-event appends
    "catchup": (catchup, 5_000, 1_000),  # notes of 10 events
    "read": (read, 100, 30),  # reads
    "http": (http, 500, 150),  # requests
}

# -- output -------------------------------------------------------------------------------


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if unit == "ms" else f"{value:,.0f} ev/s"


LINE = "{:<36} {:<6} {:>12}  {:>12} {:>6}  {:>12} {:>6}  {:<22} {}"


def print_row(r: Row) -> None:
    def times(base: float | None) -> str:
        x = ratio(r, base)
        return "-" if x is None else f"{x:.2f}x"

    def target(kind: str, bound: float) -> str:
        if kind != "abs":
            return f">={bound:g}x {kind}"
        return f"<={bound:g} ms" if r.unit == "ms" else f">={bound:,.0f}"

    ours, lib, raw = (show(x, r.unit) for x in (r.ours, r.lib, r.raw))
    targets = ", ".join(target(kind, bound) for kind, bound in r.targets) or "-"
    verdict = {None: "-", True: "yes", False: "NO"}[met(r)]
    print(
        LINE.format(r.figure, r.sync, ours, lib, times(r.lib), raw, times(r.raw), targets, verdict)
    )
    if r.note:
        print(f"      {r.note}")


def main() -> int:
    global PROFILER
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument(
        "--synchronous", type=str.upper, choices=("FULL", "NORMAL", "BOTH"), default="BOTH"
    )
    p.add_argument(
        "--only", metavar="NAME[,NAME]", default=",".join(SCENARIOS), help=", ".join(SCENARIOS)
    )
    p.add_argument("--profile", metavar="NAME", choices=[n for n in SCENARIOS if n != "http"])
    args = p.parse_args()
    names = (
        [args.profile] if args.profile else [n.strip() for n in args.only.split(",") if n.strip()]
    )
    if unknown := set(names) - set(SCENARIOS):
        p.error(f"unknown scenario {', '.join(sorted(unknown))}")
    syncs = ["FULL", "NORMAL"] if args.synchronous == "BOTH" else [args.synchronous]
    if args.profile:
        syncs, PROFILER = syncs[:1], cProfile.Profile()

    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        tempfile.tempdir = tmp  # every database of the run, ours and the baselines'
        for sync in syncs:
            for name in names:
                measure, size, quick = SCENARIOS[name]
                print(f"{name} [{sync}] ...", file=sys.stderr, flush=True)
                rows += measure(sync, quick if args.quick else size)
        tempfile.tempdir = None
    elapsed = time.perf_counter() - started

    print(
        f"\nLab SQLite backend beside same-run baselines ({'quick' if args.quick else 'default'}"
        f" sizes; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; SQLite"
        f" {sqlite3.sqlite_version}; eventsourcing {importlib.metadata.version('eventsourcing')})"
    )
    print("lib = eventsourcing on SQLite, raw = plain sqlite3 (the ceiling), both at the same")
    print("synchronous; vs lib / vs raw = how many times better ours is (>1: ours is faster).\n")
    head = LINE.format("figure", "sync", "ours", "lib", "vs lib", "raw", "vs raw", "target", "met")
    print(f"{head}\n{'-' * len(head)}")
    for row in rows:
        print_row(row)
    judged = [r for r in rows if met(r) is not None]
    missed = [f"{r.figure.strip()} [{r.sync}]" for r in judged if not met(r)]
    print(f"\n{len(judged) - len(missed)} of {len(judged)} targets met in {elapsed:.0f} s.")
    for figure in missed:
        print(f"  missed: {figure}")
    if PROFILER:
        print("\n(figures above include cProfile's overhead)")
        for order in ("cumulative", "tottime"):
            print(f"\n=== event-loop thread, timed sections, top 25 by {order} ===")
            pstats.Stats(PROFILER).strip_dirs().sort_stats(order).print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
