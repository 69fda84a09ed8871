"""The spine on SQLite: one table, append-only by trigger, numbered by a position that
is assigned inside the write transaction (so commit order is position order, which the
lab feed relies on: :mod:`routing.backends.sqlite.feed`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import orjson

from routing.backends.sqlite.common import decode_rows, decode_strict, q
from routing.backends.sqlite.db import Grouped, Outcome, SqliteDatabase
from spine.appending import (
    MAX_SEQ,
    appended,
    check_expected_version,
    check_seq_range,
    validate_append,
)
from spine.codec import encode, seal_after
from spine.errors import ConcurrencyError, EnginesError, ImportConflict
from spine.events import (
    GENESIS_HASH,
    AppendResult,
    EventEnvelope,
    ExpectedVersion,
    Mode,
    NewEvent,
)
from spine.feed import Delivered
from spine.importing import ImportResult, command_runs, plan_import, validate_import
from spine.streams import parse_stream_id, scan_scope

if TYPE_CHECKING:
    from routing.backends.sqlite.feed import SqliteFeed


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
        # Command ids first: they are time-ordered, so a group's new entries land at the
        # index's end together instead of in one page per stream (FULL, raw sqlite3, 100
        # appends per commit: ~28k -> ~45k a second). Replaces (stream_id, command_id).
        f"DROP INDEX IF EXISTS {q(table + '_command')}",
        f"CREATE INDEX IF NOT EXISTS {q(table + '_command_id')} ON {t} (command_id, stream_id)",
        f"""CREATE TRIGGER IF NOT EXISTS {q(table + "_no_update")} BEFORE UPDATE ON {t}
            BEGIN SELECT RAISE(ABORT, 'spine events are append-only'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {q(table + "_no_delete")} BEFORE DELETE ON {t}
            BEGIN SELECT RAISE(ABORT, 'spine events are append-only'); END""",
    ]


def _rows(
    chain: Iterable[tuple[EventEnvelope, bytes]],
) -> list[tuple[str, int, str, str, bytes]]:
    """The rows that store sealed events (each with its stored form): what an append
    and an import insert."""
    return [(e.stream_id, e.seq, e.command_id, e.hash, body) for e, body in chain]


@dataclass(frozen=True, slots=True)
class _Append:
    stream_id: str
    command_id: str
    events: tuple[NewEvent, ...]
    expected: ExpectedVersion


class SqliteEventStore:
    """:class:`spine.EventStore` on one SQLite table."""

    def __init__(self, db: SqliteDatabase, table: str) -> None:
        self.db = db
        self.table = table
        self.appended: Counter[str] = Counter()
        """Appends this process committed, per domain (what wakes the feed's readers)."""
        self._append_waiters: list[tuple[frozenset[str] | None, asyncio.Future[None]]] = []
        t = q(table)
        # for each (stream, command) pair: the stream's head, and whether the stream
        # holds the command already; each an index seek
        self._sql_heads = (
            "WITH w (sid, cmd) AS (SELECT json_extract(value, '$[0]'),"
            " json_extract(value, '$[1]') FROM json_each(?1))"
            f" SELECT w.sid, w.cmd, h.seq, h.hash, EXISTS (SELECT 1 FROM {t}"
            " WHERE stream_id = w.sid AND command_id = w.cmd)"
            f" FROM w LEFT JOIN {t} AS h ON h.stream_id = w.sid"
            f" AND h.seq = (SELECT max(seq) FROM {t} WHERE stream_id = w.sid)"
        )
        # the same for one pair, in the same shape (no row: no stream, so no command)
        self._sql_head = (
            "SELECT ?1, ?2, seq, hash, EXISTS (SELECT 1 FROM"
            f" {t} WHERE command_id = ?2 AND stream_id = ?1) FROM {t} WHERE stream_id = ?1"
            " ORDER BY seq DESC LIMIT 1"
        )
        # the original events of a repeated command, by the command index (`+` keeps
        # the planner off the stream's index, which would scan the whole stream)
        self._sql_dedup = (
            f"SELECT stream_id, seq, body FROM {t} WHERE +stream_id = ? AND command_id = ?"
            " ORDER BY seq"
        )
        # which of a list of commands the stream holds already, each at its first seq
        self._sql_commands = (
            f"SELECT command_id, min(seq) FROM {t} WHERE command_id IN"
            " (SELECT value FROM json_each(?2)) AND stream_id = ?1 GROUP BY command_id"
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

    def own_feed(self) -> SqliteFeed:
        """The feed by global position over this table (:class:`spine.feed.PositionedStore`)."""
        from routing.backends.sqlite.feed import SqliteFeed

        return SqliteFeed(self)

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        command_id, events = validate_append(stream_id, events, expected_version)
        request = _Append(stream_id, command_id, events, expected_version)
        job: Grouped[_Append, AppendResult] = Grouped(self._append_many, request)
        # an event costs ~10 µs to seal and insert, an append ~40 µs more around it
        result = await self.db.write(job, route=self.table, weight=1 + len(events) // 32)
        if not result.deduplicated:
            self._committed(stream_id.split("/", 1)[0])
        return result

    def appends(self, domains: frozenset[str] | None) -> int:
        """How many appends to ``domains`` (``None``: any) this process has committed."""
        if domains is None:
            return self.appended.total()
        return sum(self.appended[d] for d in domains)

    async def wait_for_append(
        self, domains: frozenset[str] | None, timeout: float, *, unless_past: int
    ) -> None:
        """Wait (at most ``timeout`` seconds) for this process's next append to one of
        ``domains`` (``None``: any); return at once if :meth:`appends` has moved past
        ``unless_past``. Other processes' appends are not seen: a reader finds them when
        this times out."""
        if self.appends(domains) != unless_past:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (domains, waiter)
        self._append_waiters.append(entry)
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
            # races with the waiter's result.
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            if entry in self._append_waiters:
                self._append_waiters.remove(entry)

    def _committed(self, domain: str) -> None:
        self.appended[domain] += 1
        waiting = self._append_waiters
        if not waiting:
            return
        still: list[tuple[frozenset[str] | None, asyncio.Future[None]]] = []
        for domains, waiter in waiting:
            if domains is None or domain in domains:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((domains, waiter))
        self._append_waiters = still

    def _append_many(self, conn: sqlite3.Connection, requests: list[_Append]) -> list[Outcome]:
        """Every append queued in one group: one query for the heads and the commands
        already stored, the checks in Python, one ``executemany`` for all rows. An append
        that is refused writes nothing and the others go on; if the insert itself fails,
        the writer redoes each append alone (see :class:`Grouped`)."""
        if len(requests) == 1:  # a lone append: two plain index seeks are cheaper
            found = conn.execute(
                self._sql_head, (requests[0].stream_id, requests[0].command_id)
            ).fetchall()
        else:
            pairs = orjson.dumps([(r.stream_id, r.command_id) for r in requests])
            found = conn.execute(self._sql_heads, (pairs,)).fetchall()
        heads: dict[str, tuple[int, str]] = {}
        stored: set[tuple[str, str]] = set()
        for sid, command, seq, digest, known in found:
            if seq is not None:
                heads[sid] = (seq, digest)
            if known:
                stored.add((sid, command))
        now = datetime.now(UTC)
        outcomes: list[Outcome] = []
        sealed: dict[tuple[str, str], list[EventEnvelope]] = {}
        rows: list[tuple[str, int, str, str, bytes]] = []
        for request in requests:
            key = (request.stream_id, request.command_id)
            try:
                if key in sealed:  # the same command twice in one group
                    result = appended(request.stream_id, sealed[key], deduplicated=True)
                elif key in stored:
                    original = decode_strict(conn.execute(self._sql_dedup, key).fetchall())
                    result = appended(request.stream_id, original, deduplicated=True)
                else:
                    actual, prev_hash = heads.get(request.stream_id, (0, GENESIS_HASH))
                    check_expected_version(request.stream_id, request.expected, actual)
                    chain = seal_after(
                        request.events,
                        stream_id=request.stream_id,
                        head=actual,
                        prev_hash=prev_hash,
                        recorded_at=now,
                    )
                    rows += _rows(chain)
                    envelopes = [e for e, _ in chain]
                    heads[request.stream_id] = (envelopes[-1].seq, envelopes[-1].hash)
                    sealed[key] = envelopes
                    result = appended(request.stream_id, envelopes)
            except EnginesError as exc:
                outcomes.append((False, exc))
            else:
                outcomes.append((True, result))
        if rows:
            try:
                conn.executemany(self._sql_insert, rows)
            except sqlite3.IntegrityError as exc:  # a seq taken: only another writer could
                if len(requests) > 1 or "UNIQUE" not in str(exc):
                    raise  # each append alone names its own; not a conflict at all
                (request,) = requests
                actual = heads[request.stream_id][0] - len(request.events)
                raise ConcurrencyError(request.stream_id, request.expected, actual) from exc
        return outcomes

    async def import_events(
        self, stream_id: str, events: Sequence[EventEnvelope], *, dry_run: bool = False
    ) -> ImportResult:
        """As :class:`spine.EventStore` says, in one transaction whatever the number of
        events: the stream is read, compared and written under the write lock, so no
        other writer moves it meanwhile. The rows get positions as appended rows do, so
        the global feed delivers them."""
        batch = validate_import(stream_id, events)
        job = partial(self._import, stream_id=stream_id, events=batch, dry_run=dry_run)
        if dry_run:
            return await self.db.read(job, route=self.table)
        result = await self.db.write(job, route=self.table, weight=1 + len(batch) // 32)
        if result.written:
            self._committed(stream_id.split("/", 1)[0])
        return result

    def _import(
        self,
        conn: sqlite3.Connection,
        *,
        stream_id: str,
        events: tuple[EventEnvelope, ...],
        dry_run: bool,
    ) -> ImportResult:
        first, last = events[0].seq, events[-1].seq
        held = decode_strict(
            conn.execute(self._sql_read, (stream_id, max(first - 1, 1), last)).fetchall()
        )
        plan = plan_import(stream_id, events, held)
        if plan.new:
            runs = {command_id: seq for command_id, seq, _ in command_runs(plan.new)}
            found = conn.execute(
                self._sql_commands, (stream_id, orjson.dumps(list(runs)))
            ).fetchall()
            if found:
                command_id, seq = min(found, key=lambda row: runs[row[0]])
                raise ImportConflict(
                    stream_id,
                    runs[command_id],
                    f"command {command_id!r} is in the stream already, at seq {seq}",
                )
            if not dry_run:
                conn.executemany(self._sql_insert, _rows((e, encode(e)) for e in plan.new))
        return ImportResult(
            stream_id=stream_id,
            first_seq=first,
            last_seq=last,
            written=len(plan.new),
            already=plan.already,
            dry_run=dry_run,
        )

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        check_seq_range(from_seq, to_seq)
        upper = to_seq if to_seq is not None else MAX_SEQ
        args = (stream_id, from_seq, upper)
        return await self.db.read(partial(self._read, args=args), route=self.table)

    async def find_command(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        parse_stream_id(stream_id)
        args = (stream_id, command_id)
        return await self.db.read(partial(self._find, args=args), route=self.table)

    def _find(self, conn: sqlite3.Connection, args: tuple[object, ...]) -> list[EventEnvelope]:
        return decode_strict(conn.execute(self._sql_dedup, args).fetchall())

    def _read(self, conn: sqlite3.Connection, args: tuple[object, ...]) -> list[EventEnvelope]:
        """A stream's range, loaded in the reader thread (off the event loop)."""
        return decode_strict(conn.execute(self._sql_read, args).fetchall())

    async def scan(
        self,
        *,
        domain: str | None = None,
        tenant_id: str | None = None,
        mode: Mode | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[EventEnvelope]:
        scope = scan_scope(domain, tenant_id, mode)
        prefix = scope.prefix  # a range of the (stream_id, seq) index; the rest filtered
        exact = scope.by_prefix
        upper = prefix + "\U0010ffff"
        after_stream, after_seq = "", 0
        while True:
            args = (prefix, upper, after_stream, after_stream, after_seq, batch_size)
            rows, events = await self.db.read(
                partial(self._scan_batch, args=args), route=self.table
            )
            for event in events:
                if exact or scope.holds(event.stream_id):
                    yield event
            if len(rows) < batch_size:
                return
            after_stream, after_seq = rows[-1][0], rows[-1][1]

    def _scan_batch(
        self, conn: sqlite3.Connection, args: tuple[object, ...]
    ) -> tuple[list[tuple[str, int, bytes]], list[EventEnvelope]]:
        rows = conn.execute(self._sql_scan, args).fetchall()
        return rows, decode_strict(rows)

    async def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]:
        """As :meth:`scan` of ``domain``, an undecodable event as
        :class:`~spine.feed.Unreadable` (what an audit reads: a bad body is one bad event
        of its stream, not the end of the scan)."""
        prefix = scan_scope(domain).prefix
        upper = prefix + "\U0010ffff"
        after_stream, after_seq = "", 0
        while True:
            args = (prefix, upper, after_stream, after_stream, after_seq, batch_size)
            rows = await self.db.read(partial(self._scan_rows, args=args), route=self.table)
            for event in decode_rows(rows):
                yield event
            if len(rows) < batch_size:
                return
            after_stream, after_seq = rows[-1][0], rows[-1][1]

    def _scan_rows(
        self, conn: sqlite3.Connection, args: tuple[object, ...]
    ) -> list[tuple[str, int, bytes]]:
        rows: list[tuple[str, int, bytes]] = conn.execute(self._sql_scan, args).fetchall()
        return rows
