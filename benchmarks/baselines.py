"""Baselines for the event-store benchmark.

Every function here measures one reference figure against an on-disk SQLite database
file (never ``:memory:``) in WAL journal mode, inside a directory the caller provides,
and returns the figure as a ``float``. Each call makes its own uniquely named database
file(s) in that directory, so the same directory can be reused; the caller owns (and
deletes) the directory.

Two families of baseline:

* ``raw_sqlite_*``: plain :mod:`sqlite3`, the floor that no event store on SQLite can beat.
* ``eventsourcing_*``: the ``eventsourcing`` library (PyPI ``eventsourcing==9.5.6``) with
  its own SQLite persistence module (``eventsourcing.sqlite``), configured environment
  style (``PERSISTENCE_MODULE``/``SQLITE_DBNAME``).

Like-for-like durability (``synchronous``)
------------------------------------------
``eventsourcing.sqlite`` 9.5.6 never issues ``PRAGMA synchronous``. Its connection pool
(``SQLiteConnectionPool._create_connection``) opens each connection with
``sqlite3.connect(..., isolation_level=None)``, switches the file to ``journal_mode=WAL``
and nothing else, so its connections run at SQLite's compiled-in default. The
``sqlite3`` build in this virtualenv (SQLite 3.40.1) has ``DEFAULT_SYNCHRONOUS=2`` and
``DEFAULT_WAL_SYNCHRONOUS=2``, so the library as shipped runs at ``synchronous=FULL``.
``synchronous`` is a per-connection setting, and the library has no setting for it.

To compare like for like, the ``eventsourcing_*`` functions use
``_SyncSQLiteFactory``, a subclass of the library's ``SQLiteFactory``. They select it
the library's documented way, by giving its topic as ``PERSISTENCE_MODULE``
(``InfrastructureFactory.construct`` takes a module or a factory class), together with
``SQLITE_DBNAME=<path>`` and an extra key, ``SQLITE_SYNCHRONOUS=FULL|NORMAL``. The
subclass swaps the datastore's connection pool for ``_SyncSQLiteConnectionPool``,
whose only change is to run ``PRAGMA synchronous=<value>`` on every new connection,
straight after the library's own set-up (WAL mode, row factory). Both values, FULL
and NORMAL, are set explicitly, just as the raw :mod:`sqlite3` baselines set them.
Before timing anything, each function reads the pragma back through one reader and
one writer connection from the library's pool, and raises if it does not match.
``library_default_synchronous`` confirms that the stock ``eventsourcing.sqlite`` module
gives FULL. All other
behaviour (SQL, transactions, pooling, serialisation) is the library's.

Streams and payloads
--------------------
Rows and events go into streams of 100 (one stream = one aggregate), keyed by a 32-char
hex UUID. A raw row body is 300 random bytes. A library event carries a ``payload``
string, which makes its serialised JSON ``state`` about 300 bytes (the library also
stores a topic column of 25-40 bytes per event).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
    SQLiteTrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, get_topic

__all__ = [
    "eventsourcing_batched_saves",
    "eventsourcing_fold_1000",
    "eventsourcing_projection_rate",
    "eventsourcing_single_saves",
    "library_default_synchronous",
    "raw_sqlite_batched_inserts",
    "raw_sqlite_single_inserts",
]

BODY_SIZE = 300
"""Bytes of body per raw row."""

STREAM_LENGTH = 100
"""Rows/events per stream (aggregate) in the single-append baselines."""

PROJECTION_COMMIT_EVERY = 1_000
"""Events per projection transaction (view writes plus tracking position)."""

FOLD_EVENTS = 1_000
"""Events in the aggregate that :func:`eventsourcing_fold_1000` reconstructs."""

FOLD_RUNS = 9
"""Timed ``repository.get`` runs (after one warm-up) of which the median is taken."""

_SYNCHRONOUS_VALUES = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

# Padding that makes an event's serialised state about 300 bytes (see module docstring).
_EVENT_PAYLOAD = "p" * 204


def _check_synchronous(synchronous: str) -> str:
    value = synchronous.strip().upper()
    if value not in ("FULL", "NORMAL"):
        msg = f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}"
        raise ValueError(msg)
    return value


def _new_db_path(dir: str | os.PathLike[str], label: str) -> str:
    directory = Path(dir)
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{label}-{uuid4().hex}.sqlite3")


# ---------------------------------------------------------------------------
# Raw sqlite3
# ---------------------------------------------------------------------------

_RAW_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS events ("
    "stream_id TEXT NOT NULL, "
    "seq INTEGER NOT NULL, "
    "body BLOB NOT NULL, "
    "UNIQUE (stream_id, seq))"
)
_RAW_INSERT = "INSERT INTO events (stream_id, seq, body) VALUES (?, ?, ?)"


def _raw_connect(path: str, synchronous: str) -> sqlite3.Connection:
    # Autocommit mode with explicit BEGIN/COMMIT, as eventsourcing.sqlite does.
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        msg = f"could not put {path} into WAL mode (got {mode!r})"
        raise RuntimeError(msg)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    actual = conn.execute("PRAGMA synchronous").fetchone()[0]
    if actual != _SYNCHRONOUS_VALUES[synchronous]:
        conn.close()
        msg = f"PRAGMA synchronous is {actual}, expected {synchronous}"
        raise RuntimeError(msg)
    conn.execute(_RAW_CREATE_TABLE)
    return conn


def raw_sqlite_single_inserts(dir: str | os.PathLike[str], n: int, synchronous: str) -> float:
    """Plain ``sqlite3``: insert ``n`` rows, one row per transaction. Returns rows/s.

    Table ``events(stream_id TEXT, seq INTEGER, body BLOB, UNIQUE(stream_id, seq))``;
    the body is 300 random bytes. Rows fill streams of 100 (``seq`` 0..99 per 32-char hex
    stream id). Each row is ``BEGIN``/``INSERT``/``COMMIT`` on one connection in WAL mode
    with ``PRAGMA synchronous`` as given. Only the insert loop is timed.
    """
    sync = _check_synchronous(synchronous)
    if n <= 0:
        msg = "n must be positive"
        raise ValueError(msg)
    conn = _raw_connect(_new_db_path(dir, "raw-single"), sync)
    try:
        body = os.urandom(BODY_SIZE)
        rows = [
            (stream_id, seq, body)
            for stream_id in (uuid4().hex for _ in range(-(-n // STREAM_LENGTH)))
            for seq in range(STREAM_LENGTH)
        ][:n]
        execute = conn.execute
        started = time.perf_counter()
        for row in rows:
            execute("BEGIN")
            execute(_RAW_INSERT, row)
            execute("COMMIT")
        elapsed = time.perf_counter() - started
        (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        conn.close()
    if count != n:
        msg = f"expected {n} rows, found {count}"
        raise RuntimeError(msg)
    return n / elapsed


def raw_sqlite_batched_inserts(
    dir: str | os.PathLike[str], n_batches: int, batch_size: int, synchronous: str
) -> float:
    """Plain ``sqlite3``: ``n_batches`` transactions of ``batch_size`` rows. Returns rows/s.

    Same table, body and connection set-up as :func:`raw_sqlite_single_inserts`. Each
    batch is one new stream (``seq`` 0..batch_size-1) written by
    ``BEGIN``/``executemany(INSERT)``/``COMMIT``. Only the insert loop is timed.
    """
    sync = _check_synchronous(synchronous)
    if n_batches <= 0 or batch_size <= 0:
        msg = "n_batches and batch_size must be positive"
        raise ValueError(msg)
    conn = _raw_connect(_new_db_path(dir, "raw-batched"), sync)
    try:
        body = os.urandom(BODY_SIZE)
        batches = [
            [(stream_id, seq, body) for seq in range(batch_size)]
            for stream_id in (uuid4().hex for _ in range(n_batches))
        ]
        execute = conn.execute
        executemany = conn.executemany
        started = time.perf_counter()
        for batch in batches:
            execute("BEGIN")
            executemany(_RAW_INSERT, batch)
            execute("COMMIT")
        elapsed = time.perf_counter() - started
        (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        conn.close()
    total = n_batches * batch_size
    if count != total:
        msg = f"expected {total} rows, found {count}"
        raise RuntimeError(msg)
    return total / elapsed


# ---------------------------------------------------------------------------
# eventsourcing: persistence with an explicit synchronous pragma
# ---------------------------------------------------------------------------


class _SyncSQLiteConnectionPool(SQLiteConnectionPool):
    """The library's pool, plus ``PRAGMA synchronous=<value>`` on each new connection."""

    def __init__(self, *, synchronous: str, **kwargs: Any) -> None:
        self.synchronous = synchronous
        super().__init__(**kwargs)

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return connection


