"""Telemetry emits and reads (``POST /events``, ``GET /events``), beside baselines
measured in the same run.

    python benchmarks/bench_telemetry.py [--quick] [--no-http]

Each figure runs a fresh runtime (``engines.runtime.bootstrap``, the packaged lab
routes) on a fresh temporary data directory, under ``serving_gc()`` as ``engines
serve`` runs. Events are ``rl.reward`` events of about 250 B of payload, emitted as an
agent. The baselines are measured in the same run, because the machine is noisy: note
creates through the same path with as many writers (one new stream and one event per
command, so never a conflict), and on the command path raw ``sqlite3`` at the lab's
``synchronous`` with bodies the size ours stored (``baselines.py``: the ceiling).

emit     by ``runtime.dispatch``, projectors off: the command path (one append per
         command, expected version ANY, no read of the stream first). Single emits one
         after another; 100-event batches one after another, all on one run; 50
         concurrent emitters of single events, all on one run (one stream: they share
         the writer's group commit), then each on a run of its own. Raw: a single-row
         transaction after another; one executemany of 100 rows per transaction; 50
         rows per transaction.
http     the same over HTTP in-process (httpx ASGI transport, projectors on): each
         ``POST /events`` is answered 201 once the ``events`` view has it, as a client
         sees it; the baseline is ``POST /notes`` (answered once the notes view has it).
read     ``GET /events?run_id=R`` on a run of 10,000 events whose user's tenant holds
         20,000 more (the same user's other runs, other users' runs; interleaved in
         time), after the projectors caught up: the first page (limit 100) again and
         again, then every page, walked with the cursor; as the run's user, then as an
         auditor (the tenant's events: no user, no grants). Beside it, ``GET /healthz``
         on the same client (the HTTP floor) and the SQL the view store issued for each
         page, replayed on a connection of our own (the ceiling). ``EXPLAIN QUERY PLAN``
         of that SQL says whether a page is read in index order or sorted, and whether
         a page after the cursor starts its index range there or at the run's start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import baselines  # benchmarks/ is on sys.path: run as `python benchmarks/bench_telemetry.py`
import httpx

from commands.envelope import Command
from commands.notes import create_note_command
from commands.telemetry import MAX_BATCH, EmitEvents, EmittedEvent, batches
from engines.auth import mint_lab_token
from engines.http import build_app
from engines.runtime import Runtime, bootstrap, serving_gc
from engines.settings import load_settings
from routing.backends.sqlite.db import SqliteDatabase
from spine.events import Scope

WRITERS = 50
SCOPE = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s1")
SETTINGS = load_settings(None)[0]
SYNC = SETTINGS.connections.sqlite.synchronous
EVENTS_TABLE = "telemetry"  # the events view's table (telemetry_store in the lab routes)


@dataclass
class Row:
    name: str
    events: int
    seconds: float
    baseline: float | None = None  # ev/s of the note creates this row is compared with
    raw: float | None = None  # ev/s of raw sqlite3 doing the same shape of writes
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@contextlib.asynccontextmanager
async def fresh_runtime(*, projectors: bool) -> AsyncIterator[Runtime]:
    d = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    try:
        async with bootstrap(SETTINGS, d, run_projectors=projectors) as rt:
            yield rt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def database(runtime: Runtime) -> SqliteDatabase:
    """The lab's one SQLite database (spine, feed and every view share it)."""
    db = runtime.view_of("events").db  # type: ignore[attr-defined]
    assert isinstance(db, SqliteDatabase)
    return db


def stored_body(runtime: Runtime) -> float:
    """Mean stored body per event of the spine, read through a connection of our own."""
    with contextlib.closing(sqlite3.connect(database(runtime).path)) as conn:
        return float(conn.execute("SELECT avg(length(body)) FROM spine_events").fetchone()[0])


# -- what is emitted ----------------------------------------------------------------------


def event(run_id: str, i: int) -> dict[str, Any]:
    """One event as a client emits it: the body of ``POST /events``."""
    return {
        "event_type": "rl.reward",
        "run_id": run_id,
        "step_id": f"step-{i}",
        "payload": {"reward": 0.25, "step": i, "policy": "ppo-bench", "obs": "x" * 200},
    }


