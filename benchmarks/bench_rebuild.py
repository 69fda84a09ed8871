"""Rebuilding views from the spine: the lab at 1,000,000 events beside same-run baselines,
and the three local cloud servers.

    python benchmarks/bench_rebuild.py [--events N] [--cloud-events N]
                                       [--only lab|cloud] [--keep DIR]

The events: notes created, edited and now and then deleted, and budgets given a limit,
debited (a debit past the limit recorded as refused), credited and their limit raised,
over 5,000 streams (at 1,000,000 events) of five tenants, each stream's length drawn
from a skewed distribution. Each is what the domain's decider makes of a command
(:func:`check_steps` proves it on a sample of streams); they are built without
validation and appended straight to the spine (``EventStore.append``, exact expected
versions), 50 to an append, a thousand streams at once, so the SQLite writer groups
them into large commits: no HTTP. The lab spine is made once per run directory
(``--keep DIR`` keeps it, and a rerun of the same size reuses it, as it does the
library's copy); its making is timed apart.

lab        ``engines projections rebuild notes budgets --routes routes.yaml --data-dir
           data --format json`` (the packaged lab routes), a subprocess as an operator
           runs it, on a copy of the spine's data directory: wall time and peak RSS
           measured here (``os.wait4``, through :data:`LAUNCHER`), beside its summary.
catch-up   the live projectors (a ``FeedLoop`` each, as `engines projections run` runs
           them) from no checkpoint over a copy of the same spine until caught up, in a
           subprocess of their own: events/s and peak RSS.
library    the ``eventsourcing`` library (9.5.6) given the same events as its own
           aggregates' events, its ``Projection`` keeping the same two views in a
           ``SQLiteTrackingRecorder``, in a subprocess; only the processing is timed
           (``rebuild_library.py`` says exactly what runs).
cloud      the same rebuild on each local server (moto_server, the Firestore emulator,
           cosmosdb-server; started as the tests start them, on 127.0.0.1), spine and
           views on that server (``examples/routes/*.yaml`` pointed at it), the events
           loaded first and timed apart: ``--cloud-events`` (100,000), but no more than
           2,000 on moto_server and 10,000 on cosmosdb-server, whose loads grow with the
           square of what they hold (:data:`CLOUDS` says why).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from commands import budget, notes
from commands.envelope import Command
from commands.handler import Decider
from engines.devservers import (
    COSMOS_SERVER,
    FIRESTORE_SERVER,
    HOST,
    MOTO_SERVER,
    DevServer,
    ServerFailed,
    ServerMissing,
    free_port,
)
from engines.domains import DOMAINS
from engines.runtime import bootstrap, serving_gc
from engines.settings import Settings, load_settings
from spine.codec import trusted
from spine.errors import EnginesError
from spine.events import (
    NO_STREAM,
    EventEnvelope,
    Mode,
    NewEvent,
    Provenance,
    Scope,
    Source,
    new_id,
)
from spine.store import EventStore
from spine.streams import stream_id

CHECKOUT = Path(__file__).resolve().parents[1]
LAB_ROUTES = "engines/lab.yaml"
PROJECTORS = ("notes", "budgets")
"""The projectors rebuilt, and the live ones whose catch-up is the baseline."""

# -- the events ---------------------------------------------------------------------------

GENERATOR = 1
"""Bumped when the events made change, so a kept spine of an older kind is made again."""
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
USERS = 20
"""Users per tenant."""
SURFACES = ("chat", "ide", "web")
EVENTS_PER_STREAM = 200
"""On average: 1,000,000 events make 5,000 streams."""
BUDGET_SHARE = 0.2
"""Of the streams, budgets; the rest notes."""
CONCURRENT = 1_000
"""Streams appended to at once (each stream's appends one after another)."""
APPEND = 50
"""Events per append."""

WORDS = [
    "plan",
    "agent",
    "run",
    "step",
    "tool",
    "budget",
    "review",
    "draft",
    "spec",
    "model",
    "data",
    "eval",
    "prompt",
    "trace",
    "index",
    "cache",
    "vector",
    "memory",
    "policy",
    "safety",
    "metric",
    "release",
    "note",
    "task",
    "risk",
    "owner",
]


@dataclasses.dataclass(frozen=True)
class Stream:
    """One stream's commands to come: its domain, its owner and how many events."""

    domain: str
    """``notes`` or ``budget``."""
    entity_id: str
    scope: Scope
    events: int
    seed: int


def plan(events: int, mode: Mode = "lab", seed: int = 11) -> list[Stream]:
    """Streams whose lengths add up to ``events``, each at least 2: a note is created,
    a budget's limit set, then edits or movements. Lengths follow a Pareto draw (a few
    long streams, many short ones), as a busy tenant's are."""
    rng = random.Random(seed)
    count = max(2, events // EVENTS_PER_STREAM)
    if events < 2 * count:
        raise ValueError(f"{events} events are too few for {count} streams of 2 or more")
    weights = [min(50.0, rng.paretovariate(1.5)) for _ in range(count)]
    spare, total = events - 2 * count, sum(weights)
    lengths = [2 + math.floor(spare * w / total) for w in weights]
    for i in range(events - sum(lengths)):  # what rounding down left over
        lengths[i % count] += 1
    streams = []
    for i, length in enumerate(lengths):
        tenant = TENANTS[i % len(TENANTS)]
        is_budget = rng.random() < BUDGET_SHARE
        scope = Scope(
            tenant_id=tenant,
            mode=mode,
            user_id=f"user{rng.randrange(USERS):02d}",
            surface_id=rng.choice(SURFACES),
            project_id=None if is_budget else f"p{rng.randrange(5)}",
        )
        domain = "budget" if is_budget else "notes"
        entity = f"{'b' if is_budget else 'n'}{i:06d}"
        streams.append(Stream(domain, entity, scope, length, rng.randrange(2**32)))
    return streams


PARAGRAPHS = [
    " ".join(random.Random(i).choice(WORDS) for _ in range(20 + i % 70)) for i in range(512)
]
"""Note contents to draw from (drawing words one by one cost more than the appends)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One command of a stream and the event its decider answers it with."""

    event_type: str
    payload: dict[str, Any]
    """The event's payload, as the decider makes it."""
    source: Source = "ui"
    provenance: tuple[tuple[str, str], ...] = ()


def note_steps(stream: Stream) -> Iterator[Step]:
    """A note created, edited (a new title, content and tags each time, so every edit
    records an event) and, for one note in twenty, deleted at the end; every third
    command an agent's."""
    rng = random.Random(stream.seed)
    deleted = stream.events > 2 and rng.random() < 0.05
    agent = (("agent_id", "writer"), ("run_id", f"run-{rng.randrange(1000)}"))
    for seq in range(1, stream.events + 1):
        by_agent = seq % 3 == 0
        source: Source = "agent" if by_agent else "ui"
        provenance = agent if by_agent else ()
        if seq == stream.events and deleted:
            yield Step("note.deleted", {}, source, provenance)
            continue
        words = rng.sample(WORDS, 4)
        payload: dict[str, Any] = {
            "title": f"{' '.join(words).capitalize()} (rev {seq})",
            "content_type": "markdown",
            "content": f"# {words[0]}\n\n{rng.choice(PARAGRAPHS)}",
            "tags": sorted(words[: rng.randrange(1, 4)]),
        }
        if seq == 1:
            payload["note_id"] = stream.entity_id
            payload["source"] = {"created_by": "user", "agent_id": None, "run_id": None}
            yield Step("note.created", payload, source, provenance)
        else:
            yield Step("note.updated", payload, source, provenance)


def budget_steps(stream: Stream) -> Iterator[Step]:
    """A budget's limit set, then debits of 0.01 to 50.00 (past the limit refused, and
    recorded so), now and then a credit of part of what was spent, and once in a while
    a higher limit. The first limit runs out about two thirds of the way."""
    rng = random.Random(stream.seed)
    average = 2_500  # minor units per debit
    limit = max(1_000, stream.events * average * 2 // 3)
    spent = 0
    yield Step(
        budget.LIMIT_SET,
        {"limit_minor": limit, "scale": 2, "currency": "EUR", "reason": None},
    )
    for _ in range(stream.events - 1):
        provenance = (("run_id", f"run-{rng.randrange(1000)}"), ("step_id", "llm"))
        roll = rng.random()
        if roll < 0.01:
            limit += rng.randrange(1, 100) * 1_000
            payload = {"limit_minor": limit, "scale": 2, "currency": "EUR", "reason": "top-up"}
            event_type = budget.LIMIT_SET
        elif roll < 0.06 and spent > 0:
            amount = rng.randrange(1, spent + 1)
            spent -= amount
            payload = {"amount_minor": amount, "scale": 2, "reason": "refund"}
            event_type = budget.CREDITED
        else:
            amount = rng.randrange(1, 2 * average)
            payload = {"amount_minor": amount, "scale": 2, "reason": f"{rng.choice(WORDS)} call"}
            if spent + amount <= limit:
                spent += amount
                event_type = budget.DEBITED
            else:
                payload |= {"limit_minor": limit, "spent_minor": spent}
                event_type = budget.DEBIT_REFUSED
        yield Step(event_type, payload, "agent", provenance)


def steps(stream: Stream) -> Iterator[Step]:
    return note_steps(stream) if stream.domain == "notes" else budget_steps(stream)


def sid_of(stream: Stream) -> str:
    return stream_id(stream.domain, stream.scope.tenant_id, stream.scope.mode, stream.entity_id)


NO_PROVENANCE = dict.fromkeys(Provenance.model_fields)


def new_events(stream: Stream, command_ids: Iterator[str]) -> Iterator[list[NewEvent]]:
    """The stream's events in appends of up to :data:`APPEND` (each append's events
    share its command id, as the spine asks), built without validation: what
    :func:`check_steps` proves its domain's decider would make of each command."""
    scope = stream.scope.__dict__
    family = "budget" if stream.domain == "budget" else "domain"
    chunk: list[NewEvent] = []
    command_id = next(command_ids)
    for step in steps(stream):
        values = {
            "event_id": new_id(),
            "event_type": step.event_type,
            "family": family,
            "schema_version": 1,
            **scope,
            **NO_PROVENANCE,
            **dict(step.provenance),
            "occurred_at": None,
            "source": step.source,
            "command_id": command_id,
            "payload": step.payload,
        }
        chunk.append(trusted(NewEvent, values))
        if len(chunk) == APPEND:
            yield chunk
            chunk, command_id = [], next(command_ids)
    if chunk:
        yield chunk


def command_of(stream: Stream, step: Step, state: Any) -> Command[Any]:
    """The command that the decider answers with ``step``'s event."""
    p, e = step.payload, stream.entity_id
    payload: Any
    if step.event_type in ("note.created", "note.updated"):
        fields = {k: p[k] for k in ("title", "content", "tags")}
        note = notes.CreateNote if step.event_type == "note.created" else notes.UpdateNote
        payload = note.model_validate({**fields, "note_id": e})
    elif step.event_type == "note.deleted":
        payload = notes.DeleteNote(note_id=e)
    elif step.event_type == budget.LIMIT_SET:
        currency = None if state.exists else p["currency"]
        payload = budget.SetLimit(
            budget_id=e, amount_minor=p["limit_minor"], currency=currency, reason=p["reason"]
        )
    else:
        movement = budget.CreditBudget if step.event_type == budget.CREDITED else budget.DebitBudget
        payload = movement(budget_id=e, amount_minor=p["amount_minor"], reason=p["reason"])
    return Command[Any](
        scope=stream.scope,
        source=step.source,
        provenance=Provenance(**dict(step.provenance)),
        payload=payload,
    )


def check_steps(streams: Sequence[Stream]) -> None:
    """Each of ``streams``' events is what its domain's decider decides, one command at a
    time on the state folded so far: raise if one differs (type, payload, scope,
    provenance, source, family)."""
    ignored = {"event_id", "command_id"}
    for stream in streams:
        decider: Decider[Any, Any] = (
            notes.NotesDecider() if stream.domain == "notes" else budget.BudgetDecider()
        )
        sid = sid_of(stream)
        state = decider.initial()
        made = [e for chunk in new_events(stream, itertools.repeat("c")) for e in chunk]
        for seq, (step, ours) in enumerate(zip(steps(stream), made, strict=True), 1):
            (event,) = decider.decide(state, command_of(stream, step, state))
            theirs = {k: v for k, v in event.__dict__.items() if k not in ignored}
            if theirs != {k: v for k, v in ours.__dict__.items() if k not in ignored}:
                raise RuntimeError(f"{sid} seq {seq}: the decider makes {theirs}, not {ours}")
            sealed = {"stream_id": sid, "seq": seq, "recorded_at": NOW, "prev_hash": "", "hash": ""}
            state = decider.evolve(state, trusted(EventEnvelope, {**event.__dict__, **sealed}))


NOW = datetime.now(UTC)


def lab_settings(synchronous: str = "FULL") -> Settings:
    """The packaged lab routes (what ``--routes engines/lab.yaml`` reads) at ``synchronous``."""
    settings, _ = load_settings(None)
    sqlite = settings.connections.sqlite.model_copy(update={"synchronous": synchronous})
    connections = settings.connections.model_copy(update={"sqlite": sqlite})
    return settings.model_copy(update={"connections": connections})


async def append_streams(
    store: EventStore, streams: Sequence[Stream], *, concurrent: int = CONCURRENT
) -> int:
    """Every stream's events appended (exact expected versions), ``concurrent`` streams
    at a time; the events appended. Progress on stderr every 10 s."""
    gate = asyncio.Semaphore(concurrent)
    appended = 0
    started = last = time.perf_counter()
    total = sum(s.events for s in streams)
    ids = (new_id() for _ in itertools.count())

    async def one(stream: Stream) -> None:
        nonlocal appended, last
        sid = sid_of(stream)
        async with gate:
            version = 0
            for events in new_events(stream, ids):
                await store.append(sid, events, version or NO_STREAM)
                version += len(events)
                appended += len(events)
                if time.perf_counter() - last > 10:
                    last = time.perf_counter()
                    rate = appended / (last - started)
                    say(f"  {appended:,} of {total:,} events appended, {rate:,.0f}/s")

    await asyncio.gather(*(one(s) for s in streams))
    return appended


DOMAIN_NAMES = ("notes", "budget")


async def load(
    settings: Settings, data_dir: Path, events: int, mode: Mode, concurrent: int
) -> float:
    """``events`` events (:func:`plan`) onto the spine that ``settings`` routes, its
    stores made as `engines serve` makes them (the lab: the database and the signing
    secret in ``data_dir``); the seconds the appends took."""
    streams = plan(events, mode)
    check_steps(streams[:20])
    domains = [d for d in DOMAINS if d.name in DOMAIN_NAMES]
    async with bootstrap(settings, data_dir, run_projectors=False, domains=domains) as runtime:
        started = time.perf_counter()
        written = await append_streams(runtime.spine, streams, concurrent=concurrent)
        seconds = time.perf_counter() - started
    if written != events:
        raise RuntimeError(f"appended {written} events, not {events}")
    return seconds


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- measuring a subprocess ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Measured:
    """A subprocess's exit code, output, wall time and peak RSS (``os.wait4``)."""

    code: int
    out: str
    err: str
    seconds: float
    peak_rss_mb: float

    def json(self) -> list[Any]:
        """Every JSON value on stdout, in order (raises if it failed)."""
        if self.code:
            raise RuntimeError(f"exit {self.code}:\n{self.err[-3000:]}")
        decoder, values, at = json.JSONDecoder(), [], 0
        text = self.out.strip()
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            values.append(value)
            while at < len(text) and text[at].isspace():
                at += 1
        return values


LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""
"""Starts a command and reports its exit code and peak RSS. A child counts the memory of
the process it was forked from as its own until it execs (Linux), so a command started
from this process, a hundred MB or more, would read at least that: it is started from
this small one instead (``python -S``, about 10 MB)."""


def measure(argv: Sequence[str], cwd: Path) -> Measured:
    """Run ``argv`` in ``cwd`` (this checkout importable), output to files (no pipe to
    fill); its wall time and its peak RSS, as the kernel counted them (``os.wait4``)."""
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        result = Path(tmp) / "result"
        started = time.perf_counter()
        launcher = [sys.executable, "-S", "-c", LAUNCHER, str(result), *argv]
        subprocess.run(launcher, cwd=cwd, stdout=out, stderr=err, env=env, check=True)
        seconds = time.perf_counter() - started
        code, rss = map(int, result.read_text().split())
        out.seek(0)
        err.seek(0)
        return Measured(code, out.read().decode(), err.read().decode(), seconds, rss / 1024)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


ENGINES = ("-m", "engines.cli")


# -- the figures --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    figure: str
    events: int | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None
    note: str = ""

    @property
    def rate(self) -> float | None:
        if self.events is None or not self.seconds:
            return None
        return self.events / self.seconds


def rebuild_rows(where: str, m: Measured) -> list[Row]:
    """The command as a whole (its wall time and peak RSS, measured here), then each
    view as its summary says: events scanned from the spine, and the seconds of its
    build (the scan, then the drain of what the feed delivered meanwhile; on a cloud
    store that is every outbox marker still pending, applied again as no-ops)."""
    summaries = m.json()
    rows = []
    for s in summaries:
        if s["verified"] is not True or s["parked"]:
            raise RuntimeError(f"{where}: the rebuild of {s['kind']} did not verify: {s}")
        drained = f", {s['drained']:,} drained from the feed" if s["drained"] else ""
        rows.append(
            Row(
                f"  {s['kind']} built ({where})",
                s["events"] - s["drained"],
                s["seconds"],
                note=f"{s['streams']:,} streams, {s['records']:,} records{drained}",
            )
        )
    built = sum(s["seconds"] for s in summaries)
    return [
        Row(
            f"rebuild, {where}: the command",
            sum(s["events"] - s["drained"] for s in summaries),
            m.seconds,
            m.peak_rss_mb,
            note=f"wall time, start-up and verification included: build {built:.1f} s, the"
            f" rest {m.seconds - built:.1f} s; its summary's peak RSS"
            f" {max(s['peak_rss_mb'] for s in summaries):.0f} MB; verified",
        ),
        *rows,
    ]


# -- the lab ------------------------------------------------------------------------------


def pristine(run: Path, events: int) -> tuple[Path, Row]:
    """The lab data directory holding ``events`` events, made once per run directory."""
    made = run / f"lab-{events}-g{GENERATOR}"
    stamp = made / "made.json"
    if stamp.exists():
        seconds = json.loads(stamp.read_text())["seconds"]
        return made, Row("spine made (lab; kept from an earlier run)", events, seconds)
    if made.exists():
        shutil.rmtree(made)
    say(f"making the lab spine: {events:,} events ...")
    made.mkdir(parents=True)
    seconds = asyncio.run(load(lab_settings("NORMAL"), made, events, "lab", CONCURRENT))
    stamp.write_text(json.dumps({"events": events, "seconds": seconds}))
    return made, Row("spine made (lab, synchronous NORMAL)", events, seconds)


def copy_of(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("made.json"))
    return target


def lab_rebuild(run: Path, data: Path) -> tuple[list[Row], str]:
    shutil.copyfile(CHECKOUT / LAB_ROUTES, run / "routes.yaml")
    copy_of(data, run / "data")
    argv = [*ENGINES, "projections", "rebuild", *PROJECTORS]
    argv += ["--routes", "routes.yaml", "--data-dir", "data", "--format", "json"]
    say("rebuild (lab) ...")
    m = measure(python(*argv), run)
    shutil.rmtree(run / "data")
    return rebuild_rows("lab", m), "engines " + " ".join(argv[2:])


async def _catch_up(data_dir: Path) -> dict[str, Any]:
    """In the child: the live projectors from no checkpoint until caught up."""
    domains = [d for d in DOMAINS if d.name in DOMAIN_NAMES]
    async with bootstrap(
        lab_settings("FULL"), data_dir, run_projectors=False, domains=domains
    ) as runtime:
        with serving_gc():  # as `engines serve` and `engines projections run` run
            started = time.perf_counter()
            read = await runtime.catch_up()
            seconds = time.perf_counter() - started
        statuses = [await runtime.status(name) for name in PROJECTORS]
    if any(s.lag or s.parked for s in statuses):
        raise RuntimeError(f"not caught up: {statuses}")
    return {"read": read, "seconds": seconds}


def lab_catch_up(run: Path, data: Path, events: int) -> Row:
    say("live projectors' catch-up (lab) ...")
    copy_of(data, run / "catchup")
    m = measure(python(__file__, "--catch-up", str(run / "catchup")), run)
    (result,) = m.json()
    shutil.rmtree(run / "catchup")
    return Row(
        "live catch-up, lab (FeedLoop per projector)",
        events,
        result["seconds"],
        m.peak_rss_mb,
        note=f"notes then budgets from no checkpoint, synchronous FULL; {m.seconds:.1f} s with"
        " start-up",
    )


def library(run: Path, events: int) -> list[Row]:
    script = str(CHECKOUT / "benchmarks" / "rebuild_library.py")
    db = run / f"library-{events}-g{GENERATOR}.db"
    stamp = db.with_suffix(".json")
    rows = []
    if not stamp.exists():
        for leftover in run.glob(db.name + "*"):
            leftover.unlink()
        say(f"the eventsourcing library: storing {events:,} events ...")
        (stored,) = measure(python(script, "load", str(db), str(events)), run).json()
        stamp.write_text(json.dumps(stored))
    stored = json.loads(stamp.read_text())
    rows.append(Row("eventsourcing: events stored (untimed)", events, stored["seconds"]))
    view = run / "library-view.db"
    for leftover in run.glob(view.name + "*"):
        leftover.unlink()
    say("the eventsourcing library: processing ...")
    m = measure(python(script, "process", str(db), str(view)), run)
    (result,) = m.json()
    for leftover in run.glob(view.name + "*"):
        leftover.unlink()
    rows.append(
        Row(
            "eventsourcing: Projection into its SQLite view",
            result["events"],
            result["seconds"],
            m.peak_rss_mb,
            note=f"one transaction per event, synchronous NORMAL; {result['notes']:,} notes,"
            f" {result['budgets']:,} budgets, {result['ledger']:,} ledger lines",
        )
    )
    return rows


# -- the local cloud servers --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cloud:
    name: str
    """The backend's name, and its example routes file's (``examples/routes/``)."""
    server: DevServer
    concurrent: int
    """Streams appended to at once while loading."""
    max_events: int | None = None
    why: str = ""
    """Why no more than ``max_events`` are loaded."""

    def connection(self, port: int, run_id: str) -> dict[str, Any]:
        """The example file's connection, pointed at the server on ``port`` and at names
        of this run's own."""
        url = self.server.url(HOST, port)
        if self.name == "dynamodb":
            return {"endpoint_url": url, "table_prefix": f"rb{run_id}_"}
        if self.name == "cosmos":
            return {"endpoint": url, "database": f"rb{run_id}"}
        return {"emulator_host": f"{HOST}:{port}", "project": f"rb{run_id}"}


CLOUDS = (
    Cloud(
        "dynamodb",
        MOTO_SERVER,
        1,  # moto_server serves one request at a time: a queue only waits
        2_000,
        "moto copies the table before each transaction, so an append takes time in"
        " proportion to what is stored (3 s for 50 events onto 800 in one probe) and a"
        " load grows with the square of its size: 100,000 would take days",
    ),
    Cloud("firestore", FIRESTORE_SERVER, 32),
    Cloud(
        "cosmos",
        COSMOS_SERVER,
        8,
        10_000,
        "cosmosdb-server reads a whole container for each query (an append reads its"
        " stream's head), so appends slowed from 718/s to about 100/s by 12,000 stored, and"
        " 32 streams at once timed out near 13,000",
    ),
)


def cloud_routes(run: Path, cloud: Cloud, port: int) -> tuple[Path, Settings]:
    """``examples/routes/{name}.yaml`` on the server at ``port``, written into ``run``."""
    data = yaml.safe_load((CHECKOUT / "examples" / "routes" / f"{cloud.name}.yaml").read_text())
    data["connections"][cloud.name] |= cloud.connection(port, new_id()[-8:].lower())
    secret = CHECKOUT / data["auth"]["hs256_secret_file"]
    data["auth"]["hs256_secret_file"] = str(secret)
    path = run / f"{cloud.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, Settings.model_validate(data)


def clouds(run: Path, events: int) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    commands: list[str] = []
    for cloud in CLOUDS:
        port = free_port()
        try:
            server = cloud.server.start(HOST, port)
        except (ServerMissing, ServerFailed) as exc:
            rows.append(Row(f"rebuild, {cloud.name}: not run", note=str(exc)))
            continue
        try:
            routes, settings = cloud_routes(run, cloud, port)
            n = min(events, cloud.max_events or events)
            say(f"{cloud.name}: loading {n:,} events ...")
            seconds = asyncio.run(load(settings, run, n, "saas", cloud.concurrent))
            fewer = f"; {n:,}, not {events:,}: {cloud.why}" if n < events else ""
            rows += tell(
                Row(
                    f"spine loaded, {cloud.name} ({cloud.server.program})",
                    n,
                    seconds,
                    note=f"appends of up to {APPEND} events, {cloud.concurrent} stream(s) at"
                    f" once{fewer}",
                )
            )
            argv = [*ENGINES, "projections", "rebuild", *PROJECTORS]
            argv += ["--routes", routes.name, "--format", "json"]
            say(f"{cloud.name}: rebuild ...")
            rows += tell(*rebuild_rows(cloud.name, measure(python(*argv), run)))
            commands.append("engines " + " ".join(argv[2:]))
        except (EnginesError, RuntimeError) as exc:  # the other servers' figures still count
            rows += tell(Row(f"rebuild, {cloud.name}: failed", note=str(exc)[-500:]))
        finally:
            server.stop()
    return rows, commands


def tell(*new: Row) -> list[Row]:
    """``new``, said on stderr as they come (a long run's figures are not all lost with
    its end)."""
    for r in new:
        rate = "" if r.rate is None else f", {r.rate:,.0f} events/s"
        rss = "" if r.peak_rss_mb is None else f", peak RSS {r.peak_rss_mb:,.0f} MB"
        say(f"  {r.figure.strip()}: {r.seconds or 0:,.1f} s{rate}{rss}")
    return list(new)


def report(rows: Sequence[Row], commands: Sequence[str], seconds: float, loads: str) -> None:
    print(
        f"\nRebuild from the spine beside same-run baselines ({os.cpu_count()} CPUs, shared;"
        f" load average {loads}; Python {sys.version.split()[0]}; SQLite"
        f" {sqlite3.sqlite_version}; eventsourcing {importlib.metadata.version('eventsourcing')})\n"
    )
    line = "{:<48} {:>10} {:>9} {:>10} {:>9}"
    head = line.format("figure", "events", "seconds", "events/s", "peak RSS")
    print(f"{head}\n{'-' * len(head)}")
    for r in rows:
        print(
            line.format(
                r.figure,
                "-" if r.events is None else f"{r.events:,}",
                "-" if r.seconds is None else f"{r.seconds:,.1f}",
                "-" if r.rate is None else f"{r.rate:,.0f}",
                "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:,.0f} MB",
            )
        )
        if r.note:
            print(f"      {r.note}")
    by_name = {r.figure: r for r in rows}
    lab = by_name.get("rebuild, lab: the command")
    if lab is not None and lab.seconds is not None and lab.peak_rss_mb is not None:
        print(
            f"\nTarget, 1,000,000 events on the lab in under 60 s at under 300 MB peak RSS:"
            f" {lab.events:,} events in {lab.seconds:.1f} s"
            f" ({'met' if lab.seconds < 60 else 'NOT met'}), {lab.peak_rss_mb:.0f} MB"
            f" ({'met' if lab.peak_rss_mb < 300 else 'NOT met'})"
        )
        for name in (
            "live catch-up, lab (FeedLoop per projector)",
            "eventsourcing: Projection into its SQLite view",
        ):
            base = by_name.get(name)
            built = [r for r in rows if r.figure.endswith(" built (lab)") and r.seconds]
            build = sum(r.events or 0 for r in built) / sum(r.seconds or 0 for r in built)
            if base is not None and base.rate and lab.rate:
                print(
                    f"  over {name}: the command {lab.rate / base.rate:.2f}x,"
                    f" its build alone {build / base.rate:.2f}x"
                )
    print("\nCommands measured (in the run directory):")
    for command in commands:
        print(f"  {command}")
    print(f"\n({seconds:.0f} s in all)")


# -- the run ------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="lab events (1,000,000)")
    p.add_argument(
        "--cloud-events", type=int, default=100_000, help="events per cloud server (100,000)"
    )
    p.add_argument("--only", choices=("lab", "cloud"))
    p.add_argument(
        "--keep", type=Path, metavar="DIR", help="run here and keep it (the spine is reused)"
    )
    p.add_argument("--catch-up", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.catch_up:
        print(json.dumps(asyncio.run(_catch_up(args.catch_up))))
        return 0
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    rows: list[Row] = []
    commands: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        run = (args.keep or Path(tmp)).resolve()
        run.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "lab"):
            data, made = pristine(run, args.events)
            rows += tell(made)
            rebuilt, command = lab_rebuild(run, data)
            rows += tell(*rebuilt)
            commands.append(command)
            rows += tell(lab_catch_up(run, data, args.events))
            rows += tell(*library(run, args.events))
        if args.only in (None, "cloud"):
            cloud_rows, cloud_commands = clouds(run, args.cloud_events)
            rows += cloud_rows
            commands += cloud_commands
        loads = f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        report(rows, commands, time.perf_counter() - started, loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