class _SyncSQLiteFactory(SQLiteFactory):
    """The library's ``SQLiteFactory``, plus the ``SQLITE_SYNCHRONOUS`` setting.

    ``SQLiteFactory.__init__`` builds a ``SQLiteDatastore`` from the environment. The pool
    makes its connections lazily, so none exist yet when this replaces the pool with one
    that has the same settings and also sets ``PRAGMA synchronous``.
    """

    SQLITE_SYNCHRONOUS = "SQLITE_SYNCHRONOUS"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        synchronous = _check_synchronous(self.env.get(self.SQLITE_SYNCHRONOUS) or "FULL")
        stock_pool = self.datastore.pool
        self.datastore.pool = _SyncSQLiteConnectionPool(
            synchronous=synchronous,
            db_name=stock_pool.db_name,
            lock_timeout=stock_pool.lock_timeout,
            pool_size=stock_pool.pool_size,
            max_overflow=stock_pool.max_overflow,
            pool_timeout=stock_pool.pool_timeout,
            max_age=stock_pool.max_age,
            pre_ping=stock_pool.pre_ping,
        )
        stock_pool.close()


def _library_env(db_path: str, synchronous: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": get_topic(_SyncSQLiteFactory),
        "SQLITE_DBNAME": db_path,
        _SyncSQLiteFactory.SQLITE_SYNCHRONOUS: synchronous,
    }