def emit(run_id: str, first: int, size: int = 1, scope: Scope = SCOPE) -> Command[EmitEvents]:
    """The command ``POST /events`` dispatches for ``size`` events of ``run_id``."""
    events = [EmittedEvent.model_validate(event(run_id, i)) for i in range(first, first + size)]
    (payload,) = batches(events)
    return Command[EmitEvents](scope=scope, source="agent", payload=payload)


def note(i: int) -> Command[Any]:
    return create_note_command(SCOPE, {"title": f"bench note {i}", "content": "x" * 200})


def run_stream(run_id: str) -> str:
    return f"rl/t1/lab/{run_id}"


# -- the command path ---------------------------------------------------------------------

Make = Callable[[int, int], Command[Any]]
"""``make(writer, i)``: the ``i``-th command of ``writer``."""


async def timed(runtime: Runtime, make: Make, commands: int, writers: int) -> float:
    """Seconds for ``writers`` tasks to dispatch ``commands`` in all, each task one after
    another."""
    per = commands // writers

    async def writer(w: int) -> None:
        for i in range(per):
            await runtime.dispatch(make(w, i))

    with serving_gc():
        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return time.perf_counter() - started


async def notes_rate(n: int, writers: int) -> float:
    """The baseline: note creates per second by ``runtime.dispatch``."""
    async with fresh_runtime(projectors=False) as rt:
        seconds = await timed(rt, lambda w, i: note(w * n + i), n, writers)
    return n / seconds


async def emitted(
    make: Make, commands: int, writers: int, size: int, runs: Sequence[str]
) -> tuple[float, float, float]:
    """Seconds to dispatch, events per commit, and the stored body per event."""
    async with fresh_runtime(projectors=False) as rt:
        db = database(rt)
        commits = db.commits
        seconds = await timed(rt, make, commands, writers)
        commits = db.commits - commits
        held = sum([len(await rt.spine.read_stream(run_stream(r))) for r in runs])
        body = stored_body(rt)
    if held != commands * size:
        raise RuntimeError(f"the runs hold {held} events, not {commands * size}")
    return seconds, commands * size / max(commits, 1), body


async def bus_rows(n: int, batched: int) -> list[Row]:
    base = await notes_rate(n, 1)
    seconds, per_commit, body = await emitted(lambda w, i: emit("r1", i), n, 1, 1, ["r1"])
    single = Row(
        "single emits, 1 emitter",
        n,
        seconds,
        baseline=base,
        raw=baselines.raw_single(SYNC, n, round(body)),
        note=f"stored body {body:.0f} B/event",
    )
    seconds, per_commit, _ = await emitted(
        lambda w, i: emit("r1", i * MAX_BATCH, MAX_BATCH),
        batched // MAX_BATCH,
        1,
        MAX_BATCH,
        ["r1"],
    )
    batch = Row(
        f"{MAX_BATCH}-event batches, 1 run",
        batched,
        seconds,
        baseline=base,
        raw=baselines.raw_batch(SYNC, batched // MAX_BATCH, MAX_BATCH, round(body)),
        note=f"{batched // MAX_BATCH} batches",
    )
    rows = [Row("note creates, 1 writer (baseline)", n, n / base), single, batch]

    base = await notes_rate(n, WRITERS)
    raw = baselines.raw_group(SYNC, WRITERS, n // WRITERS, round(body))
    rows.append(Row(f"note creates, {WRITERS} concurrent (baseline)", n, n / base))
    per = n // WRITERS
    runs = [f"r{w}" for w in range(WRITERS)]
    for name, make, streams in (
        ("one run", lambda w, i: emit("r1", w * per + i), ["r1"]),
        (f"{WRITERS} runs", lambda w, i: emit(runs[w], i), runs),
    ):
        seconds, per_commit, _ = await emitted(make, n, WRITERS, 1, streams)
        rows.append(
            Row(
                f"{WRITERS} concurrent emitters, {name}",
                n,
                seconds,
                baseline=base,
                raw=raw,
                note=f"{per_commit:.1f} events/commit",
            )
        )
    return rows


# -- over HTTP ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client(
    runtime: Runtime, *, kind: str = "agent", roles: Sequence[str] = ()
) -> AsyncIterator[httpx.AsyncClient]:
    token = mint_lab_token(
        runtime.data_dir,
        tenant_id="t1",
        user_id="u1",
        surfaces=["s1"],
        projects=[],
        kind=kind,
        roles=roles,
        ttl_seconds=3600,
    )
    transport = httpx.ASGITransport(app=build_app(runtime))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", headers=headers, timeout=60
    ) as c:
        yield c


