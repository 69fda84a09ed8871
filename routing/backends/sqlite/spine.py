"""The spine on SQLite: one table, append-only by trigger, numbered by a position that
is assigned inside the write transaction (so commit order is position order, which the
lab feed relies on: :mod:`routing.backends.sqlite.feed`)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from functools import partial

from routing.backends.sqlite.common import decode_strict, q
from routing.backends.sqlite.db import SqliteDatabase
from spine.appending import (
    MAX_SEQ,
    appended,
    check_expected_version,
    check_seq_range,
    validate_append,
)
from spine.codec import seal, timestamp_text
from spine.errors import ConcurrencyError
from spine.events import GENESIS_HASH, AppendResult, EventEnvelope, ExpectedVersion, NewEvent
from spine.streams import parse_stream_id


def spine_schema(table: str) -> list[str]:
    t = q(table)
    return [
        f"""CREATE TABLE IF NOT EXISTS {t} (
            position   INTEGER PRIMARY KEY,
            stream_id  TEXT    NOT NULL,
            seq        INTEGER NOT NULL,
            command_id TEXT    NOT NULL,
            hash       TEXT    NOT NULL,
            body       BLOB    NOT NULL,
            UNIQUE (stream_id, seq)
        )""",
        f"CREATE INDEX IF NOT EXISTS {q(table + '_command')} ON {t} (stream_id, command_id)",
        f"""CREATE TRIGGER IF NOT EXISTS {q(table + "_no_update")} BEFORE UPDATE ON {t}
            BEGIN SELECT RAISE(ABORT, 'spine events are append-only'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {q(table + "_no_delete")} BEFORE DELETE ON {t}
            BEGIN SELECT RAISE(ABORT, 'spine events are append-only'); END""",
    ]


class SqliteEventStore:
    """:class:`spine.EventStore` on one SQLite table."""

    def __init__(self, db: SqliteDatabase, table: str) -> None:
        self.db = db
        self.table = table
        t = q(table)
        # the stream's head, and whether it holds the command already, in one statement
        self._sql_head = (
            f"SELECT seq, hash, EXISTS (SELECT 1 FROM {t} WHERE stream_id = ?1"
            f" AND command_id = ?2) FROM {t} WHERE stream_id = ?1 ORDER BY seq DESC LIMIT 1"
        )
        self._sql_dedup = (
            f"SELECT stream_id, seq, body FROM {t} WHERE stream_id = ? AND command_id = ?"
            " ORDER BY seq"
        )
        self._sql_insert = (
            f"INSERT INTO {t} (stream_id, seq, command_id, hash, body) VALUES (?, ?, ?, ?, ?)"
        )
        self._sql_read = (
            f"SELECT stream_id, seq, body FROM {t} WHERE stream_id = ? AND seq BETWEEN ? AND ?"
            " ORDER BY seq"
        )
        self._sql_scan = (
            f"SELECT stream_id, seq, body FROM {t} WHERE stream_id >= ? AND stream_id < ?"
            " AND (stream_id > ? OR (stream_id = ? AND seq > ?))"
            " ORDER BY stream_id, seq LIMIT ?"
        )

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        command_id, events = validate_append(stream_id, events, expected_version)

        def job(conn: sqlite3.Connection) -> AppendResult:
            head = conn.execute(self._sql_head, (stream_id, command_id)).fetchone()
            if head is not None and head[2]:
                original = decode_strict(
                    conn.execute(self._sql_dedup, (stream_id, command_id)).fetchall()
                )
                return appended(stream_id, original, deduplicated=True)
            actual, prev_hash = (head[0], head[1]) if head else (0, GENESIS_HASH)
            check_expected_version(stream_id, expected_version, actual)
            now = datetime.now(UTC)
            now_text = timestamp_text(now)
            envelopes: list[EventEnvelope] = []
            rows: list[tuple[str, int, str, str, bytes]] = []
            for offset, event in enumerate(events, start=1):
                envelope, body = seal(
                    event,
                    stream_id=stream_id,
                    seq=actual + offset,
                    prev_hash=prev_hash,
                    recorded_at=now,
                    recorded_text=now_text,
                )
                prev_hash = envelope.hash
                envelopes.append(envelope)
                rows.append((stream_id, envelope.seq, command_id, envelope.hash, body))
            try:
                if len(rows) == 1:
                    conn.execute(self._sql_insert, rows[0])
                else:
                    conn.executemany(self._sql_insert, rows)
            except sqlite3.IntegrityError as exc:  # another process won the race
                raise ConcurrencyError(stream_id, expected_version, actual) from exc
            return appended(stream_id, envelopes)

        return await self.db.write(job, route=self.table)

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        check_seq_range(from_seq, to_seq)
        upper = to_seq if to_seq is not None else MAX_SEQ
        args = (stream_id, from_seq, upper)
        return await self.db.read(partial(self._read, args=args), route=self.table)

    def _read(self, conn: sqlite3.Connection, args: tuple[object, ...]) -> list[EventEnvelope]:
        """A stream's range, loaded in the reader thread (off the event loop)."""
        return decode_strict(conn.execute(self._sql_read, args).fetchall())

    async def scan(
        self, *, prefix: str = "", batch_size: int = 1000
    ) -> AsyncIterator[EventEnvelope]:
        upper = prefix + "\U0010ffff"
        after_stream, after_seq = "", 0
        while True:
            args = (prefix, upper, after_stream, after_stream, after_seq, batch_size)
            rows, events = await self.db.read(
                partial(self._scan_batch, args=args), route=self.table
            )
            for event in events:
                yield event
            if len(rows) < batch_size:
                return
            after_stream, after_seq = rows[-1][0], rows[-1][1]

    def _scan_batch(
        self, conn: sqlite3.Connection, args: tuple[object, ...]
    ) -> tuple[list[tuple[str, int, bytes]], list[EventEnvelope]]:
        rows = conn.execute(self._sql_scan, args).fetchall()
        return rows, decode_strict(rows)
