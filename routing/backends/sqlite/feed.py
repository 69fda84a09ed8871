"""The lab feed: the spine table read in position order, as one partition.

Positions are assigned inside the single writer's transaction, so they become visible
in order: a reader that has seen position ``p`` never later sees a new event below
``p``, and a checkpoint at ``p`` loses nothing. The token is the position as 20 decimal
digits, so tokens sort as positions do.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Mapping

from routing.backends.sqlite.common import decode_rows, q
from routing.backends.sqlite.db import SqliteDatabase
from routing.backends.sqlite.spine import SqliteEventStore
from spine.errors import IntegrityError
from spine.feed import CheckpointStore, Delivered, FeedBatch

log = logging.getLogger(__name__)

PARTITION = "all"

_Rows = list[tuple[int, str, int, bytes | None]]


def token(position: int) -> str:
    return f"{position:020d}"


def position_of(value: str | None) -> int:
    if value is None:
        return 0
    if len(value) != 20 or not value.isdigit():
        raise IntegrityError(f"checkpoint {value!r} is not a position of the sqlite feed")
    return int(value)


class SqliteFeed:
    """:class:`spine.feed.Feed` over a :class:`SqliteEventStore`'s table."""

    def __init__(self, spine: SqliteEventStore) -> None:
        self.spine = spine
        self.db: SqliteDatabase = spine.db
        self.table = q(spine.table)
        self.route = spine.table
        self._sql_head = f"SELECT coalesce(max(position), 0) FROM {self.table}"

    def _sql_read(self, domains: frozenset[str] | None) -> str:
        body = "body"
        if domains is not None:
            wanted = ", ".join("'" + d.replace("'", "''") + "/'" for d in sorted(domains))
            domain = "substr(stream_id, 1, instr(stream_id, '/'))"
            body = f"CASE WHEN {domain} IN ({wanted}) THEN body END"
        return (
            f"SELECT position, stream_id, seq, {body} FROM {self.table}"
            " WHERE position > ? ORDER BY position LIMIT ?"
        )

    def subscribe(
        self,
        consumer: str,
        checkpoints: CheckpointStore,
        *,
        domains: frozenset[str] | None = None,
        batch_size: int = 1000,
    ) -> SqliteSubscription:
        return SqliteSubscription(
            self, consumer, checkpoints, self._sql_read(domains), batch_size, domains
        )

    async def head(self) -> int:
        row = await self.db.fetchone(self._sql_head, route=self.route)
        return int(row[0])

    async def heads(self) -> dict[str, str]:
        return {PARTITION: token(await self.head())}

    async def lag(self, positions: Mapping[str, str]) -> dict[str, int | None]:
        behind = await self.head() - position_of(positions.get(PARTITION))
        return {PARTITION: behind if behind >= 0 else None}  # past the head: not ours

    async def read(self, sql: str, after: int, limit: int) -> tuple[int, int, list[Delivered]]:
        """Up to ``limit`` rows after ``after``: (rows read, last position, the asked-for
        events decoded), decoded in a reader thread."""

        def run(conn: sqlite3.Connection) -> tuple[int, int, list[Delivered]]:
            rows: _Rows = conn.execute(sql, (after, limit)).fetchall()
            if not rows:
                return 0, after, []
            wanted = [(r[1], r[2], body) for r in rows if (body := r[3]) is not None]
            return len(rows), rows[-1][0], decode_rows(wanted)

        return await self.db.read(run, route=self.route)


class SqliteSubscription:
    def __init__(
        self,
        feed: SqliteFeed,
        consumer: str,
        checkpoints: CheckpointStore,
        sql: str,
        batch_size: int,
        domains: frozenset[str] | None = None,
    ) -> None:
        self.feed = feed
        self.domains = domains
        self.consumer = consumer
        self.checkpoints = checkpoints
        self.sql = sql
        self.batch_size = batch_size
        self._token: str | None = None
        """The position delivered up to."""
        self._stored: str | None = None
        """The checkpoint as this subscription last read or wrote it."""
        self._loaded = False
        self._prefetch: tuple[int, int, asyncio.Task[tuple[int, int, list[Delivered]]]] | None = (
            None
        )
        """A read begun ahead: after which position, this process's appends when it began,
        and the read."""

    async def _load(self) -> None:
        """Take the stored checkpoint (it may have been reset or moved elsewhere). One
        past the head was not written by a feed (positions only grow): it is forgotten
        and the partition read from its start (a replay the consumer takes as a no-op)."""
        stored = (await self.checkpoints.get(self.consumer)).get(PARTITION)
        if stored is not None and position_of(stored) > await self.feed.head():
            log.error(
                "checkpoint %s of %s is past the head of the sqlite feed: reading it again "
                "from the start",
                stored,
                self.consumer,
            )
            await self.checkpoints.reset(self.consumer)
            stored = None
        if stored != self._stored:
            self._drop_prefetch()
            self._token = stored
        self._stored, self._loaded = stored, True

    async def _read(self, after: int) -> tuple[int, tuple[int, int, list[Delivered]]]:
        """This process's appends (to the domains asked for) when the read began, and
        the read: an append counted there is in the read, or comes after it."""
        if self._prefetch is not None and self._prefetch[0] == after:
            _, appends, task = self._prefetch
            self._prefetch = None
            return appends, await task
        self._drop_prefetch()
        appends = self.feed.spine.appends(self.domains)
        return appends, await self.feed.read(self.sql, after, self.batch_size)

    async def next_batch(self, timeout: float) -> FeedBatch | None:
        if not self._loaded:
            await self._load()
        after = position_of(self._token)
        appends, (read, last, events) = await self._read(after)
        if not read and timeout > 0:
            # Woken by this process's appends to the domains asked for (not by every
            # commit: each write would wake every projector); others' are seen when it
            # times out.
            await self.feed.spine.wait_for_append(self.domains, timeout, unless_past=appends)
            if self._token == self._stored:
                await self._load()  # a reset while idle is followed from here
            after = position_of(self._token)
            _, (read, last, events) = await self._read(after)
        if not read:
            return None
        if read == self.batch_size:  # more is probably waiting: read it while this applies
            self._prefetch = (
                last,
                self.feed.spine.appends(self.domains),
                asyncio.create_task(self.feed.read(self.sql, last, self.batch_size)),
            )
        batch = FeedBatch(PARTITION, events, token(last), read)
        self._token = batch.token
        return batch

    async def commit(self, batch: FeedBatch) -> bool:
        if batch.token == self._stored:
            return True
        if await self.checkpoints.put(
            self.consumer, batch.partition, batch.token, after=self._stored
        ):
            self._stored = batch.token
            return True
        await self._load()
        return False

    def _drop_prefetch(self) -> None:
        if self._prefetch is not None:
            task = self._prefetch[2]
            self._prefetch = None
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def aclose(self) -> None:
        self._drop_prefetch()