Post = Callable[[httpx.AsyncClient, int, int], Awaitable[httpx.Response]]
"""``post(client, writer, i)``: the ``i``-th request of ``writer``."""


async def posted(post: Post, requests: int, writers: int, *, kind: str = "agent") -> Row:
    """A fresh runtime, projectors on: ``writers`` clients make ``requests`` in all, each
    client one after another, every one answered 201 (or 202: the view was late)."""
    per = requests // writers
    late = 0
    async with fresh_runtime(projectors=True) as rt, client(rt, kind=kind) as c:

        async def writer(w: int) -> None:
            nonlocal late
            for i in range(per):
                response = await post(c, w, i)
                if response.status_code == 202:
                    late += 1
                elif response.status_code != 201:
                    raise RuntimeError(response.text)

        with serving_gc():
            started = time.perf_counter()
            await asyncio.gather(*(writer(w) for w in range(writers)))
            seconds = time.perf_counter() - started
    return Row("", requests, seconds, note=f"{late} answered 202 (view late)" if late else "")


async def http_rows(n: int, batched: int) -> list[Row]:
    def note_post(c: httpx.AsyncClient, w: int, i: int) -> Awaitable[httpx.Response]:
        return c.post("/notes", json={"title": f"n{w}-{i}", "content": "x" * 200})

    def single_post(run: Callable[[int], str]) -> Post:
        return lambda c, w, i: c.post("/events", json=event(run(w), w * n + i))

    def batch_post(c: httpx.AsyncClient, w: int, i: int) -> Awaitable[httpx.Response]:
        body = {"events": [event("r1", i * MAX_BATCH + k) for k in range(MAX_BATCH)]}
        return c.post("/events", json=body)

    rows = []
    base = await posted(note_post, n, 1, kind="user")
    base.name = "POST /notes, 1 client (baseline)"
    single = await posted(single_post(lambda w: "r1"), n, 1)
    single.name, single.baseline = "POST /events single, 1 client", base.rate
    batch = await posted(batch_post, batched // MAX_BATCH, 1)
    batch.events *= MAX_BATCH
    batch.name, batch.baseline = f"POST /events {MAX_BATCH}-event batches, 1 run", base.rate
    batch.note = f"{batched // MAX_BATCH} requests {batch.note}".strip()
    rows += [base, single, batch]

    base = await posted(note_post, n, WRITERS, kind="user")
    base.name = f"POST /notes, {WRITERS} concurrent (baseline)"
    rows.append(base)
    for name, run in (("one run", lambda w: "r1"), (f"{WRITERS} runs", lambda w: f"r{w}")):
        row = await posted(single_post(run), n, WRITERS)
        row.name, row.baseline = f"POST /events, {WRITERS} concurrent, {name}", base.rate
        rows.append(row)
    return rows


# -- reading ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, in ms of ``values`` in seconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


@dataclass
class Latency:
    name: str
    ours: list[float]  # seconds
    raw: list[float] | None = None  # seconds, the same SQL on our own connection
    note: str = ""


async def fill(runtime: Runtime, run_events: int, others: int) -> float:
    """``run_events`` events on run R of u1, and ``others`` more interleaved with them in
    time: half on u1's other runs (10), half on the runs of u2..u5 (5 each); batches of
    100. Then the projectors catch up; the seconds that took."""
    other_users = [SCOPE.model_copy(update={"user_id": f"u{u}"}) for u in range(2, 6)]
    other_batches = others // MAX_BATCH
    rounds = run_events // MAX_BATCH
    plan: list[list[Command[EmitEvents]]] = [[] for _ in range(rounds)]
    for r in range(rounds):
        plan[r].append(emit("R", r * MAX_BATCH, MAX_BATCH))
    for b in range(other_batches):
        if b % 2 == 0:
            command = emit(f"u1-run{b % 20 // 2}", b * MAX_BATCH, MAX_BATCH)
        else:
            user = other_users[b % 8 // 2]
            command = emit(f"{user.user_id}-run{b % 10 // 2}", b * MAX_BATCH, MAX_BATCH, user)
        plan[b * rounds // other_batches].append(command)
    for commands in plan:
        await asyncio.gather(*(runtime.dispatch(c) for c in commands))
    with serving_gc():
        started = time.perf_counter()
        read = await runtime.catch_up()
        seconds = time.perf_counter() - started
    if read < run_events + others:
        raise RuntimeError(f"the projectors caught up {read} events, not {run_events + others}")
    return seconds


Statement = tuple[str, list[Any]]


class Spy:
    """Records the SQL (and arguments) the events view's store reads with."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self.inner = db.fetchall
        self.seen: list[Statement] = []

    async def fetchall(
        self, sql: str, args: Sequence[Any] = (), *, route: str | None = None
    ) -> list[Any]:
        if f'FROM "{EVENTS_TABLE}" ' in sql:
            self.seen.append((sql, list(args)))
        return await self.inner(sql, args, route=route)

    def __enter__(self) -> Spy:
        self.db.fetchall = self.fetchall  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.db.fetchall


async def walk(c: httpx.AsyncClient, expect: int) -> list[float]:
    """Every page of run R (limit 100) by the cursor: each page's seconds."""
    timings: list[float] = []
    cursor: str | None = None
    seen = 0
    while True:
        params: dict[str, Any] = {"run_id": "R", "limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        started = time.perf_counter()
        response = await c.get("/events", params=params)
        timings.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(response.text)
        page = response.json()
        seen += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    if seen != expect:
        raise RuntimeError(f"walked {seen} events of run R, not {expect}")
    return timings


def replay(path: Path, statements: Sequence[Statement], repeats: int) -> list[float]:
    """Each statement's seconds (``repeats`` times over), on a connection of our own."""
    timings = []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        for _ in range(repeats):
            for sql, args in statements:
                started = time.perf_counter()
                conn.execute(sql, args).fetchall()
                timings.append(time.perf_counter() - started)
    return timings


def plan(path: Path, statement: Statement) -> list[str]:
    sql, args = statement
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


def judged(lines: Sequence[str], *, cursor: bool) -> str:
    """Whether a plan reads an index in order or sorts; and, for a page after the cursor,
    whether the index range begins at the cursor or at the start of the run."""
    text = " | ".join(lines)
    if "TEMP B-TREE" in text:
        return "SORTS (a temp B-tree): NOT in index order"
    if not any("USING INDEX" in line or "USING COVERING INDEX" in line for line in lines):
        return "NO INDEX: a full scan"
    verdict = "reads an index in order, no sort"
    if cursor:
        bounds = text.replace("<expr>", "expr")  # what is left of a < or > is a range
        if ">" in bounds or "<" in bounds:
            verdict += "; the range begins at the cursor"
        else:
            verdict += (
                "; the cursor is NOT in the index range (equalities only):"
                " a page reads the run's entries from its first"
            )
    return verdict


@dataclass
class Reads:
    latencies: list[Latency]
    plans: list[tuple[str, list[str]]]
    note: str


async def read_rows(run_events: int, others: int, repeats: int, walks: int) -> Reads:
    async with fresh_runtime(projectors=False) as rt:
        caught_up = await fill(rt, run_events, others)
        path = database(rt).path
        latencies: list[Latency] = []
        plans: list[tuple[str, list[str]]] = []
        async with client(rt) as c:
            floor = []
            with serving_gc():
                for _ in range(repeats):
                    started = time.perf_counter()
                    await c.get("/healthz")
                    floor.append(time.perf_counter() - started)
            latencies.append(Latency("GET /healthz (the HTTP floor)", floor))
        for who, roles in (("user", ()), ("auditor", ("auditor",))):
            async with client(rt, roles=roles) as c:
                with Spy(database(rt)) as spy:
                    # untimed: warms the cache, records the SQL of every page
                    expected_pages = len(await walk(c, run_events))
                pages = spy.seen
                if len(pages) != expected_pages:
                    raise RuntimeError(f"{len(pages)} queries recorded for {expected_pages} pages")
                first = []
                with serving_gc():
                    for _ in range(repeats):
                        started = time.perf_counter()
                        response = await c.get("/events", params={"run_id": "R", "limit": 100})
                        first.append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text
                    walked = [await walk(c, run_events) for _ in range(walks)]
            latencies.append(
                Latency(
                    f"first page, {who}",
                    first,
                    replay(path, pages[:1], repeats),
                )
            )
            raw_walks = [replay(path, pages, 1) for _ in range(walks)]
            whole = statistics.median(sum(w) for w in walked) * 1000
            raw_whole = statistics.median(sum(w) for w in raw_walks) * 1000
            latencies += [
                Latency(
                    f"walk, each page, {who}",
                    [t for w in walked for t in w],
                    [t for w in raw_walks for t in w],
                    note=f"{len(pages)} pages; a whole walk {whole:.0f} ms (raw {raw_whole:.0f})",
                ),
                Latency(
                    f"  its first 10 pages, {who}",
                    [t for w in walked for t in w[:10]],
                    [t for w in raw_walks for t in w[:10]],
                ),
                Latency(
                    f"  its last 10 pages, {who}",
                    [t for w in walked for t in w[-10:]],
                    [t for w in raw_walks for t in w[-10:]],
                ),
            ]
            plans += [
                (f"{who}, first page", plan(path, pages[0])),
                (f"{who}, a page after the cursor", plan(path, pages[len(pages) // 2])),
            ]
    note = (
        f"run R: {run_events:,} events of u1; {others:,} more in the tenant; the projectors"
        f" caught up on {run_events + others:,} in {caught_up:.1f} s."
    )
    return Reads(latencies, plans, note)


# -- output -------------------------------------------------------------------------------


def show(rows: Sequence[Row]) -> None:
    head = (
        f"{'scenario':<44} {'events':>6} {'ev/s':>8} {'vs base':>8} {'raw ev/s':>9} "
        f"{'vs raw':>7}  note"
    )
    print(f"{head}\n{'-' * len(head)}")
    for r in rows:
        ratio = f"{r.rate / r.baseline:.2f}x" if r.baseline else "-"
        raw = f"{r.raw:,.0f}" if r.raw else "-"
        vs_raw = f"{r.rate / r.raw:.2f}x" if r.raw else "-"
        print(
            f"{r.name:<44} {r.events:>6} {r.rate:>8,.0f} {ratio:>8} {raw:>9} {vs_raw:>7}  {r.note}"
        )


def show_reads(reads: Reads) -> None:
    head = (
        f"{'GET /events?run_id=R&limit=100':<36} {'p50 ms':>7} {'p99 ms':>7}  "
        f"{'raw p50':>7} {'raw p99':>7}  note"
    )
    print(f"{head}\n{'-' * len(head)}")
    for r in reads.latencies:
        raw = f"{pct(r.raw, 50):>7.2f} {pct(r.raw, 99):>7.2f}" if r.raw else f"{'-':>7} {'-':>7}"
        print(f"{r.name:<36} {pct(r.ours, 50):>7.2f} {pct(r.ours, 99):>7.2f}  {raw}  {r.note}")
    print(f"\n{reads.note}")
    print("\nEXPLAIN QUERY PLAN of the SQL the view store issued:")
    for name, lines in reads.plans:
        print(f"  {name}: {judged(lines, cursor='cursor' in name)}")
        for line in lines:
            print(f"      {line}")


def main() -> int:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--no-http", action="store_true", help="the command path and reads only")
    args = p.parse_args()
    if args.quick:
        n, n_http, batched, run_events, others, repeats, walks = (
            500,
            200,
            2_000,
            2_000,
            4_000,
            50,
            1,
        )
    else:
        n, n_http, batched, run_events, others, repeats, walks = (
            2_000,
            1_000,
            10_000,
            10_000,
            20_000,
            200,
            3,
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        tempfile.tempdir = tmp  # every database of the run, ours and the baselines'
        print("emit ...", file=sys.stderr, flush=True)
        rows = asyncio.run(bus_rows(n, batched))
        http: list[Row] = []
        if not args.no_http:
            print("http ...", file=sys.stderr, flush=True)
            http = asyncio.run(http_rows(n_http, batched))
        print("read ...", file=sys.stderr, flush=True)
        reads = asyncio.run(read_rows(run_events, others, repeats, walks))
        tempfile.tempdir = None
    print(
        f"Telemetry emits by runtime.dispatch (projectors off), beside note creates through"
        f" the same path\nand raw sqlite3 (synchronous={SYNC}, the ceiling), same run (lab"
        f" SQLite {sqlite3.sqlite_version}).\nvs base = ev/s over the baseline's; a note"
        " create is one event.\n"
    )
    show(rows)
    if http:
        print("\nThe same over HTTP in-process (projectors on: each answer waits for the view).\n")
        show(http)
    print(
        "\nReads after catch-up, over HTTP in-process; raw = the same SQL on our own connection.\n"
    )
    show_reads(reads)
    print(f"\n{time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
