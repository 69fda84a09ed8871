"""Rebuilding views from the spine: the lab at 1,000,000 events beside same-run baselines,
and the three local cloud servers at 100,000.

    python benchmarks/bench_rebuild.py [--events N] [--cloud-events N]
                                       [--only lab|cloud] [--keep DIR]

The events: notes created, edited and now and then deleted, and budgets given a limit,
debited (a debit past the limit recorded as refused), credited and their limit raised,
over a few thousand streams of five tenants, each stream's length drawn from a skewed
distribution. They are made by the domains' own command handlers (the in-process
command bus of :func:`engines.runtime.bootstrap`, as `engines serve` dispatches a
request), one command per event, thousands of streams at once, so the SQLite writer
groups them into large commits: no HTTP. The spine is made once per run directory
(``--keep DIR`` keeps it, and a rerun with the same size reuses it); its making is
timed apart.

lab        ``engines projections rebuild notes budgets --routes engines/lab.yaml
           --data-dir DIR --format json``, a subprocess as an operator runs it, on a copy
           of the spine's data directory: wall time and peak RSS measured here
           (``os.wait4``), beside what its JSON summary says.
catch-up   the live projectors (a ``FeedLoop`` each, as `engines projections run` runs
           them) from no checkpoint over a copy of the same spine until caught up, in a
           subprocess of their own: events/s and peak RSS.
library    the ``eventsourcing`` library (9.5.6) given the same events as its own
           aggregates' events (a ``Note`` and a ``Budget`` aggregate, one per stream),
           stored in its SQLite application recorder, then its ``ProjectionRunner``
           with a ``Projection`` whose view (a ``SQLiteTrackingRecorder``) keeps the
           same two views, in a subprocess: only the processing is timed.
cloud      the same rebuild on each local server (moto_server, the Firestore emulator,
           cosmosdb-server; started as the tests start them, on 127.0.0.1), spine and
           views on that server, 100,000 events loaded first (the load timed apart).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commands import budget, notes
from commands.envelope import Command
from commands.handler import Decider
from engines.domains import DOMAINS
from engines.runtime import bootstrap
from engines.settings import Settings, load_settings
from spine.codec import trusted
from spine.events import (
    NO_STREAM,
    EventEnvelope,
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


def plan(events: int, seed: int = 11) -> list[Stream]:
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
            mode="lab",
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


async def append_streams(store: EventStore, streams: Sequence[Stream], *, report: bool) -> int:
    """Every stream's events appended (exact expected versions), :data:`CONCURRENT`
    streams at a time; the events appended."""
    gate = asyncio.Semaphore(CONCURRENT)
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
                if report and time.perf_counter() - last > 5:
                    last = time.perf_counter()
                    rate = appended / (last - started)
                    print(f"  {appended:,} of {total:,} events, {rate:,.0f}/s", file=sys.stderr)

    await asyncio.gather(*(one(s) for s in streams))
    return appended


def make_lab_spine(data_dir: Path, events: int) -> float:
    """``events`` events into a new lab data directory (made as `engines serve` makes
    one: the database and the signing secret); seconds taken."""
    streams = plan(events)
    check_steps(streams[:50])
    data_dir.mkdir(parents=True)
    started = time.perf_counter()

    async def run() -> int:
        domains = [d for d in DOMAINS if d.name in ("notes", "budget")]
        async with bootstrap(
            lab_settings("NORMAL"), data_dir, run_projectors=False, domains=domains
        ) as runtime:
            return await append_streams(runtime.spine, streams, report=True)

    written = asyncio.run(run())
    if written != events:
        raise RuntimeError(f"wrote {written} events, not {events}")
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--keep", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        run_dir = args.keep or Path(tmp)
        d = run_dir / "gen"
        if d.exists():
            shutil.rmtree(d)
        print(make_lab_spine(d, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
