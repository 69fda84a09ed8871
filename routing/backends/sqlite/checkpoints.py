"""Projector positions and parked streams on SQLite: the ``projection_checkpoints``
route's table, and beside it ``<table>__parked``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from projections.parking import Parked
from routing.backends.sqlite.common import q
from routing.backends.sqlite.db import SqliteDatabase


def parked_table(table: str) -> str:
    return table + "__parked"


def checkpoint_schema(table: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {q(table)} (
            consumer   TEXT NOT NULL,
            partition  TEXT NOT NULL,
            token      TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (consumer, partition)
        ) WITHOUT ROWID""",
        f"""CREATE TABLE IF NOT EXISTS {q(parked_table(table))} (
            projector TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            parked_at TEXT NOT NULL,
            body      TEXT NOT NULL,
            PRIMARY KEY (projector, stream_id)
        ) WITHOUT ROWID""",
    ]


class SqliteCheckpointStore:
    """:class:`spine.feed.CheckpointStore` and :class:`projections.parking.ParkingStore`."""

    def __init__(self, db: SqliteDatabase, table: str) -> None:
        self.db = db
        self.table = table
        t, p = q(table), q(parked_table(table))
        self._sql_get = f"SELECT partition, token FROM {t} WHERE consumer = ?"
        self._sql_all = f"SELECT consumer, partition, token FROM {t} ORDER BY consumer, partition"
        self._sql_first = (
            f"INSERT INTO {t} (consumer, partition, token, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (consumer, partition) DO NOTHING"
        )
        self._sql_move = (
            f"UPDATE {t} SET token = ?1, updated_at = ?2"
            " WHERE consumer = ?3 AND partition = ?4 AND token = ?5 AND ?1 > token"
        )
        self._sql_reset = f"DELETE FROM {t} WHERE consumer = ?"
        self._sql_park = (
            f"INSERT INTO {p} (projector, stream_id, parked_at, body) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (projector, stream_id) DO UPDATE SET parked_at = excluded.parked_at,"
            " body = excluded.body"
        )
        self._sql_parked = f"SELECT body FROM {p} ORDER BY parked_at, projector, stream_id"
        self._sql_parked_of = (
            f"SELECT body FROM {p} WHERE projector = ? ORDER BY parked_at, stream_id"
        )
        self._sql_find = f"SELECT body FROM {p} WHERE projector = ? AND stream_id IN"
        self._sql_release = f"DELETE FROM {p} WHERE projector = ? AND stream_id = ?"

    # -- checkpoints --------------------------------------------------------------------

    async def get(self, consumer: str) -> dict[str, str]:
        return dict(await self.db.fetchall(self._sql_get, (consumer,), route=self.table))

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        now = datetime.now(UTC).isoformat()
        args: tuple[str, ...]
        if after is None:
            sql, args = self._sql_first, (consumer, partition, token, now)
        else:
            sql, args = self._sql_move, (token, now, consumer, partition, after)
        changed: int = await self.db.write(
            lambda c: c.execute(sql, args).rowcount, route=self.table
        )
        return changed == 1

    async def reset(self, consumer: str) -> None:
        await self.db.write(lambda c: c.execute(self._sql_reset, (consumer,)), route=self.table)

    async def all(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for consumer, partition, token in await self.db.fetchall(self._sql_all, route=self.table):
            out.setdefault(consumer, {})[partition] = token
        return out

    # -- parked streams -----------------------------------------------------------------

    async def park(self, parked: Parked) -> None:
        args = (
            parked.projector,
            parked.stream_id,
            parked.parked_at.isoformat(),
            parked.model_dump_json(),
        )
        await self.db.write(lambda c: c.execute(self._sql_park, args), route=self.table)

    async def parked(self, projector: str | None = None) -> list[Parked]:
        if projector is None:
            rows = await self.db.fetchall(self._sql_parked, route=self.table)
        else:
            rows = await self.db.fetchall(self._sql_parked_of, (projector,), route=self.table)
        return [Parked.model_validate_json(row[0]) for row in rows]

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        rows = await self.db.fetchall_in(
            self._sql_find, stream_ids, leading=[projector], route=self.table
        )
        parked = [Parked.model_validate_json(body) for (body,) in rows]
        return {p.stream_id: p for p in parked}

    async def release(self, projector: str, stream_id: str) -> bool:
        sql, args = self._sql_release, (projector, stream_id)
        changed: int = await self.db.write(
            lambda c: c.execute(sql, args).rowcount, route=self.table
        )
        return changed == 1
