"""Benchmark of the lab (embedded SQLite) backend against same-run baselines.

Usage::

    python benchmarks/bench_lab.py [--quick] [--synchronous FULL|NORMAL|both]
                                   [--only NAME[,NAME...]] [--profile NAME]

Every figure is measured on a fresh database file in a fresh temporary directory, and
next to it, in the same run, at the same ``PRAGMA synchronous`` and with events of the
same shape (one stream = one aggregate, about 300 bytes of payload per event), the
baselines of :mod:`baselines`: the ``eventsourcing`` library (9.5.6, its own SQLite
persistence) and plain :mod:`sqlite3` (the floor). Both FULL and NORMAL are run unless
``--synchronous`` says otherwise; the project's own backend is checked to really run at
the requested setting (writer and reader connections) before anything is timed.

Scenarios (``--only`` / ``--profile`` names):

``single``
    Single-event appends awaited one after another (streams of 100 events, exact
    expected versions, ``NO_STREAM`` for each stream's first event). Events are built
    before the timing, as the library baseline builds its events before ``save()``.
    Target: >= the library's single-save rate.
``concurrent``
    100 asyncio tasks, each appending single events to its own stream with exact
    expected versions. Wall-clock events/s. Target: >= 10x the library's single-save rate.
``shared``
    100 tasks appending single events to 10 shared streams (writer ``w`` to stream
    ``w % 10``) with ``expected_version=ANY``: many appends to the same hot stream in one
    group-commit transaction, each chained on the one before. Target as ``concurrent``.
    ANY is the variant the target applies to: with exact versions, optimistic
    concurrency lets only one of the writers that read version ``v`` win, so throughput is
    bounded by (streams x commits/s) whatever the store does; that is the semantics, not
    the store's speed. The exact-version variant is still measured, for information:
``shared-exact``
    As ``shared`` but with exact expected versions; a writer whose append conflicts
    retries at once with the actual version the ``ConcurrencyError`` names (same
    command id, nothing was written). Reports the conflict count. No target.
``batched``
    One ``append`` call of 100 events (a new stream each), awaited one after another.
    Target: >= 1.5x the library's 100-event batched rate (events/s).
``catchup``
    ``FeedLoop.catch_up()`` of the notes projector from an empty checkpoint and an
    empty view, over N notes x 10 events (``note.created`` then 9 ``note.updated``,
    appended in rounds so notes interleave in the feed). Target: >= 50,000 events/s.
    Baseline: the library's projection catch-up over the same number of events.
``read``
    ``read_stream`` of a 1,000-event note stream, median and p99 over repeats (plus
    read + fold with the notes decider, the like of the library's ``repository.get``).
    Target: < 10 ms. Baseline: the library's fold of 1,000 events (median).
``http``
    ``POST /notes`` on a real uvicorn server (``engines serve``, subprocess on 127.0.0.1)
    with an httpx client, sequentially, after a warm-up; a POST answers 201 only once
    the notes view reflects it, so its latency is write -> view. p50/p90/p99/max and the
    number of 202s (view not reflected in time). Target: p99 < 20 ms. Baseline: GET
    /healthz on the same server and client (the HTTP round-trip floor).
``http-inprocess``
    The same through the ASGI app in-process (``httpx.ASGITransport``); no target.

``--profile NAME`` runs one scenario (our side only, at the first ``--synchronous``
value) under :mod:`cProfile` and prints the top 25 functions by cumulative and by total
time for the event-loop thread, the SQLite writer thread and the reader threads
(cProfile sees one thread per profiler, so the writer and reader threads get their own,
switched on only during the timed section). ``http`` is profiled in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import math
import os
import pstats
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from commands.handler import fold
from commands.notes import NotesDecider
from engines.auth import mint_lab_token
from engines.http import build_app
from engines.runtime import bootstrap
from engines.settings import Settings, load_settings
from projections.driver import FeedLoop, projector_status
from projections.notes import NotesProjector
from projections.runner import ProjectorRunner
from routing.backends.sqlite import SqliteBackend, SqliteEventStore, open_backend
from routing.backends.sqlite.db import SqliteDatabase
from routing.config import Connections, Route, SqliteConnection
from spine.codec import verify_chain
from spine.errors import ConcurrencyError
from spine.events import ANY, NO_STREAM, ExpectedVersion, NewEvent, new_id
from spine.streams import stream_id

try:  # ``python benchmarks/bench_lab.py`` puts benchmarks/ on sys.path ...
    import baselines
except ImportError:  # ... ``python -m benchmarks.bench_lab`` does not
    from benchmarks import baselines

TENANT = "t1"
USER = "u1"
SURFACE = "s"
SPINE = Route(backend="sqlite", name="spine_events", lab=True)
NOTES_VIEW = Route(backend="sqlite", name="notes", lab=True)
CHECKPOINTS = Route(backend="sqlite", name="projection_checkpoints", lab=True)
FEED = Route(backend="sqlite", name="spine_feed", lab=True)
PAYLOAD_BYTES = 300
STREAM_LENGTH = baselines.STREAM_LENGTH
READ_EVENTS = 1_000
SYNC_VALUES = {"NORMAL": 1, "FULL": 2}

SCENARIOS = (
    "single",
    "concurrent",
    "shared",
    "shared-exact",
    "batched",
    "catchup",
    "read",
    "http",
    "http-inprocess",
)


@dataclass(frozen=True)
class Sizes:
    single: int
    writers: int
    per_writer: int
    shared_streams: int
    shared_per_writer: int
    exact_per_writer: int
    batches: int
    batch_size: int
    notes: int
    events_per_note: int
    read_repeats: int
    http_warmup: int
    http_requests: int


DEFAULT = Sizes(
    single=2_000,
    writers=100,
    per_writer=50,
    shared_streams=10,
    shared_per_writer=50,
    exact_per_writer=20,
    batches=100,
    batch_size=100,
    notes=10_000,
    events_per_note=10,
    read_repeats=100,
    http_warmup=100,
    http_requests=500,
)
QUICK = Sizes(
    single=500,
    writers=100,
    per_writer=10,
    shared_streams=10,
    shared_per_writer=10,
    exact_per_writer=5,
    batches=30,
    batch_size=100,
    notes=2_000,
    events_per_note=10,
    read_repeats=30,
    http_warmup=30,
    http_requests=150,
)


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure: ours, its same-run baselines, the target and whether it is met."""

    figure: str
    sync: str
    ours: float
    unit: str  # "ev/s" (higher is better) or "ms" (lower is better)
    library: float | None = None
    raw: float | None = None
    target: float | None = None
    target_text: str = "-"
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.unit != "ms"

    @property
    def ratio(self) -> float | None:
        """How many times the target is met: ours/target for rates, target/ours for
        times; >= 1.00 means met."""
        if self.target is None:
            return None
        if self.higher_is_better:
            return self.ours / self.target
        return self.target / self.ours if self.ours > 0 else math.inf

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else ratio >= 1.0


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} ev/s"


