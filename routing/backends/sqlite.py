"""The embedded SQLite backend: ``lab`` mode only.

Implements :class:`spine.EventStore` with :class:`spine.GlobalFeed`,
:class:`projections.ViewStore` and :class:`projections.CheckpointStore` on one database
file per process (see :mod:`routing.backends.sqlite_db` for the writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from projections.views import Page, ViewQuery, ViewRecord, decode_cursor, encode_cursor
from routing.backends.sqlite_db import SqliteDatabase
from routing.config import Connections, Route
from spine.appending import MAX_SEQ, check_expected_version, check_seq_range, validate_append
from spine.codec import decode_many, seal, timestamp_text, trusted
from spine.errors import ConcurrencyError, RoutingError
from spine.events import (
    GENESIS_HASH,
    AppendResult,
    EventEnvelope,
    ExpectedVersion,
    NewEvent,
    Scope,
)
from spine.streams import parse_stream_id


def _q(name: str) -> str:
    """Quote a physical name (already validated by the routes schema)."""
    return '"' + name.replace('"', '""') + '"'


# -- the spine ----------------------------------------------------------------------------


def spine_schema(table: str) -> list[str]:
    t = _q(table)
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
        f"CREATE INDEX IF NOT EXISTS {_q(table + '_command')} ON {t} (stream_id, command_id)",
        f"""CREATE TRIGGER IF NOT EXISTS {_q(table + "_no_update")} BEFORE UPDATE ON {t}
            BEGIN SELECT RAISE(ABORT, 'spine events are append-only'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {_q(table + "_no_delete")} BEFORE DELETE ON {t}
            BEGIN SELECT RAISE(ABORT, 'spine events are append-only'); END""",
    ]


class SqliteEventStore:
    """The spine on SQLite, with a global position for the lab feed."""

    def __init__(self, db: SqliteDatabase, table: str) -> None:
        self.db = db
        self.table = table
        t = _q(table)
        # the stream's head, and whether it holds the command already, in one statement
        self._sql_head = (
            f"SELECT seq, hash, EXISTS (SELECT 1 FROM {t} WHERE stream_id = ?1"
            f" AND command_id = ?2) FROM {t} WHERE stream_id = ?1 ORDER BY seq DESC LIMIT 1"
        )
        self._sql_dedup = (
            f"SELECT body FROM {t} WHERE stream_id = ? AND command_id = ? ORDER BY seq"
        )
        self._sql_insert = (
            f"INSERT INTO {t} (stream_id, seq, command_id, hash, body) VALUES (?, ?, ?, ?, ?)"
        )
        self._sql_read = (
            f"SELECT body FROM {t} WHERE stream_id = ? AND seq BETWEEN ? AND ? ORDER BY seq"
        )
        self._sql_all = (
            f"SELECT position, body FROM {t} WHERE position > ? ORDER BY position LIMIT ?"
        )
        self._sql_max = f"SELECT coalesce(max(position), 0) FROM {t}"
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
                original = conn.execute(self._sql_dedup, (stream_id, command_id)).fetchall()
                sealed = decode_many([row[0] for row in original])
                return AppendResult(
                    stream_id=stream_id,
                    first_seq=sealed[0].seq,
                    last_seq=sealed[-1].seq,
                    events=tuple(sealed),
                    deduplicated=True,
                )
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
            return AppendResult(
                stream_id=stream_id,
                first_seq=envelopes[0].seq,
                last_seq=envelopes[-1].seq,
                events=tuple(envelopes),
            )

        return await self.db.write(job)

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        check_seq_range(from_seq, to_seq)
        upper = to_seq if to_seq is not None else MAX_SEQ
        args = (stream_id, from_seq, upper)
        return await self.db.read(  # decoded in the reader thread, off the event loop
            lambda c: decode_many([row[0] for row in c.execute(self._sql_read, args)])
        )

    async def scan(
        self, *, prefix: str = "", batch_size: int = 1000
    ) -> AsyncIterator[EventEnvelope]:
        upper = prefix + "\U0010ffff"
        after_stream, after_seq = "", 0
        while True:
            args = (prefix, upper, after_stream, after_stream, after_seq, batch_size)
            rows = await self.db.fetchall(self._sql_scan, args)
            for event in decode_many([row[2] for row in rows]):
                yield event
            if len(rows) < batch_size:
                return
            after_stream, after_seq = rows[-1][0], rows[-1][1]

    # GlobalFeed

    async def read_all(
        self, after_position: int, limit: int = 1000
    ) -> list[tuple[int, EventEnvelope]]:
        def read(c: sqlite3.Connection) -> list[tuple[int, EventEnvelope]]:
            rows = c.execute(self._sql_all, (after_position, limit)).fetchall()
            events = decode_many([row[1] for row in rows])
            return [(row[0], event) for row, event in zip(rows, events, strict=True)]

        return await self.db.read(read)

    async def head_position(self) -> int:
        row = await self.db.fetchone(self._sql_max)
        return int(row[0])

    async def wait_for_commit(self, after_position: int, timeout: float) -> int:
        # Note the commit count before reading the head, so a commit delivered while the
        # head is being read still wakes us (no lost wake-up).
        commits = self.db.commits
        head = await self.head_position()
        if head > after_position:
            return head
        # Woken by this process's commits; other processes' commits are seen on timeout.
        await self.db.wait_for_commit(timeout, unless_past=commits)
        return await self.head_position()


# -- views ----------------------------------------------------------------------------------


def view_schema(table: str) -> list[str]:
    t = _q(table)
    return [
        f"""CREATE TABLE IF NOT EXISTS {t} (
            key        TEXT PRIMARY KEY,
            tenant_id  TEXT NOT NULL,
            mode       TEXT NOT NULL,
            user_id    TEXT,
            surface_id TEXT,
            project_id TEXT,
            version    INTEGER NOT NULL,
            deleted    INTEGER NOT NULL DEFAULT 0,
            expires_at REAL,
            data       TEXT NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS {_q(table + '_scope')} ON {t} (tenant_id, mode, user_id)",
    ]


_VIEW_COLUMNS = (
    "key, tenant_id, mode, user_id, surface_id, project_id, version, deleted, expires_at, data"
)


def _row(record: ViewRecord) -> tuple[Any, ...]:
    s = record.scope
    return (
        record.key,
        s.tenant_id,
        s.mode,
        s.user_id,
        s.surface_id,
        s.project_id,
        record.version,
        int(record.deleted),
        record.expires_at.timestamp() if record.expires_at else None,
        orjson.dumps(record.data).decode(),
    )


def _record(row: Sequence[Any]) -> ViewRecord:
    scope = {
        "tenant_id": row[1],
        "mode": row[2],
        "user_id": row[3],
        "surface_id": row[4],
        "project_id": row[5],
    }
    return trusted(
        ViewRecord,
        {
            "key": row[0],
            "scope": trusted(Scope, scope),
            "version": row[6],
            "data": orjson.loads(row[9]),
            "expires_at": datetime.fromtimestamp(row[8], UTC) if row[8] is not None else None,
            "deleted": bool(row[7]),
        },
    )


class SqliteViewStore:
    def __init__(self, db: SqliteDatabase, table: str) -> None:
        self.db = db
        self.table = table
        t = _q(table)
        self._t = t
        self._sql_get = f"SELECT {_VIEW_COLUMNS} FROM {t} WHERE key = ?"
        self._sql_put = (
            f"INSERT INTO {t} ({_VIEW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET tenant_id = excluded.tenant_id,"
            " mode = excluded.mode, user_id = excluded.user_id,"
            " surface_id = excluded.surface_id, project_id = excluded.project_id,"
            " version = excluded.version, deleted = excluded.deleted,"
            " expires_at = excluded.expires_at, data = excluded.data"
            " WHERE excluded.version > version"
        )

    @staticmethod
    def _live(record: ViewRecord | None) -> ViewRecord | None:
        if record is None or record.deleted:
            return None
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            return None
        return record

    async def get(self, key: str) -> ViewRecord | None:
        row = await self.db.fetchone(self._sql_get, (key,))
        return self._live(_record(row)) if row else None

    async def get_many(
        self, keys: Sequence[str], *, include_deleted: bool = False
    ) -> Mapping[str, ViewRecord]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ViewRecord] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            sql = (
                f"SELECT {_VIEW_COLUMNS} FROM {self._t} WHERE key IN "
                f"({', '.join('?' * len(chunk))})"
            )
            rows = await self.db.fetchall(sql, chunk)
            for row in rows:
                record: ViewRecord | None = _record(row)
                if not include_deleted:
                    record = self._live(record)
                if record is not None:
                    found[record.key] = record
        return found

    async def put(self, record: ViewRecord) -> bool:
        return await self.put_many([record]) == 1

    async def put_many(self, records: Sequence[ViewRecord]) -> int:
        if not records:
            return 0
        rows = [_row(r) for r in records]

        def job(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(self._sql_put, rows)
            return conn.total_changes - before

        return await self.db.write(job)

    async def delete(self, key: str, scope: Scope, version: int) -> bool:
        return await self.put(ViewRecord(key=key, scope=scope, version=version, deleted=True))

    async def query(self, query: ViewQuery) -> Page:
        order = f"json_extract(data, '$.{query.order_by}')"
        sql = [f"SELECT {_VIEW_COLUMNS}, {order} FROM {self._t}"]
        where = [
            "tenant_id = ?",
            "mode = ?",
            "deleted = 0",
            "(expires_at IS NULL OR expires_at > ?)",
        ]
        args: list[Any] = [query.tenant_id, query.mode, datetime.now(UTC).timestamp()]
        for column in ("user_id", "surface_id", "project_id"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.grants is not None:
            visible = []
            for grant in query.grants:
                marks = ", ".join("?" * len(grant.project_ids))
                projects = f" OR project_id IN ({marks})" if marks else ""
                visible.append(f"(surface_id = ? AND (project_id IS NULL{projects}))")
                args += [grant.surface_id, *grant.project_ids]
            where.append("(" + (" OR ".join(visible) or "0") + ")")
        for f in query.where:
            if f.op == "eq":
                where.append(f"json_extract(data, '$.{f.field}') = ?")
            else:
                where.append(
                    f"EXISTS (SELECT 1 FROM json_each(data, '$.{f.field}') WHERE value = ?)"
                )
            args.append(f.value)
        if query.cursor is not None:
            after_value, after_key = decode_cursor(query.cursor)
            where.append(f"({order}, key) {'<' if query.descending else '>'} (?, ?)")
            args += [after_value, after_key]
        direction = "DESC" if query.descending else "ASC"
        sql.append("WHERE " + " AND ".join(where))
        sql.append(f"ORDER BY {order} {direction}, key {direction} LIMIT ?")
        args.append(query.limit + 1)
        text = " ".join(sql)
        rows = await self.db.fetchall(text, args)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = tuple(_record(row) for row in rows)
        cursor = encode_cursor(rows[-1][-1], rows[-1][0]) if more else None
        return Page(items=items, next_cursor=cursor)


# -- checkpoints -----------------------------------------------------------------------------


def checkpoint_schema(table: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {_q(table)} (
            projector  TEXT PRIMARY KEY,
            position   INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    ]


class SqliteCheckpointStore:
    def __init__(self, db: SqliteDatabase, table: str) -> None:
        self.db = db
        t = _q(table)
        self._sql_get = f"SELECT position FROM {t} WHERE projector = ?"
        self._sql_all = f"SELECT projector, position FROM {t} ORDER BY projector"
        self._sql_put = (
            f"INSERT INTO {t} (projector, position, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (projector) DO UPDATE SET position = excluded.position,"
            " updated_at = excluded.updated_at WHERE excluded.position > position"
        )
        self._sql_reset = f"DELETE FROM {t} WHERE projector = ?"

    async def get(self, projector: str) -> int:
        row = await self.db.fetchone(self._sql_get, (projector,))
        return int(row[0]) if row else 0

    async def put(self, projector: str, position: int) -> None:
        now = datetime.now(UTC).isoformat()
        await self.db.write(lambda c: c.execute(self._sql_put, (projector, position, now)))

    async def reset(self, projector: str) -> None:
        await self.db.write(lambda c: c.execute(self._sql_reset, (projector,)))

    async def all(self) -> dict[str, int]:
        rows = await self.db.fetchall(self._sql_all)
        return {name: int(position) for name, position in rows}


# -- the backend the registry opens -----------------------------------------------------------


class SqliteBackend:
    """One database file shared by every route to ``sqlite``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self._schemas: set[tuple[str, str]] = set()
        self._spines: dict[str, SqliteEventStore] = {}

    async def _ensure(self, what: str, table: str, schema: list[str]) -> None:
        if (what, table) not in self._schemas:
            await self.db.write_script(schema)
            self._schemas.add((what, table))

    async def event_store(self, route: Route) -> SqliteEventStore:
        await self._ensure("spine", route.name, spine_schema(route.name))
        if route.name not in self._spines:
            self._spines[route.name] = SqliteEventStore(self.db, route.name)
        return self._spines[route.name]

    async def global_feed(self, route: Route, spine_route: Route) -> SqliteEventStore:
        """The lab feed is the spine table itself, read by position."""
        if spine_route.backend != "sqlite" or spine_route.name != route.name:
            raise RoutingError(
                f"spine_feed route sqlite:{route.name} must name the sqlite event_spine table "
                f"({spine_route.backend}:{spine_route.name})"
            )
        return await self.event_store(spine_route)

    async def view_store(self, route: Route) -> SqliteViewStore:
        await self._ensure("view", route.name, view_schema(route.name))
        return SqliteViewStore(self.db, route.name)

    async def checkpoint_store(self, route: Route) -> SqliteCheckpointStore:
        await self._ensure("checkpoints", route.name, checkpoint_schema(route.name))
        return SqliteCheckpointStore(self.db, route.name)

    async def aclose(self) -> None:
        await self.db.aclose()


async def open_backend(connections: Connections, data_dir: Path) -> SqliteBackend:
    settings = connections.sqlite
    path = Path(settings.path)
    if not path.is_absolute():
        path = data_dir / path
    db = SqliteDatabase(
        path, synchronous=settings.synchronous, busy_timeout_ms=settings.busy_timeout_ms
    )
    await db.open([])
    return SqliteBackend(db)
