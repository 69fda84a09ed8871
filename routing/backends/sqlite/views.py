"""Views on SQLite: one table per view, and beside it the applied progress of every
projector and stream that writes it (``<view>__applied``), committed together."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from projections.views import (
    SCOPE_FIELDS,
    Page,
    QueryShape,
    ViewQuery,
    ViewRecord,
    ViewWrite,
    decode_cursor,
    encode_cursor,
    too_large,
)
from routing.backends.sqlite.common import q
from routing.backends.sqlite.db import SqliteDatabase
from spine.codec import trusted
from spine.events import Scope


def applied_table(table: str) -> str:
    return table + "__applied"


def view_schema(table: str) -> list[str]:
    t = q(table)
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
        f"CREATE INDEX IF NOT EXISTS {q(table + '_scope')} ON {t} (tenant_id, mode, user_id)",
        f"""CREATE TABLE IF NOT EXISTS {q(applied_table(table))} (
            projector TEXT    NOT NULL,
            stream_id TEXT    NOT NULL,
            seq       INTEGER NOT NULL,
            PRIMARY KEY (projector, stream_id)
        ) WITHOUT ROWID""",
    ]


_COLUMNS = (
    "key, tenant_id, mode, user_id, surface_id, project_id, version, deleted, expires_at, data"
)
_SET_ALL = (
    "tenant_id = ?2, mode = ?3, user_id = ?4, surface_id = ?5, project_id = ?6,"
    " version = ?7, deleted = ?8, expires_at = ?9, data = ?10"
)


def _row(record: ViewRecord, *extra: Any) -> tuple[Any, ...]:
    """The record's columns in ``_COLUMNS`` order, then ``extra``."""
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
        *extra,
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


def _field(name: str) -> str:
    """The SQL of a field a query filters or orders by: a scope column, or the data
    field's ``json_extract`` (written the one way, so an index on it is used)."""
    return name if name in SCOPE_FIELDS else f"json_extract(data, '$.{name}')"


_RANGE = {"ge": ">=", "lt": "<"}