def _pragma_via_library(app: Application[UUID]) -> tuple[str, int]:
    """Reads ``journal_mode`` and ``synchronous`` through the app's own datastore."""
    factory = app.factory
    if not isinstance(factory, SQLiteFactory):
        msg = f"expected an SQLite factory, got {type(factory).__name__}"
        raise TypeError(msg)
    settings: set[tuple[str, int]] = set()
    # The pool hands out separate reader and writer connections; check one of each.
    for commit in (False, True):
        with factory.datastore.transaction(commit=commit) as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal_mode = str(cursor.fetchone()[0])
            cursor.execute("PRAGMA synchronous")
            settings.add((journal_mode, int(cursor.fetchone()[0])))
    if len(settings) != 1:
        msg = f"library connections disagree on their settings: {sorted(settings)}"
        raise RuntimeError(msg)
    return settings.pop()


def _verify_library_pragmas(app: Application[UUID], synchronous: str) -> None:
    journal_mode, actual = _pragma_via_library(app)
    if journal_mode.lower() != "wal" or actual != _SYNCHRONOUS_VALUES[synchronous]:
        msg = (
            f"library connection has journal_mode={journal_mode}, synchronous={actual}; "
            f"expected wal and {synchronous}"
        )
        raise RuntimeError(msg)


def library_default_synchronous(dir: str | os.PathLike[str]) -> float:
    """``PRAGMA synchronous`` (0 OFF, 1 NORMAL, 2 FULL) on a stock ``eventsourcing.sqlite``
    connection, i.e. with ``PERSISTENCE_MODULE='eventsourcing.sqlite'`` and no subclass.
    """
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": _new_db_path(dir, "es-default"),
    }
    app: Application[UUID] = Application(env=env)
    try:
        _, synchronous = _pragma_via_library(app)
    finally:
        app.close()
    return float(synchronous)


class _Counter(Aggregate):
    """A minimal aggregate: a ``Created`` event, then any number of ``Bumped`` events."""

    @event("Created")
    def __init__(self, payload: str) -> None:
        self.payload = payload
        self.bumps = 0

    @event("Bumped")
    def bump(self, payload: str) -> None:
        self.payload = payload
        self.bumps += 1


class _BenchApp(Application[UUID]):
    """Plain application; no snapshotting, no aggregate cache (the library defaults)."""

    name = "BenchApp"


def _new_app(dir: str | os.PathLike[str], label: str, synchronous: str) -> _BenchApp:
    app = _BenchApp(env=_library_env(_new_db_path(dir, label), synchronous))
    try:
        _verify_library_pragmas(app, synchronous)
    except BaseException:
        app.close()
        raise
    return app


