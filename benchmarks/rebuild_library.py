"""The ``eventsourcing`` library (9.5.6) beside `bench_rebuild.py`: the same events as its
own aggregates' events, and its way of keeping a materialised view of them.

    python benchmarks/rebuild_library.py load DB EVENTS   # untimed: the events, stored
    python benchmarks/rebuild_library.py process DB VIEW  # timed: the view, from nothing

``load`` makes the events `bench_rebuild.py` makes (:func:`bench_rebuild.steps`, the
same streams, lengths, payloads, identities, interleaved as they are on our spine) as
events of a ``Note`` or a ``Budget`` aggregate (one per stream), saved with
``app.save`` in its SQLite application recorder, up to 20 events of 100 aggregates at a
time.

``process`` is the library's materialised view (``eventsourcing.projection``): a
``Projection`` whose ``process_event`` is a ``singledispatchmethod`` per event class,
writing through a view that is a ``SQLiteTrackingRecorder`` (its own database file),
each event in one transaction with its ``Tracking`` record, as the library's
``ProjectionRunner`` has it. That runner needs a recorder with subscriptions, which the
SQLite one does not offer (``NotImplementedError``), so the events are fed as its
subscription feeds them: notifications selected in pages of 500
(``select_notifications``), each mapped back to a domain event (``to_domain_event``)
and passed with its ``Tracking`` to ``process_event``. The views are ours: a note
record per note (its fields, version, times, deleted), and per budget a totals record
and one ledger line per event. Both databases run at ``PRAGMA synchronous=NORMAL``
(:class:`baselines._SyncFactory`): at the library's default (FULL in WAL mode) each
event's commit waits for an fsync, about 300 a second on this machine. Only the
processing is timed (from the first page read to the last commit). Prints JSON.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import baselines  # benchmarks/ is on sys.path: run as `python benchmarks/...`
import bench_rebuild
import orjson
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteTrackingRecorder
from eventsourcing.utils import get_topic

PAGE = 500
SAVE = 100
"""Aggregates per ``app.save``."""


class Note(Aggregate):
    class Created(Aggregate.Created):
        scope: dict[str, Any]
        title: str
        content_type: str
        content: str
        tags: list[str]
        source: dict[str, Any]

    class Updated(Aggregate.Event):
        title: str
        content_type: str
        content: str
        tags: list[str]

    class Deleted(Aggregate.Event):
        pass

    @event(Created)
    def __init__(
        self,
        scope: dict[str, Any],
        title: str,
        content_type: str,
        content: str,
        tags: list[str],
        source: dict[str, Any],
    ) -> None:
        self.scope = scope
        self.title = title

    @event(Updated)
    def update(self, title: str, content_type: str, content: str, tags: list[str]) -> None:
        self.title = title

    @event(Deleted)
    def delete(self) -> None:
        self.deleted = True


class Budget(Aggregate):
    class Created(Aggregate.Created):
        scope: dict[str, Any]
        limit_minor: int
        scale: int
        currency: str
        reason: str | None

    class LimitSet(Aggregate.Event):
        limit_minor: int
        scale: int
        currency: str
        reason: str | None

    class Debited(Aggregate.Event):
        amount_minor: int
        scale: int
        reason: str

    class DebitRefused(Debited):
        limit_minor: int
        spent_minor: int

    class Credited(Debited):
        pass

    @event(Created)
    def __init__(
        self, scope: dict[str, Any], limit_minor: int, scale: int, currency: str, reason: Any
    ) -> None:
        self.scope = scope
        self.limit_minor = limit_minor

    @event(LimitSet)
    def set_limit(self, limit_minor: int, scale: int, currency: str, reason: Any) -> None:
        self.limit_minor = limit_minor

    @event(Debited)
    def debit(self, amount_minor: int, scale: int, reason: str) -> None:
        pass

    @event(DebitRefused)
    def refuse_debit(
        self, amount_minor: int, scale: int, reason: str, limit_minor: int, spent_minor: int
    ) -> None:
        pass

    @event(Credited)
    def credit(self, amount_minor: int, scale: int, reason: str) -> None:
        pass


class Spine(Application[uuid.UUID]):
    """The application whose events are viewed (its name names its notification log)."""


def env(db: Path) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": get_topic(baselines._SyncFactory),
        "SQLITE_DBNAME": str(db),
        "SQLITE_SYNCHRONOUS": "NORMAL",
    }


def load(db: Path, events: int) -> dict[str, float]:
    """The events of ``bench_rebuild.plan(events)`` stored; rounds of up to
    ``bench_rebuild.APPEND`` events of each stream, saved ``SAVE`` aggregates at a time."""
    app = Spine(env=env(db))
    streams = bench_rebuild.plan(events)
    live = {i: (bench_rebuild.steps(s), s) for i, s in enumerate(streams)}
    aggregates: dict[int, Any] = {}
    started, stored = time.perf_counter(), 0
    while live:
        touched = []
        for i, (steps, stream) in list(live.items()):
            taken = 0
            for _, step in zip(range(bench_rebuild.APPEND), steps, strict=False):
                record(aggregates, i, stream, step)
                taken += 1
            stored += taken
            if taken:
                touched.append(aggregates[i])
            else:
                del live[i]
            if len(touched) == SAVE:
                app.save(*touched)
                touched = []
        if touched:
            app.save(*touched)
    app.close()
    if stored != events:
        raise RuntimeError(f"stored {stored} events, not {events}")
    return {"events": stored, "seconds": time.perf_counter() - started}


def record(aggregates: dict[int, Any], i: int, stream: bench_rebuild.Stream, step: Any) -> None:
    """``step`` as an event of stream ``i``'s aggregate."""
    p, kind = step.payload, step.event_type
    scope = {**stream.scope.__dict__, "source": step.source, **dict(step.provenance)}
    if kind == "note.created":
        fields = {k: v for k, v in p.items() if k != "note_id"}
        aggregates[i] = Note(scope=scope, **fields)
    elif kind == "note.updated":
        aggregates[i].update(**p)
    elif kind == "note.deleted":
        aggregates[i].delete()
    elif kind == "budget.limit_set" and i not in aggregates:
        aggregates[i] = Budget(scope=scope, **p)
    elif kind == "budget.limit_set":
        aggregates[i].set_limit(**p)
    elif kind == "budget.debited":
        aggregates[i].debit(**p)
    elif kind == "budget.debit_refused":
        aggregates[i].refuse_debit(**p)
    else:
        aggregates[i].credit(**p)