def print_table(rows: Sequence[Row]) -> None:
    headers = ("figure", "sync", "ours", "library", "raw sqlite", "target", "ratio", "met")
    body = []
    for r in rows:
        ratio = r.ratio
        body.append(
            (
                r.figure,
                r.sync,
                _fmt(r.ours, r.unit),
                _fmt(r.library, r.unit),
                _fmt(r.raw, r.unit),
                r.target_text,
                "-" if ratio is None else f"{ratio:.2f}",
                {None: "-", True: "yes", False: "NO"}[r.met],
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for b, r in zip(body, rows, strict=True):
        cells = [b[0].ljust(widths[0]), b[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(b[2:5], widths[2:5], strict=True)]
        cells += [b[5].ljust(widths[5]), b[6].rjust(widths[6]), b[7]]
        print("  ".join(cells))
        if r.note:
            print(" " * 4 + r.note)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- profiling --------------------------------------------------------------------------------


class Probe:
    """Marks the timed section of a scenario. The plain probe does nothing."""

    def start(self) -> None:
        """The timed section begins."""

    def stop(self) -> None:
        """The timed section ends."""


class _TimedConnection:
    """Forwards to a writer connection, timing ``execute``/``executemany`` by statement kind
    (BEGIN, SELECT, INSERT, COMMIT ...), so that a COMMIT's fsync shows apart from the SQL."""

    def __init__(self, conn: Any, timings: dict[str, list[float]]) -> None:
        self._conn = conn
        self._timings = timings

    def _timed(self, method: str, sql: str, *args: Any) -> Any:
        kind = sql.lstrip().split(None, 1)[0].upper() + (" (many)" if method != "execute" else "")
        started = time.perf_counter()
        try:
            return getattr(self._conn, method)(sql, *args)
        finally:
            entry = self._timings.setdefault(kind, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed("execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed("executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class ProfileProbe(Probe):
    """cProfile for the event-loop thread, plus one profiler per SQLite writer/reader
    thread, all switched on only inside the timed section. Also counts the writer's
    transactions (batches), the jobs in them and the time it spends in them."""

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: dict[tuple[str, int], cProfile.Profile] = {}
        self.active = False
        self.batches = 0
        self.jobs = 0
        self.writer_busy = 0.0
        self.wall = 0.0
        self.statements: dict[str, list[float]] = {}
        self.gc_runs: dict[int, list[float]] = {}
        self._gc_started = 0.0
        self._started = 0.0
        self._lock = threading.Lock()

    def _thread_profile(self) -> cProfile.Profile:
        thread = threading.current_thread()
        key = (thread.name, thread.ident or 0)
        with self._lock:
            if key not in self.threads:
                self.threads[key] = cProfile.Profile()
            return self.threads[key]

    @contextlib.contextmanager
    def installed(self) -> Iterator[ProfileProbe]:
        """Wrap :class:`SqliteDatabase`'s batch and read steps (in this process only)."""
        run_batch = SqliteDatabase._run_batch
        run_read = SqliteDatabase._run_read
        probe = self

        def profiled_batch(db: SqliteDatabase, conn: Any, batch: list[Any]) -> Any:
            if not probe.active:
                return run_batch(db, conn, batch)
            prof = probe._thread_profile()
            timed: Any = _TimedConnection(conn, probe.statements)  # duck-types the connection
            started = time.perf_counter()
            prof.enable()
            try:
                return run_batch(db, timed, batch)
            finally:
                prof.disable()
                probe.writer_busy += time.perf_counter() - started
                probe.batches += 1
                probe.jobs += len(batch)

        def profiled_read(db: SqliteDatabase, fn: Any) -> Any:
            if not probe.active:
                return run_read(db, fn)
            prof = probe._thread_profile()
            prof.enable()
            try:
                return run_read(db, fn)
            finally:
                prof.disable()

        SqliteDatabase._run_batch = profiled_batch  # type: ignore[method-assign,assignment]
        SqliteDatabase._run_read = profiled_read  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            SqliteDatabase._run_batch = run_batch  # type: ignore[method-assign,assignment]
            SqliteDatabase._run_read = run_read  # type: ignore[method-assign,assignment]

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        entry = self.gc_runs.setdefault(int(info["generation"]), [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - self._gc_started

    def start(self) -> None:
        self.active = True
        gc.callbacks.append(self._on_gc)
        self._started = time.perf_counter()
        self.main.enable()

    def stop(self) -> None:
        self.main.disable()
        self.wall += time.perf_counter() - self._started
        gc.callbacks.remove(self._on_gc)
        self.active = False

    def report(self, top: int = 25) -> None:
        print(f"\ntimed section: {self.wall:.3f} s wall")
        if self.batches:
            print(
                f"writer thread: {self.batches} transactions, {self.jobs} jobs "
                f"(mean {self.jobs / self.batches:.1f} per transaction), busy "
                f"{self.writer_busy:.3f} s = {100 * self.writer_busy / self.wall:.0f}% of wall "
                "(profiled, so inflated)"
            )
        if self.statements:
            parts = [
                f"{kind} {count:.0f}x {total * 1000:.1f} ms ({total / count * 1e6:.0f} us each)"
                for kind, (count, total) in sorted(
                    self.statements.items(), key=lambda item: -item[1][1]
                )
            ]
            print("writer SQL by statement (wall, not profiled): " + "; ".join(parts))
        if self.gc_runs:
            parts = [
                f"gen{gen} {count:.0f}x {total * 1000:.1f} ms"
                for gen, (count, total) in sorted(self.gc_runs.items())
            ]
            print("garbage collections in the timed section (all threads): " + "; ".join(parts))
        groups: dict[str, list[cProfile.Profile]] = {"event-loop thread": [self.main]}
        for (name, _), prof in sorted(self.threads.items()):
            group = "writer thread" if name.startswith("sqlite-writer") else "reader threads"
            groups.setdefault(group, []).append(prof)
        for group, profiles in groups.items():
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                stats = pstats.Stats(profiles[0], stream=out)
                for prof in profiles[1:]:
                    stats.add(prof)
                total = getattr(stats, "total_tt", 0.0)
                stats.strip_dirs().sort_stats(order).print_stats(top)
                text = out.getvalue()
                start = text.find("   ncalls")
                print(f"\n=== {group}: top {top} by {order} (profiled total {total:.3f} s) ===")
                print(text[start:].rstrip() if start >= 0 else text.rstrip())


# -- events -------------------------------------------------------------------------------


def _filler(base: dict[str, Any]) -> str:
    """Content that makes ``base``'s JSON about ``PAYLOAD_BYTES`` long."""
    return "x" * max(0, PAYLOAD_BYTES - len(orjson.dumps({**base, "content": ""})))


_SOURCE = {"created_by": "user", "agent_id": None, "run_id": None}
_CREATED_CONTENT = _filler(
    {
        "title": "Bench note 000000",
        "content_type": "markdown",
        "tags": ["bench", "lab"],
        "source": _SOURCE,
        "note_id": new_id(),
    }
)
_UPDATED_CONTENT = _filler(
    {"title": "Bench note 000000", "content_type": "markdown", "tags": ["bench", "lab"]}
)


def note_event(note_id: str, seq: int, command_id: str | None = None) -> NewEvent:
    """The event at ``seq`` of a note stream: ``note.created`` at 1, else ``note.updated``,
    with payloads shaped as :mod:`commands.notes` makes them (about 300 bytes of JSON)."""
    title = f"Bench note {seq:06d}"
    if seq == 1:
        event_type = "note.created"
        payload: dict[str, Any] = {
            "title": title,
            "content_type": "markdown",
            "content": _CREATED_CONTENT,
            "tags": ["bench", "lab"],
            "source": dict(_SOURCE),
            "note_id": note_id,
        }
    else:
        event_type = "note.updated"
        payload = {
            "title": title,
            "content_type": "markdown",
            "content": _UPDATED_CONTENT,
            "tags": ["bench", "lab"],
        }
    return NewEvent(
        event_type=event_type,
        tenant_id=TENANT,
        mode="lab",
        user_id=USER,
        surface_id=SURFACE,
        run_id="bench",
        step_id=event_type,
        source="ui",
        command_id=command_id or new_id(),
        payload=payload,
    )


def new_note() -> tuple[str, str]:
    note_id = new_id()
    return note_id, stream_id("notes", TENANT, "lab", note_id)


def expected(version: int) -> ExpectedVersion:
    return version if version else NO_STREAM


# -- the lab backend ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lab_backend(
    directory: Path, synchronous: str
) -> AsyncIterator[tuple[SqliteBackend, SqliteEventStore]]:
    connections = Connections(
        sqlite=SqliteConnection(path=str(directory / "lab.sqlite3"), synchronous=synchronous)
    )
    backend = await open_backend(connections, directory)
    try:
        await _check_pragmas(backend.db, synchronous)
        yield backend, await backend.event_store(SPINE)
    finally:
        await backend.aclose()


async def _check_pragmas(db: SqliteDatabase, synchronous: str) -> None:
    """The writer and a reader connection must run WAL at the synchronous asked for."""

    def pragmas(conn: Any) -> tuple[str, int]:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return str(mode).lower(), int(conn.execute("PRAGMA synchronous").fetchone()[0])

    seen = {await db.write(pragmas), await db.read(pragmas)}
    if seen != {("wal", SYNC_VALUES[synchronous])}:
        raise RuntimeError(f"lab backend runs {sorted(seen)}, expected WAL/{synchronous}")


async def _mean_body_bytes(backend: SqliteBackend) -> float:
    row = await backend.db.fetchone(f'SELECT avg(length(body)) FROM "{SPINE.name}"')
    return float(row[0] or 0)


# -- scenarios: our side -----------------------------------------------------------------------
# Each returns a dict of figures; ``probe`` marks the timed section.


async def ours_single(directory: Path, sync: str, n: int, probe: Probe) -> dict[str, float]:
    plan: list[tuple[str, list[NewEvent], ExpectedVersion]] = []
    sid = note_id = ""
    for i in range(n):
        version = i % STREAM_LENGTH
        if version == 0:
            note_id, sid = new_note()
        plan.append((sid, [note_event(note_id, version + 1)], expected(version)))
    async with lab_backend(directory, sync) as (backend, store):
        append = store.append
        probe.start()
        started = time.perf_counter()
        for args in plan:
            await append(*args)
        elapsed = time.perf_counter() - started
        probe.stop()
        body = await _mean_body_bytes(backend)
        commits = backend.db.commits
    return {"rate": n / elapsed, "body": body, "commits": commits}


async def ours_concurrent(
    directory: Path, sync: str, writers: int, per_writer: int, probe: Probe
) -> dict[str, float]:
    """Each writer appends ``per_writer`` single events to its own stream."""
    plans = []
    for _ in range(writers):
        note_id, sid = new_note()
        plans.append((sid, [note_event(note_id, v + 1) for v in range(per_writer)]))

    async with lab_backend(directory, sync) as (backend, store):

        async def writer(sid: str, events: list[NewEvent]) -> None:
            for version, event in enumerate(events):
                await store.append(sid, [event], expected(version))

        before = backend.db.commits
        probe.start()
        started = time.perf_counter()
        await asyncio.gather(*(writer(sid, events) for sid, events in plans))
        elapsed = time.perf_counter() - started
        probe.stop()
        commits = backend.db.commits - before
    total = writers * per_writer
    return {"rate": total / elapsed, "commits": commits, "per_commit": total / max(commits, 1)}


async def ours_shared(
    directory: Path,
    sync: str,
    writers: int,
    per_writer: int,
    n_streams: int,
    probe: Probe,
    *,
    exact: bool,
) -> dict[str, float]:
    """``writers`` tasks append single events to ``n_streams`` shared streams (writer ``w``
    to stream ``w % n_streams``), with ANY, or with exact versions and retries."""
    streams = [new_note() for _ in range(n_streams)]
    plans = [
        (
            streams[w % n_streams],
            [note_event(streams[w % n_streams][0], 2) for _ in range(per_writer)],
        )
        for w in range(writers)
    ]
    conflicts = 0

    async with lab_backend(directory, sync) as (backend, store):
        for note_id, sid in streams:  # each stream begins with its note.created (untimed)
            await store.append(sid, [note_event(note_id, 1)], NO_STREAM)

        async def writer(sid: str, events: list[NewEvent]) -> None:
            nonlocal conflicts
            known = 1
            for event in events:
                if not exact:
                    await store.append(sid, [event], ANY)
                    continue
                while True:
                    try:
                        result = await store.append(sid, [event], known)
                    except ConcurrencyError as exc:
                        conflicts += 1
                        known = exc.actual
                    else:
                        known = result.last_seq
                        break

        before = backend.db.commits
        probe.start()
        started = time.perf_counter()
        await asyncio.gather(*(writer(sid, events) for (_, sid), events in plans))
        elapsed = time.perf_counter() - started
        probe.stop()
        commits = backend.db.commits - before
        heads = 0
        for _, sid in streams:  # every stream is whole: seq 1..n, chained
            events = await store.read_stream(sid)
            if [e.seq for e in events] != list(range(1, len(events) + 1)):
                raise RuntimeError(f"{sid}: seqs are not contiguous")
            if verify_chain(events) != len(events):
                raise RuntimeError(f"{sid}: hash chain does not verify")
            heads += len(events)
    total = writers * per_writer
    if heads != total + n_streams:
        raise RuntimeError(f"expected {total + n_streams} events in the streams, found {heads}")
    return {
        "rate": total / elapsed,
        "commits": commits,
        "per_commit": total / max(commits, 1),
        "conflicts": conflicts,
    }


async def ours_batched(
    directory: Path, sync: str, n_batches: int, batch_size: int, probe: Probe
) -> dict[str, float]:
    plan = []
    for _ in range(n_batches):
        note_id, sid = new_note()
        command_id = new_id()
        plan.append((sid, [note_event(note_id, s + 1, command_id) for s in range(batch_size)]))
    async with lab_backend(directory, sync) as (_, store):
        append = store.append
        probe.start()
        started = time.perf_counter()
        for sid, events in plan:
            await append(sid, events, NO_STREAM)
        elapsed = time.perf_counter() - started
        probe.stop()
    return {"rate": n_batches * batch_size / elapsed}


async def ours_catchup(
    directory: Path, sync: str, n_notes: int, per_note: int, probe: Probe
) -> dict[str, float]:
    """Append ``n_notes`` x ``per_note`` note events in rounds (round r gives every note its
    event r, concurrently), then time ``catch_up`` from an empty checkpoint."""
    notes = [new_note() for _ in range(n_notes)]
    async with lab_backend(directory, sync) as (backend, store):
        setup_started = time.perf_counter()
        for version in range(per_note):
            events = [note_event(note_id, version + 1) for note_id, _ in notes]
            await asyncio.gather(
                *(
                    store.append(sid, [event], expected(version))
                    for (_, sid), event in zip(notes, events, strict=True)
                )
            )
        setup = time.perf_counter() - setup_started
        total = n_notes * per_note
        feed = await backend.feed(FEED, store)
        if sum(n or 0 for n in (await feed.lag({})).values()) != total:
            raise RuntimeError("set-up did not append every event")

        checkpoints = await backend.checkpoint_store(CHECKPOINTS)
        runner = ProjectorRunner(
            NotesProjector(),
            spine=store,
            views=await backend.view_store(NOTES_VIEW),
            parking=checkpoints,
        )
        loop = FeedLoop(runner, feed, checkpoints)
        if await checkpoints.get(runner.name):
            raise RuntimeError("the checkpoint is not empty")
        gc.freeze()  # as `engines serve` does once started: full GC passes skip set-up
        probe.start()
        started = time.perf_counter()
        read = await loop.catch_up()
        elapsed = time.perf_counter() - started
        probe.stop()
        row = await backend.db.fetchone(
            f'SELECT count(*), min(version), max(version) FROM "{NOTES_VIEW.name}"'
        )
        status = await projector_status(runner.name, feed, checkpoints, checkpoints)
    if read != total or tuple(row) != (n_notes, per_note, per_note) or status.lag:
        raise RuntimeError(f"catch-up incomplete: read {read} of {total}, view {tuple(row)}")
    if runner.gaps_repaired or status.parked:
        raise RuntimeError(f"catch-up repaired {runner.gaps_repaired} gaps; expected none")
    return {"rate": total / elapsed, "setup_rate": total / setup}


async def ours_read(directory: Path, sync: str, repeats: int, probe: Probe) -> dict[str, float]:
    note_id, sid = new_note()
    decider = NotesDecider()
    async with lab_backend(directory, sync) as (_, store):
        for start in range(0, READ_EVENTS, 100):
            command_id = new_id()
            batch = [note_event(note_id, s + 1, command_id) for s in range(start, start + 100)]
            await store.append(sid, batch, expected(start))
        warm = await store.read_stream(sid)
        if len(warm) != READ_EVENTS or fold(decider, warm).version != READ_EVENTS:
            raise RuntimeError(f"expected {READ_EVENTS} events, read {len(warm)}")
        reads: list[float] = []
        folds: list[float] = []
        gc.freeze()  # as `engines serve` does once started: full GC passes skip set-up
        probe.start()
        for _ in range(repeats):
            started = time.perf_counter()
            events = await store.read_stream(sid)
            read_done = time.perf_counter()
            fold(decider, events)
            reads.append(read_done - started)
            folds.append(time.perf_counter() - started)
        probe.stop()
    return {
        "p50": statistics.median(reads) * 1000,
        "p99": percentile(reads, 99) * 1000,
        "fold_p50": statistics.median(folds) * 1000,
        "fold_p99": percentile(folds, 99) * 1000,
    }


# -- scenarios: HTTP ------------------------------------------------------------------------


def _lab_settings(sync: str) -> Settings:
    settings, _ = load_settings(None)
    connections = settings.connections.model_copy(
        update={"sqlite": settings.connections.sqlite.model_copy(update={"synchronous": sync})}
    )
    return settings.model_copy(update={"connections": connections})


def _note_body(i: int) -> dict[str, Any]:
    return {
        "title": f"Bench note {i:06d}",
        "content_type": "markdown",
        "content": _UPDATED_CONTENT,
        "tags": ["bench", "lab"],
    }


def _latencies(timings: Sequence[float], statuses: Sequence[int]) -> dict[str, float]:
    ms = [t * 1000 for t in timings]
    return {
        "p50": statistics.median(ms),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "stalls": sum(1 for t in ms if t >= 100),
        "n": len(ms),
        "accepted": sum(1 for s in statuses if s == 202),
        "errors": sum(1 for s in statuses if s not in (201, 202)),
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_server(directory: Path, sync: str, warmup: int, n: int) -> dict[str, float]:
    """``engines serve`` in a subprocess; sequential POSTs from a keep-alive httpx client."""
    settings = _lab_settings(sync)
    routes = directory / "routes.yaml"
    routes.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    data_dir = directory / "data"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = directory / "server.log"
    command = [
        sys.executable,
        "-m",
        "engines.cli",
        "serve",
        "--routes",
        str(routes),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as server_log:
        proc = subprocess.Popen(command, cwd=directory, stdout=server_log, stderr=server_log)
    try:
        with httpx.Client(base_url=base, timeout=30.0) as client:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            token = mint_lab_token(
                data_dir,
                tenant_id=TENANT,
                user_id=USER,
                surfaces=[SURFACE],
                projects=[],
                ttl_seconds=3600,
                settings=settings.auth,
            )
            client.headers["Authorization"] = f"Bearer {token}"
            for i in range(warmup):
                response = client.post("/notes", json=_note_body(i))
                if response.status_code not in (201, 202):
                    raise RuntimeError(f"POST /notes: {response.status_code} {response.text}")
            health: list[float] = []
            for _ in range(n):
                started = time.perf_counter()
                client.get("/healthz")
                health.append(time.perf_counter() - started)
            timings: list[float] = []
            statuses: list[int] = []
            for i in range(n):
                body = _note_body(warmup + i)
                started = time.perf_counter()
                response = client.post("/notes", json=body)
                timings.append(time.perf_counter() - started)
                statuses.append(response.status_code)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result = _latencies(timings, statuses)
    result["health_p50"] = statistics.median(health) * 1000
    result["health_p99"] = percentile(health, 99) * 1000
    return result


async def http_inprocess(
    directory: Path, sync: str, warmup: int, n: int, probe: Probe
) -> dict[str, float]:
    """The ASGI app in this process (its projector task runs on the same loop)."""
    settings = _lab_settings(sync)
    data_dir = directory / "data"
    async with bootstrap(settings, data_dir) as runtime:
        token = mint_lab_token(
            data_dir,
            tenant_id=TENANT,
            user_id=USER,
            surfaces=[SURFACE],
            projects=[],
            ttl_seconds=3600,
            settings=settings.auth,
        )
        transport = httpx.ASGITransport(app=build_app(runtime))
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            for i in range(warmup):
                response = await client.post("/notes", json=_note_body(i))
                if response.status_code not in (201, 202):
                    raise RuntimeError(f"POST /notes: {response.status_code} {response.text}")
            timings: list[float] = []
            statuses: list[int] = []
            probe.start()
            for i in range(n):
                body = _note_body(warmup + i)
                started = time.perf_counter()
                response = await client.post("/notes", json=body)
                timings.append(time.perf_counter() - started)
                statuses.append(response.status_code)
            probe.stop()
    return _latencies(timings, statuses)


# -- figures: ours next to the baselines ----------------------------------------------------


@dataclass
class Bench:
    sizes: Sizes
    rows: list[Row] = field(default_factory=list)
    _library_single: dict[str, float] = field(default_factory=dict)
    _raw_single: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def tmp(self, label: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"bench-lab-{label}-") as name:
            yield Path(name)

    def library_single(self, sync: str) -> tuple[float, float]:
        """The library's single-save rate and raw sqlite's, measured once per setting in
        this run (next to the first figure that needs them) and shared by the figures
        compared with them."""
        if sync not in self._library_single:
            with self.tmp("baseline") as d:
                n = self.sizes.single
                self._library_single[sync] = baselines.eventsourcing_single_saves(d, n, sync)
                self._raw_single[sync] = baselines.raw_sqlite_single_inserts(d, n, sync)
        return self._library_single[sync], self._raw_single[sync]

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = row.ratio
        tail = "" if ratio is None else f"  (ratio {ratio:.2f})"
        log(f"  {row.figure} [{row.sync}]: {_fmt(row.ours, row.unit)}{tail}")

    def single(self, sync: str) -> None:
        with self.tmp("single") as d:
            ours = asyncio.run(ours_single(d, sync, self.sizes.single, Probe()))
        library, raw = self.library_single(sync)
        self.add(
            Row(
                figure="single appends, sequential",
                sync=sync,
                ours=ours["rate"],
                unit="ev/s",
                library=library,
                raw=raw,
                target=library,
                target_text="≥ 1x lib single",
                note=f"{self.sizes.single} appends, streams of {STREAM_LENGTH}; stored body "
                f"{ours['body']:.0f} B/event (lib: ~300 B state + topic)",
            )
        )

    def concurrent(self, sync: str) -> None:
        s = self.sizes
        with self.tmp("concurrent") as d:
            ours = asyncio.run(ours_concurrent(d, sync, s.writers, s.per_writer, Probe()))
        library, raw = self.library_single(sync)
        self.add(
            Row(
                figure=f"{s.writers} writers, own streams",
                sync=sync,
                ours=ours["rate"],
                unit="ev/s",
                library=library,
                raw=raw,
                target=10 * library,
                target_text="≥ 10x lib single",
                note=f"{s.writers}x{s.per_writer} appends, exact versions; {ours['commits']:.0f} "
                f"commits, {ours['per_commit']:.1f} appends/commit",
            )
        )

    def shared(self, sync: str, *, exact: bool = False) -> None:
        s = self.sizes
        per_writer = s.exact_per_writer if exact else s.shared_per_writer
        with self.tmp("shared") as d:
            ours = asyncio.run(
                ours_shared(d, sync, s.writers, per_writer, s.shared_streams, Probe(), exact=exact)
            )
        library, raw = self.library_single(sync)
        how = "exact+retry" if exact else "ANY"
        note = (
            f"{s.writers}x{per_writer} appends; {ours['commits']:.0f} commits, "
            f"{ours['per_commit']:.1f} appends/commit"
        )
        if exact:
            note += f"; {ours['conflicts']:.0f} conflicts retried (info only: see docstring)"
        self.add(
            Row(
                figure=f"{s.writers} writers, {s.shared_streams} streams, {how}",
                sync=sync,
                ours=ours["rate"],
                unit="ev/s",
                library=library,
                raw=raw,
                target=None if exact else 10 * library,
                target_text="-" if exact else "≥ 10x lib single",
                note=note,
            )
        )

    def shared_exact(self, sync: str) -> None:
        self.shared(sync, exact=True)

    def batched(self, sync: str) -> None:
        s = self.sizes
        with self.tmp("batched") as d:
            ours = asyncio.run(ours_batched(d, sync, s.batches, s.batch_size, Probe()))
            library = baselines.eventsourcing_batched_saves(d, s.batches, s.batch_size, sync)
            raw = baselines.raw_sqlite_batched_inserts(d, s.batches, s.batch_size, sync)
        self.add(
            Row(
                figure=f"{s.batch_size}-event appends",
                sync=sync,
                ours=ours["rate"],
                unit="ev/s",
                library=library,
                raw=raw,
                target=1.5 * library,
                target_text="≥ 1.5x lib batched",
                note=f"{s.batches} appends of {s.batch_size} events, one new stream each",
            )
        )

    def catchup(self, sync: str) -> None:
        s = self.sizes
        total = s.notes * s.events_per_note
        with self.tmp("catchup") as d:
            ours = asyncio.run(ours_catchup(d, sync, s.notes, s.events_per_note, Probe()))
            library = baselines.eventsourcing_projection_rate(d, total, sync)
        self.add(
            Row(
                figure="projector catch-up (notes)",
                sync=sync,
                ours=ours["rate"],
                unit="ev/s",
                library=library,
                raw=None,
                target=50_000,
                target_text="≥ 50,000 ev/s",
                note=f"{total:,} events over {s.notes:,} notes, interleaved; set-up appended "
                f"{ours['setup_rate']:,.0f} ev/s ({s.notes:,} concurrent appends per round)",
            )
        )

    def read(self, sync: str) -> None:
        s = self.sizes
        with self.tmp("read") as d:
            ours = asyncio.run(ours_read(d, sync, s.read_repeats, Probe()))
            library = baselines.eventsourcing_fold_1000(d)
        note = (
            f"{s.read_repeats} reads; read+fold p50 {ours['fold_p50']:.2f} ms, "
            f"p99 {ours['fold_p99']:.2f} ms; library = median of its fold of 1,000 events "
            "(run at FULL: reads don't depend on it)"
        )
        for q in ("p50", "p99"):
            self.add(
                Row(
                    figure=f"read 1,000-event stream {q}",
                    sync=sync,
                    ours=ours[q],
                    unit="ms",
                    library=library,
                    raw=None,
                    target=10.0,
                    target_text="< 10 ms",
                    note=note if q == "p99" else "",
                )
            )

    def http(self, sync: str) -> None:
        s = self.sizes
        with self.tmp("http") as d:
            ours = http_server(d, sync, s.http_warmup, s.http_requests)
        self._http_row(sync, ours, "uvicorn subprocess")
        self.rows[-1].note += (
            f"; baseline: GET /healthz p50 {ours['health_p50']:.2f} ms, "
            f"p99 {ours['health_p99']:.2f} ms"
        )

    def http_inprocess(self, sync: str) -> None:
        s = self.sizes
        with self.tmp("http-inproc") as d:
            ours = asyncio.run(http_inprocess(d, sync, s.http_warmup, s.http_requests, Probe()))
        self._http_row(sync, ours, "in-process ASGI", target=False)

    def _http_row(
        self,
        sync: str,
        ours: dict[str, float],
        how: str,
        *,
        target: bool = True,
    ) -> None:
        note = (
            f"{ours['n']:.0f} sequential POSTs after {self.sizes.http_warmup} warm-up; "
            f"p50 {ours['p50']:.2f}, p90 {ours['p90']:.2f}, max {ours['max']:.2f} ms; "
            f"{ours['stalls']:.0f} over 100 ms; {ours['accepted']:.0f} x 202, "
            f"{ours['errors']:.0f} errors"
        )
        self.add(
            Row(
                figure=f"HTTP POST→view p99 ({how})",
                sync=sync,
                ours=ours["p99"],
                unit="ms",
                library=None,
                raw=None,
                target=20.0 if target else None,
                target_text="< 20 ms" if target else "-",
                note=note,
            )
        )
        if ours["errors"]:
            raise RuntimeError(f"{ours['errors']:.0f} POSTs failed")


# -- profile mode ---------------------------------------------------------------------------


def profile(name: str, sync: str, sizes: Sizes) -> None:
    probe = ProfileProbe()
    s = sizes
    runs: dict[str, Callable[[Path], Any]] = {
        "single": lambda d: ours_single(d, sync, s.single, probe),
        "concurrent": lambda d: ours_concurrent(d, sync, s.writers, s.per_writer, probe),
        "shared": lambda d: ours_shared(
            d, sync, s.writers, s.shared_per_writer, s.shared_streams, probe, exact=False
        ),
        "shared-exact": lambda d: ours_shared(
            d, sync, s.writers, s.exact_per_writer, s.shared_streams, probe, exact=True
        ),
        "batched": lambda d: ours_batched(d, sync, s.batches, s.batch_size, probe),
        "catchup": lambda d: ours_catchup(d, sync, s.notes, s.events_per_note, probe),
        "read": lambda d: ours_read(d, sync, s.read_repeats, probe),
        "http": lambda d: http_inprocess(d, sync, s.http_warmup, s.http_requests, probe),
        "http-inprocess": lambda d: http_inprocess(d, sync, s.http_warmup, s.http_requests, probe),
    }
    print(f"profiling {name!r} at synchronous={sync} (our side only; cProfile overhead applies)")
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-lab-profile-{name}-") as tmp,
        probe.installed(),
    ):
        result = asyncio.run(runs[name](Path(tmp)))
    shown = ", ".join(f"{k}={v:,.2f}" for k, v in result.items())
    print(f"result under the profiler: {shown}")
    probe.report()


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    p.add_argument(
        "--synchronous",
        type=str.upper,
        choices=("FULL", "NORMAL", "BOTH"),
        default="BOTH",
        help="SQLite durability setting for ours and the baselines (default: both)",
    )
    p.add_argument(
        "--only",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(SCENARIOS),
        help=f"comma-separated scenarios (default: all): {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--profile",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"profile one scenario instead of the table: {', '.join(SCENARIOS)}",
    )
    args = p.parse_args(argv)
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    syncs = ["FULL", "NORMAL"] if args.synchronous == "BOTH" else [args.synchronous]
    if args.profile:
        profile(args.profile, syncs[0], sizes)
        return 0

    started = time.perf_counter()
    bench = Bench(sizes)
    with tempfile.TemporaryDirectory(prefix="bench-lab-default-") as d:
        default_sync = int(baselines.library_default_synchronous(d))
    names = {value: name for name, value in SYNC_VALUES.items()}
    for sync in syncs:
        log(f"synchronous={sync}")
        for name in SCENARIOS:
            if name in args.only:
                getattr(bench, name.replace("-", "_"))(sync)
    elapsed = time.perf_counter() - started

    print()
    print(
        f"Lab SQLite backend vs same-run baselines ({'quick' if args.quick else 'default'} "
        f"sizes; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; SQLite "
        f"{sqlite3.sqlite_version}; WAL)."
    )
    print(
        "library = eventsourcing 9.5.6 on SQLite at the same synchronous (stock default: "
        f"{names.get(default_sync, default_sync)}); raw sqlite = plain sqlite3, the floor."
    )
    print("ratio = ours/target for rates, target/ours for times: >= 1.00 means met.\n")
    print_table(bench.rows)
    judged = [r for r in bench.rows if r.met is not None]
    missed = [r for r in judged if not r.met]
    print(f"\nSummary: {len(judged) - len(missed)} of {len(judged)} targets met ", end="")
    print(f"in {elapsed:.0f} s.")
    for r in missed:
        print(f"  missed: {r.figure} [{r.sync}]: {_fmt(r.ours, r.unit)} vs {r.target_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