def _counter_with_events(n_events: int) -> _Counter:
    """A new aggregate holding ``n_events`` pending events (one Created, then Bumped)."""
    aggregate = _Counter(_EVENT_PAYLOAD)
    for _ in range(n_events - 1):
        aggregate.bump(_EVENT_PAYLOAD)
    return aggregate


def eventsourcing_single_saves(
    dir: str | os.PathLike[str], n: int, synchronous: str, *, time_commands: bool = False
) -> float:
    """``eventsourcing``: ``n`` calls of ``app.save()``, each storing exactly one event.
    Returns saves/s (= events/s).

    The application uses the library's SQLite persistence with ``synchronous`` set as
    described in the module docstring. Aggregates are ``_Counter``s of 100 events: save
    ``i`` stores either the ``Created`` event of a new aggregate (every 100th save) or one
    ``Bumped`` event on the current aggregate. Each event is triggered on the aggregate
    before its save starts, outside the timing. The sum of the ``app.save()`` times is
    timed. That covers collecting the pending event, mapping and JSON-serialising it,
    and the library's insert transaction (BEGIN, INSERT, COMMIT).

    With ``time_commands=True`` the whole loop is timed, so creating the aggregate or
    calling ``bump()`` (which builds the event object) counts too. That is the
    "command + save" rate an application sees.
    """
    sync = _check_synchronous(synchronous)
    if n <= 0:
        msg = "n must be positive"
        raise ValueError(msg)
    app = _new_app(dir, "es-single", sync)
    try:
        save = app.save
        perf_counter = time.perf_counter
        elapsed = 0.0
        aggregate: _Counter | None = None
        loop_started = perf_counter()
        for i in range(n):
            if aggregate is None or i % STREAM_LENGTH == 0:
                aggregate = _Counter(_EVENT_PAYLOAD)
            else:
                aggregate.bump(_EVENT_PAYLOAD)
            started = perf_counter()
            save(aggregate)
            elapsed += perf_counter() - started
        if time_commands:
            elapsed = perf_counter() - loop_started
        stored = app.recorder.max_notification_id()
    finally:
        app.close()
    if stored != n:
        msg = f"expected {n} stored events, found {stored}"
        raise RuntimeError(msg)
    return n / elapsed


def eventsourcing_batched_saves(
    dir: str | os.PathLike[str],
    n_saves: int,
    events_per_save: int,
    synchronous: str,
    *,
    time_commands: bool = False,
) -> float:
    """``eventsourcing``: ``n_saves`` calls of ``app.save()``, each storing
    ``events_per_save`` events of one new aggregate in one transaction. Returns events/s.

    Every aggregate is a new ``_Counter`` with a ``Created`` event and
    ``events_per_save - 1`` ``Bumped`` events. Its events are triggered before the save,
    outside the timing. Only the ``app.save()`` calls are timed, as in
    :func:`eventsourcing_single_saves`. With ``time_commands=True`` the whole loop is
    timed, building the events included.
    """
    sync = _check_synchronous(synchronous)
    if n_saves <= 0 or events_per_save <= 0:
        msg = "n_saves and events_per_save must be positive"
        raise ValueError(msg)
    app = _new_app(dir, "es-batched", sync)
    try:
        save = app.save
        perf_counter = time.perf_counter
        elapsed = 0.0
        loop_started = perf_counter()
        for _ in range(n_saves):
            aggregate = _counter_with_events(events_per_save)
            started = perf_counter()
            save(aggregate)
            elapsed += perf_counter() - started
        if time_commands:
            elapsed = perf_counter() - loop_started
        stored = app.recorder.max_notification_id()
    finally:
        app.close()
    total = n_saves * events_per_save
    if stored != total:
        msg = f"expected {total} stored events, found {stored}"
        raise RuntimeError(msg)
    return total / elapsed


# ---------------------------------------------------------------------------
# eventsourcing: projection catch-up
# ---------------------------------------------------------------------------


