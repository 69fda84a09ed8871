"""The baselines `bench_lab.py` prints beside our figures, each on its own database file
in WAL mode at the ``PRAGMA synchronous`` asked for (FULL or NORMAL).

* ``raw_*``: plain :mod:`sqlite3` on a table shaped as our spine table (position
  INTEGER PRIMARY KEY, stream_id, seq, command_id, hash, body; UNIQUE (stream_id, seq);
  an index on (stream_id, command_id)) with bodies of the size ours stored: the ceiling.
* ``lib_*``: the ``eventsourcing`` library (9.5.6) on its own SQLite persistence. It sets
  no ``synchronous`` (so it runs at SQLite's compiled-in default); :class:`_SyncFactory`
  adds the pragma to each of its connections so both sides run at the same setting.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)
from eventsourcing.utils import Environment, EnvType, get_topic

SYNC_VALUES = {"NORMAL": 1, "FULL": 2}


def _db(label: str) -> str:
    """A new database file in a new temporary directory (`bench_lab.py` points
    ``tempfile.tempdir`` at a directory of its own, removed when it ends)."""
    return str(Path(tempfile.mkdtemp(prefix=f"{label}-")) / "db.sqlite3")


# -- raw sqlite3: the ceiling -------------------------------------------------------------


def _raw(sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(_db("raw"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    if conn.execute("PRAGMA synchronous").fetchone()[0] != SYNC_VALUES[sync]:
        raise RuntimeError(f"raw sqlite3 is not at synchronous={sync}")
    conn.execute(
        "CREATE TABLE spine (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL,"
        " seq INTEGER NOT NULL, command_id TEXT NOT NULL, hash TEXT NOT NULL,"
        " body BLOB NOT NULL, UNIQUE (stream_id, seq))"
    )
    conn.execute("CREATE INDEX spine_command_id ON spine (command_id, stream_id)")
    return conn


def _rows(streams: int, per_stream: int, body: int) -> list[tuple[Any, ...]]:
    """Rows stream after stream: ids, hashes and body shaped and sized as ours."""
    blob = os.urandom(body)
    return [
        (stream, seq, str(uuid.uuid4()), os.urandom(32).hex(), blob)
        for stream in (f"notes/t1/lab/{uuid.uuid4()}" for _ in range(streams))
        for seq in range(1, per_stream + 1)
    ]


_INSERT = "INSERT INTO spine (stream_id, seq, command_id, hash, body) VALUES (?, ?, ?, ?, ?)"


_HEAD = "SELECT seq, hash FROM spine WHERE stream_id = ? ORDER BY seq DESC LIMIT 1"
_KNOWN = "SELECT 1 FROM spine WHERE stream_id = ? AND command_id = ?"


def _transactions(sync: str, transactions: list[list[tuple[Any, ...]]]) -> float:
    """Rows/s writing each list of rows as BEGIN, then per row what any append must do
    (read the stream's head, look for its command id, insert), then COMMIT."""
    conn = _raw(sync)
    started = time.perf_counter()
    for rows in transactions:
        conn.execute("BEGIN")
        for row in rows:
            conn.execute(_HEAD, row[:1]).fetchone()
            conn.execute(_KNOWN, (row[0], row[2])).fetchone()
            conn.execute(_INSERT, row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return sum(map(len, transactions)) / elapsed


def raw_single(sync: str, n: int, body: int) -> float:
    """One single-row transaction after another (streams of 100 rows)."""
    rows = _rows(-(-n // 100), 100, body)[:n]
    return _transactions(sync, [[row] for row in rows])


def raw_group(sync: str, writers: int, per_writer: int, body: int) -> float:
    """Group commit: ``writers`` single-row inserts (one per stream) per transaction."""
    rows = _rows(writers, per_writer, body)
    by_round = [rows[k::per_writer] for k in range(per_writer)]  # each stream's k-th row
    return _transactions(sync, by_round)


def raw_batch(sync: str, batches: int, size: int, body: int) -> float:
    """One executemany of ``size`` rows (a new stream each) per transaction."""
    rows = _rows(batches, size, body)
    conn = _raw(sync)
    started = time.perf_counter()
    for i in range(batches):
        conn.execute("BEGIN")
        conn.executemany(_INSERT, rows[i * size : (i + 1) * size])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return batches * size / elapsed


# -- the eventsourcing library ------------------------------------------------------------


class _SyncPool(SQLiteConnectionPool):
    synchronous = "FULL"

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection.cursor().execute(f"PRAGMA synchronous={self.synchronous}")
        return connection


class _SyncFactory(SQLiteFactory):
    """The library's SQLite persistence, its pool replaced (before it made a connection)
    by one that also sets ``PRAGMA synchronous`` from ``SQLITE_SYNCHRONOUS``."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        stock = self.datastore.pool
        self.datastore.pool = _SyncPool(db_name=stock.db_name, lock_timeout=stock.lock_timeout)
        self.datastore.pool.synchronous = self.env.get("SQLITE_SYNCHRONOUS") or "FULL"
        stock.close()


class Note(Aggregate):
    """One stream; each event's JSON state is about 300 bytes, like our payloads."""

    @event("Created")
    def __init__(self, content: str) -> None:
        self.content = content

    @event("Updated")
    def update(self, content: str) -> None:
        self.content = content


_CONTENT = "p" * 200


def _note(events: int) -> Note:
    note = Note(_CONTENT)
    for _ in range(events - 1):
        note.update(_CONTENT)
    return note


def _app(sync: str) -> Application[uuid.UUID]:
    env = {
        "PERSISTENCE_MODULE": get_topic(_SyncFactory),
        "SQLITE_DBNAME": _db("lib"),
        "SQLITE_SYNCHRONOUS": sync,
    }
    app: Application[uuid.UUID] = Application(env=env)
    for commit in (False, True):  # a reader and the writer connection
        with app.factory.datastore.transaction(commit=commit) as cursor:  # type: ignore[attr-defined]
            cursor.execute("PRAGMA synchronous")
            if cursor.fetchone()[0] != SYNC_VALUES[sync]:
                raise RuntimeError(f"the library is not at synchronous={sync}")
    return app


@functools.cache
def lib_single(sync: str, n: int = 2_000) -> float:
    """``app.save`` of one event each (streams of 100); measured once per setting."""
    notes: list[Note] = []
    app = _app(sync)
    elapsed = 0.0
    for i in range(n):
        if i % 100 == 0:
            notes.append(Note(_CONTENT))
        else:
            notes[-1].update(_CONTENT)
        started = time.perf_counter()
        app.save(notes[-1])
        elapsed += time.perf_counter() - started
    app.close()
    return n / elapsed


def lib_batch(sync: str, batches: int, size: int) -> float:
    """``app.save`` of a new note's ``size`` events (built before, untimed) at a time."""
    notes, app, elapsed = [_note(size) for _ in range(batches)], _app(sync), 0.0
    for note in notes:
        started = time.perf_counter()
        app.save(note)
        elapsed += time.perf_counter() - started
    app.close()
    return batches * size / elapsed


def lib_projection(sync: str, n: int) -> float:
    """The library's pull path fed to a minimal view: pages of 1,000 notifications
    (``select_notifications``), each mapped back to a domain event (``to_domain_event``),
    then one transaction per page upserting (originator, version) and the position."""
    app = _app(sync)
    for _ in range(n // 100):
        app.save(_note(100))
    recorder = app.recorder
    assert isinstance(recorder, SQLiteApplicationRecorder)
    with recorder.datastore.transaction(commit=True) as c:
        c.execute("CREATE TABLE view (id TEXT PRIMARY KEY, version INTEGER) WITHOUT ROWID")
        c.execute("CREATE TABLE tracking (name TEXT PRIMARY KEY, position INTEGER)")
    started = time.perf_counter()
    position, done = 0, 0
    while page := recorder.select_notifications(position, 1_000, inclusive_of_start=False):
        events = [app.mapper.to_domain_event(item) for item in page]
        position = page[-1].id
        with recorder.datastore.transaction(commit=True) as c:
            c.executemany(
                "INSERT INTO view VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET version ="
                " excluded.version",
                [(e.originator_id.hex, e.originator_version) for e in events],
            )
            c.execute("INSERT OR REPLACE INTO tracking VALUES ('view', ?)", (position,))
        done += len(events)
    elapsed = time.perf_counter() - started
    app.close()
    assert done == n // 100 * 100
    return done / elapsed


def lib_fold(n: int = 1_000) -> float:
    """Median ms of ``repository.get`` of a note of ``n`` events (select, decode, apply);
    a read, so run at FULL (the library's default)."""
    app = _app("FULL")
    note = _note(n)
    app.save(note)
    app.repository.get(note.id)
    timings = []
    for _ in range(9):
        started = time.perf_counter()
        app.repository.get(note.id)
        timings.append(time.perf_counter() - started)
    app.close()
    return statistics.median(timings) * 1000