# -- the materialised view ----------------------------------------------------------------


class Views(SQLiteTrackingRecorder):
    """The notes view and the budget view, each write in one transaction with its
    tracking record."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, version INTEGER,"
            " deleted INTEGER, scope TEXT, source TEXT, title TEXT, content_type TEXT,"
            " content TEXT, tags TEXT, created_at TEXT, updated_at TEXT)",
            "CREATE TABLE IF NOT EXISTS budgets (id TEXT PRIMARY KEY, version INTEGER,"
            " limit_minor INTEGER, spent_minor INTEGER, data TEXT) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS ledger (id TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID",
        ]

    def note(self, e: Any, tracking: Tracking, scope: dict[str, Any] | None) -> None:
        """A new note's record (``scope`` given), or the next version of it."""
        at, key, version = e.timestamp.isoformat(), e.originator_id.hex, e.originator_version
        with self.datastore.transaction(commit=True) as c:
            if isinstance(e, Note.Deleted):
                c.execute(
                    "UPDATE notes SET version = ?, deleted = 1, updated_at = ? WHERE id = ?",
                    (version, at, key),
                )
            elif scope is None:
                c.execute(
                    "UPDATE notes SET version = ?, title = ?, content_type = ?, content = ?,"
                    " tags = ?, updated_at = ? WHERE id = ?",
                    (version, e.title, e.content_type, e.content, orjson.dumps(e.tags), at, key),
                )
            else:
                c.execute(
                    "INSERT INTO notes VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        version,
                        orjson.dumps(scope),
                        orjson.dumps(e.source),
                        e.title,
                        e.content_type,
                        e.content,
                        orjson.dumps(e.tags),
                        at,
                        at,
                    ),
                )
            self._insert_tracking(c, tracking)

    def budget(self, e: Any, tracking: Tracking, kind: str, spent: int, limit: Any) -> None:
        """A budget's totals moved by ``spent`` (its limit set to ``limit`` unless None),
        and the event's ledger line."""
        key, at = e.originator_id.hex, e.timestamp.isoformat()
        with self.datastore.transaction(commit=True) as c:
            if isinstance(e, Budget.Created):
                c.execute(
                    "INSERT INTO budgets VALUES (?, ?, ?, 0, ?)",
                    (key, e.originator_version, limit, orjson.dumps({**e.scope, "created_at": at})),
                )
            totals = self._move(c, key, e.originator_version, spent, limit)
            line = {
                "kind": kind,
                "amount_minor": getattr(e, "amount_minor", limit),
                "reason": e.reason,
                "limit_minor": totals[0],
                "spent_minor": totals[1],
                "recorded_at": at,
            }
            c.execute(
                "INSERT INTO ledger VALUES (?, ?)",
                (f"{key}#{e.originator_version:012d}", orjson.dumps(line)),
            )
            self._insert_tracking(c, tracking)

    @staticmethod
    def _move(c: SQLiteCursor, key: str, version: int, spent: int, limit: Any) -> Any:
        c.execute(
            "UPDATE budgets SET version = ?, spent_minor = spent_minor + ?,"
            " limit_minor = coalesce(?, limit_minor) WHERE id = ?"
            " RETURNING limit_minor, spent_minor",
            (version, spent, limit, key),
        )
        return c.fetchone()