class _LastVersionView(SQLiteTrackingRecorder):
    """A materialised view: the latest version seen per aggregate, plus the library's
    single-row tracking table (``tracking(application_name, notification_id)``).
    """

    _upsert = (
        "INSERT INTO projection_last_version (originator_id, version) VALUES (?, ?) "
        "ON CONFLICT (originator_id) DO UPDATE SET version = excluded.version"
    )

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(
            "CREATE TABLE IF NOT EXISTS projection_last_version ("
            "originator_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
        )
        return statements

    def record(self, rows: list[tuple[str, int]], tracking: Tracking) -> None:
        """Writes the rows and the tracking position in one transaction."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.executemany(self._upsert, rows)
            self._insert_tracking(cursor, tracking)

    def count_rows(self) -> int:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT COUNT(*) FROM projection_last_version")
            return int(cursor.fetchone()[0])


class _LastVersionProjection(Projection[_LastVersionView]):
    """The library's ``Projection`` interface. It buffers one view row per event and
    commits rows plus tracking every ``PROJECTION_COMMIT_EVERY`` events.
    """

    name = "LastVersionProjection"

    def __init__(self, view: _LastVersionView) -> None:
        super().__init__(view)
        self._rows: list[tuple[str, int]] = []
        self._tracking: Tracking | None = None
        self.commits = 0

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignores events of types with no registered handler (none occur here)."""

    @process_event.register(Aggregate.Event)
    def _(self, domain_event: Aggregate.Event, tracking: Tracking) -> None:
        self._rows.append((domain_event.originator_id.hex, domain_event.originator_version))
        self._tracking = tracking
        if len(self._rows) >= PROJECTION_COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._tracking is not None and self._rows:
            self.view.record(self._rows, self._tracking)
            self.commits += 1
        self._rows = []