class SqliteViewStore:
    """:class:`projections.ViewStore` on one table (and its ``__applied`` companion).
    ``create``: :meth:`declare` may build indexes (not in a read-only tool)."""

    #: SQLite would take any size in one transaction; the bound keeps one write (and
    #: the writer's turn it takes) short.
    max_write_records = 10_000

    def __init__(self, db: SqliteDatabase, table: str, *, create: bool = True) -> None:
        self.db = db
        self.table = table
        self.create = create
        t = self._t = q(table)
        a = q(applied_table(table))
        self._sql_get = f"SELECT {_COLUMNS} FROM {t} WHERE key = ?"
        self._sql_get_in = f"SELECT {_COLUMNS} FROM {t} WHERE key IN"
        self._sql_put = (
            f"INSERT INTO {t} ({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            f" ON CONFLICT (key) DO UPDATE SET {_SET_ALL} WHERE ?7 > version"
        )
        # compare-and-set: a new key only if absent; an update only from the version read
        self._sql_create = (
            f"INSERT INTO {t} ({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            " ON CONFLICT (key) DO NOTHING"
        )
        self._sql_replace = f"UPDATE {t} SET {_SET_ALL} WHERE key = ?1 AND version = ?11"
        # the usual replace keeps the record's scope, so the scope index is not touched
        self._sql_replace_in_scope = (
            f"UPDATE {t} SET version = ?7, deleted = ?8, expires_at = ?9, data = ?10"
            " WHERE key = ?1 AND version = ?11 AND tenant_id = ?2 AND mode = ?3"
            " AND user_id IS ?4 AND surface_id IS ?5 AND project_id IS ?6"
        )
        self._sql_progress_new = (
            f"INSERT INTO {a} (projector, stream_id, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (projector, stream_id) DO NOTHING"
        )
        self._sql_progress = (
            f"UPDATE {a} SET seq = ?1 WHERE projector = ?2 AND stream_id = ?3 AND seq = ?4"
        )
        self._sql_applied = f"SELECT stream_id, seq FROM {a} WHERE projector = ? AND stream_id IN"
        self._sql_records = f"SELECT {_COLUMNS} FROM {t} WHERE key > ?1"
        self._sql_progress_page = (
            f"SELECT stream_id, seq FROM {a} WHERE projector = ?1 AND stream_id > ?2"
        )
        self._sql_purge = f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t}"
        self._sql_purge_progress = f"DELETE FROM {a}"

    @staticmethod
    def _live(record: ViewRecord | None) -> ViewRecord | None:
        if record is None or record.deleted:
            return None
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            return None
        return record

    async def get(self, key: str) -> ViewRecord | None:
        row = await self.db.fetchone(self._sql_get, (key,), route=self.table)
        return self._live(_record(row)) if row else None

    async def get_many(
        self, keys: Sequence[str], *, include_deleted: bool = False
    ) -> Mapping[str, ViewRecord]:
        found: dict[str, ViewRecord] = {}
        for row in await self.db.fetchall_in(self._sql_get_in, keys, route=self.table):
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

        return await self.db.write(job, route=self.table, weight=1 + len(rows) // 10)

    async def delete(self, key: str, scope: Scope, version: int) -> bool:
        return await self.put(ViewRecord(key=key, scope=scope, version=version, deleted=True))

    async def applied(self, projector: str, stream_ids: Sequence[str]) -> dict[str, int]:
        rows = await self.db.fetchall_in(
            self._sql_applied, stream_ids, leading=[projector], route=self.table
        )
        return dict(rows)

    async def commit(self, projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        if not writes:
            return []
        too_large(writes, self.max_write_records)
        # The usual case, nobody else writing this view and no record changing scope, is
        # one pass with each kind of statement together: every create before any replace
        # keeps each key's history in order (a key is created once, then only replaced).
        creates: list[tuple[Any, ...]] = []
        replaces: list[tuple[Any, ...]] = []
        firsts: list[tuple[Any, ...]] = []
        moves: list[tuple[Any, ...]] = []
        for write in writes:
            for record, replaced in write.records:
                if replaced == 0:
                    creates.append(_row(record))
                else:
                    replaces.append(_row(record, replaced))
            if write.applied_from == 0:
                firsts.append((projector, write.stream_id, write.applied_to))
            else:
                moves.append((write.applied_to, projector, write.stream_id, write.applied_from))
        single_pass = [
            (self._sql_create, creates),
            (self._sql_replace_in_scope, replaces),
            (self._sql_progress_new, firsts),
            (self._sql_progress, moves),
        ]
        expected = len(creates) + len(replaces) + len(firsts) + len(moves)

        def job(conn: sqlite3.Connection) -> list[str]:
            conn.execute("SAVEPOINT view_commit")
            try:
                before = conn.total_changes
                for sql, rows in single_pass:
                    if rows:
                        conn.executemany(sql, rows)
                if conn.total_changes - before == expected:
                    refused = []
                else:
                    refused = self._one_by_one(conn, projector, writes)
            except BaseException:
                conn.execute("ROLLBACK TO view_commit")
                conn.execute("RELEASE view_commit")
                raise
            conn.execute("RELEASE view_commit")
            return refused

        # a row costs ~4 µs, a tenth of an append (the writer's unit of weight)
        return await self.db.write(job, route=self.table, weight=1 + expected // 10)

    def _one_by_one(
        self, conn: sqlite3.Connection, projector: str, writes: Sequence[ViewWrite]
    ) -> list[str]:
        """Undo the single pass and go write by write, each under its own savepoint; a
        write refused, or one touching a record a refused write touched, is undone."""
        conn.execute("ROLLBACK TO view_commit")
        refused: list[str] = []
        lost: set[str] = set()
        for write in writes:
            keys = {r.key for r, _ in write.records}
            if not keys & lost:
                conn.execute("SAVEPOINT view_write")
                before = conn.total_changes
                statements = self._statements(projector, write)
                for sql, args in statements:
                    conn.execute(sql, args)
                ok = conn.total_changes - before == len(statements)
                if not ok:
                    conn.execute("ROLLBACK TO view_write")
                conn.execute("RELEASE view_write")
                if ok:
                    continue
            refused.append(write.stream_id)
            lost |= keys
        return refused

    def _statements(self, projector: str, write: ViewWrite) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements of one write, in order, each of which must change one row (a
        replace here may also change the record's scope)."""
        statements = [
            (self._sql_replace, _row(record, replaced))
            if replaced
            else (self._sql_create, _row(record))
            for record, replaced in write.records
        ]
        if write.applied_from == 0:
            statements.append(
                (self._sql_progress_new, (projector, write.stream_id, write.applied_to))
            )
        else:
            progress = (write.applied_to, projector, write.stream_id, write.applied_from)
            statements.append((self._sql_progress, progress))
        return statements

    async def declare(self, shapes: Sequence[QueryShape]) -> None:
        """One index per shape: tenant, mode, the equal fields, the order field, key (so
        a page is an index range, read in order, with no sort)."""
        if not self.create or not shapes:
            return
        script = []
        for shape in shapes:
            columns = ", ".join(
                ["tenant_id", "mode", *map(_field, shape.equal), _field(shape.order_by), "key"]
            )
            index = q(f"{self.table}__{shape.name}")
            script.append(f"CREATE INDEX IF NOT EXISTS {index} ON {self._t} ({columns})")
        await self.db.write_script(script)

    async def query(self, query: ViewQuery) -> Page:
        order = _field(query.order_by)
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
                projects = f"project_id IN ({marks})" if marks else "project_id IS NULL"
                visible.append(f"(surface_id = ? AND {projects})")
                args += [grant.surface_id, *grant.project_ids]
            where.append("(" + (" OR ".join(visible) or "0") + ")")
        for f in query.where:
            if f.op == "eq":
                where.append(f"{_field(f.field)} = ?")
            elif f.op in _RANGE:
                where.append(f"{_field(f.field)} {_RANGE[f.op]} ?")
            else:
                where.append(
                    f"EXISTS (SELECT 1 FROM json_each(data, '$.{f.field}') WHERE value = ?)"
                )
            args.append(f.value)
        if query.cursor is not None:
            after_value, after_key = decode_cursor(query.cursor)
            # ``(order, key) > (?, ?)``, spelled so that the order field bounds an index
            # range (SQLite does not take a row value of an expression as one, and each
            # page would re-read the index from the first entry)
            past = "<" if query.descending else ">"
            where.append(f"{order} {past}= ? AND ({order} {past} ? OR key {past} ?)")
            args += [after_value, after_value, after_key]
        direction = "DESC" if query.descending else "ASC"
        sql = (
            f"SELECT {_COLUMNS}, {order} FROM {self._t} WHERE {' AND '.join(where)}"
            f" ORDER BY {order} {direction}, key {direction} LIMIT ?"
        )
        args.append(query.limit + 1)
        rows = await self.db.fetchall(sql, args, route=self.table)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = tuple(_record(row) for row in rows)
        cursor = encode_cursor(rows[-1][-1], rows[-1][0]) if more else None
        return Page(items=items, next_cursor=cursor)

    async def records(
        self, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[ViewRecord]:
        sql = self._sql_records + (" AND tenant_id = ?2" if tenant_id is not None else "")
        sql += " ORDER BY key LIMIT ?3"
        after = ""
        while True:
            rows = await self.db.fetchall(sql, (after, tenant_id, batch_size), route=self.table)
            for row in rows:
                yield _record(row)
            if len(rows) < batch_size:
                return
            after = rows[-1][0]

    async def progress(
        self, projector: str, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, int]]:
        sql = self._sql_progress_page
        if tenant_id is not None:
            sql += f" AND {_TENANT_OF_STREAM} = ?3"
        sql += " ORDER BY stream_id LIMIT ?4"
        after = ""
        while True:
            args = (projector, after, tenant_id, batch_size)
            rows = await self.db.fetchall(sql, args, route=self.table)
            for stream_id, seq in rows:
                yield stream_id, seq
            if len(rows) < batch_size:
                return
            after = rows[-1][0]

    async def purge(self, *, tenant_id: str | None = None, batch_size: int = 5000) -> int:
        """Deleted a chunk of ``batch_size`` records a write, so the writer is never
        held for long (other views' projectors write between the chunks)."""
        records = self._sql_purge
        progress = self._sql_purge_progress
        if tenant_id is not None:
            records += " WHERE tenant_id = ?1"
            progress += f" WHERE {_TENANT_OF_STREAM} = ?1"
        records += " LIMIT ?2)"
        args = (tenant_id, batch_size)

        def chunk(conn: sqlite3.Connection) -> int:
            return conn.execute(records, args).rowcount

        deleted = 0
        while n := await self.db.write(chunk, route=self.table, weight=1 + batch_size // 10):
            deleted += n

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute(progress, () if tenant_id is None else (tenant_id,))

        await self.db.write(forget, route=self.table)
        return deleted


#: A stream id's second segment (its tenant), in SQL.
_TENANT_OF_STREAM = (
    "substr(stream_id, instr(stream_id, '/') + 1,"
    " instr(substr(stream_id, instr(stream_id, '/') + 1), '/') - 1)"
)