class RebuildProjection(Projection[Views]):
    name = "views"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Note.Created, tracking: Tracking) -> None:
        self.view.note(e, tracking, e.scope)

    @process_event.register
    def _(self, e: Note.Updated, tracking: Tracking) -> None:
        self.view.note(e, tracking, None)

    @process_event.register
    def _(self, e: Note.Deleted, tracking: Tracking) -> None:
        self.view.note(e, tracking, None)

    @process_event.register
    def _(self, e: Budget.Created, tracking: Tracking) -> None:
        self.view.budget(e, tracking, "limit", 0, e.limit_minor)

    @process_event.register
    def _(self, e: Budget.LimitSet, tracking: Tracking) -> None:
        self.view.budget(e, tracking, "limit", 0, e.limit_minor)

    @process_event.register
    def _(self, e: Budget.Debited, tracking: Tracking) -> None:
        self.view.budget(e, tracking, "debit", e.amount_minor, None)

    @process_event.register
    def _(self, e: Budget.DebitRefused, tracking: Tracking) -> None:
        self.view.budget(e, tracking, "debit_refused", 0, None)

    @process_event.register
    def _(self, e: Budget.Credited, tracking: Tracking) -> None:
        self.view.budget(e, tracking, "credit", -e.amount_minor, None)


def process(db: Path, view_db: Path) -> dict[str, float]:
    """The views made from nothing over every stored event; the processing timed."""
    app = Spine(env=env(db))
    recorder = app.recorder
    assert isinstance(recorder, SQLiteApplicationRecorder)
    view: Views = baselines._SyncFactory(env(view_db)).tracking_recorder(Views)  # type: ignore[assignment]
    projection = RebuildProjection(view=view)
    last = recorder.max_notification_id()
    started = time.perf_counter()
    position = view.max_tracking_id(app.name) or 0
    processed = 0
    while page := recorder.select_notifications(position, PAGE, inclusive_of_start=False):
        for notification in page:
            domain_event = app.mapper.to_domain_event(notification)
            projection.process_event(domain_event, Tracking(app.name, notification.id))
        position = page[-1].id
        processed += len(page)
    seconds = time.perf_counter() - started
    counts = {}
    with view.datastore.transaction(commit=False) as c:
        for table in ("notes", "budgets", "ledger"):
            c.execute(f"SELECT count(*) FROM {table}")
            counts[table] = c.fetchone()[0]
    if view.max_tracking_id(app.name) != last or processed != last:
        raise RuntimeError(f"processed {processed} of {last} notifications")
    app.close()
    return {"events": processed, "seconds": seconds, **counts}


def main() -> int:
    what, db, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    result = load(db, int(arg)) if what == "load" else process(db, Path(arg))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    # Run as imported, so the events' topics name this module, not ``__main__``.
    import rebuild_library

    sys.exit(rebuild_library.main())