def eventsourcing_projection_rate(
    dir: str | os.PathLike[str], n_events: int, synchronous: str
) -> float:
    """``eventsourcing``: projector catch-up over ``n_events`` stored events. Returns events/s.

    Set-up, not timed: an application stores ``n_events`` events (aggregates of 100
    events, one save each) in database file D. A view ``_LastVersionView`` (a subclass of
    the library's ``SQLiteTrackingRecorder``) is built the way the library's
    ``ProjectionRunner`` builds one: ``InfrastructureFactory.construct(env)
    .tracking_recorder(view_class)``. It uses the same file D but its own datastore and
    connection pool, so the view and the events are in one database. Both use the
    ``synchronous`` value given. SQLite recorders cannot ``subscribe()``, so
    ``ProjectionRunner`` cannot be used here. Pulling pages of notifications is how
    the library's own pull-based ``Follower`` reads an application's log.

    Timed: start from the view's ``max_tracking_id(app_name)``, then repeatedly
    ``app.recorder.select_notifications(start=position, limit=1000,
    inclusive_of_start=False)``. Each notification is turned back into a domain event
    with ``app.mapper.to_domain_event`` (JSON decode plus event object), then given to
    ``_LastVersionProjection.process_event(event, Tracking(app_name, notification_id))``,
    the library's ``Projection`` interface dispatched with its ``singledispatchmethod``.
    The projection buffers one row per event. Every 1,000 events it commits one
    transaction: an ``executemany`` UPSERT of those rows into
    ``projection_last_version(originator_id PRIMARY KEY, version)``, plus the library's
    single-row tracking UPSERT (``_insert_tracking``). The timing stops when the log is
    exhausted and the remainder is committed. Afterwards, outside the timing, the view's
    tracking position and row count are checked.
    """
    sync = _check_synchronous(synchronous)
    if n_events <= 0:
        msg = "n_events must be positive"
        raise ValueError(msg)
    db_path = _new_db_path(dir, "es-projection")
    env = _library_env(db_path, sync)
    app = _BenchApp(env=env)
    try:
        _verify_library_pragmas(app, sync)
        remaining = n_events
        while remaining > 0:
            size = min(STREAM_LENGTH, remaining)
            app.save(_counter_with_events(size))
            remaining -= size
        last_id = app.recorder.max_notification_id()

        view_factory = InfrastructureFactory[_LastVersionView].construct(
            Environment(_LastVersionProjection.name, env)
        )
        try:
            view = view_factory.tracking_recorder(_LastVersionView)
            projection = _LastVersionProjection(view)
            app_name = app.name
            select_notifications = app.recorder.select_notifications
            to_domain_event = app.mapper.to_domain_event
            process_event = projection.process_event

            started = time.perf_counter()
            position = view.max_tracking_id(app_name)
            while True:
                notifications = select_notifications(
                    start=position, limit=PROJECTION_COMMIT_EVERY, inclusive_of_start=False
                )
                if not notifications:
                    break
                for notification in notifications:
                    process_event(
                        to_domain_event(notification), Tracking(app_name, notification.id)
                    )
                position = notifications[-1].id
            projection.flush()
            elapsed = time.perf_counter() - started

            tracked = view.max_tracking_id(app_name)
            n_rows = view.count_rows()
        finally:
            view_factory.close()
    finally:
        app.close()
    expected_rows = -(-n_events // STREAM_LENGTH)
    if tracked != last_id or n_rows != expected_rows:
        msg = (
            f"projection incomplete: tracked {tracked} of {last_id}, "
            f"{n_rows} of {expected_rows} view rows"
        )
        raise RuntimeError(msg)
    return n_events / elapsed


# ---------------------------------------------------------------------------
# eventsourcing: fold
# ---------------------------------------------------------------------------


def eventsourcing_fold_1000(dir: str | os.PathLike[str]) -> float:
    """``eventsourcing``: milliseconds for ``app.repository.get(id)`` of an aggregate
    with 1,000 stored events. No snapshots and no aggregate cache (library defaults).

    The aggregate (one ``Created`` and 999 ``Bumped`` events, about 300-byte state each)
    is stored in one save. One warm-up ``get`` runs first, then the median of
    ``FOLD_RUNS`` timed ``get`` calls is returned. Each call selects the 1,000 rows,
    JSON-decodes them, builds the event objects and applies them in order. Writes
    don't matter for a read-only fold, so it uses ``synchronous=FULL`` (the library default).
    """
    app = _new_app(dir, "es-fold", "FULL")
    try:
        aggregate = _counter_with_events(FOLD_EVENTS)
        app.save(aggregate)
        aggregate_id = aggregate.id
        get = app.repository.get
        warm: _Counter = get(aggregate_id)
        if warm.version != FOLD_EVENTS:
            msg = f"expected version {FOLD_EVENTS}, got {warm.version}"
            raise RuntimeError(msg)
        timings: list[float] = []
        for _ in range(FOLD_RUNS):
            started = time.perf_counter()
            get(aggregate_id)
            timings.append(time.perf_counter() - started)
    finally:
        app.close()
    return statistics.median(timings) * 1000.0


def _main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="es-baselines-") as tmp:
        default_sync = library_default_synchronous(tmp)
        names = {value: name for name, value in _SYNCHRONOUS_VALUES.items()}
        print(f"eventsourcing.sqlite default synchronous: {names[int(default_sync)]}")
        for sync in ("FULL", "NORMAL"):
            figure = raw_sqlite_single_inserts(tmp, 5_000, sync)
            print(f"raw sqlite single inserts [{sync}]: {figure:,.0f} events/s")
            figure = raw_sqlite_batched_inserts(tmp, 500, 100, sync)
            print(f"raw sqlite batched inserts x100 [{sync}]: {figure:,.0f} events/s")
            figure = eventsourcing_single_saves(tmp, 3_000, sync)
            print(f"eventsourcing single-event saves [{sync}]: {figure:,.0f} saves/s")
            figure = eventsourcing_single_saves(tmp, 3_000, sync, time_commands=True)
            print(f"eventsourcing single-event command+save [{sync}]: {figure:,.0f} saves/s")
            figure = eventsourcing_batched_saves(tmp, 200, 100, sync)
            print(f"eventsourcing 100-event saves [{sync}]: {figure:,.0f} events/s")
            figure = eventsourcing_batched_saves(tmp, 200, 100, sync, time_commands=True)
            print(f"eventsourcing 100-event command+save [{sync}]: {figure:,.0f} events/s")
            figure = eventsourcing_projection_rate(tmp, 100_000, sync)
            print(f"eventsourcing projection catch-up [{sync}]: {figure:,.0f} events/s")
        figure = eventsourcing_fold_1000(tmp)
        print(f"eventsourcing fold of 1,000 events: {figure:.1f} ms")


if __name__ == "__main__":
    _main()
