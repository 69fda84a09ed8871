"""The embedded SQLite backend: ``lab`` mode only.

One database file per process, shared by every route to ``sqlite``:

* :mod:`.spine`: :class:`spine.EventStore` (one append-only table);
* :mod:`.feed`: :class:`spine.feed.Feed`, the spine table read by position;
* :mod:`.views`: :class:`projections.ViewStore`, with each view's applied progress;
* :mod:`.checkpoints`: :class:`spine.feed.CheckpointStore` and
  :class:`projections.parking.ParkingStore`;
* :mod:`.db`: the single writer with group commit, and the readers.

Everything but the spine tables is derived from the spine: a database written by an
older layout of those tables has them dropped on open (``PRAGMA user_version``), and
the projectors rebuild them.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from routing.backends.sqlite.checkpoints import SqliteCheckpointStore, checkpoint_schema
from routing.backends.sqlite.common import q
from routing.backends.sqlite.db import SqliteDatabase
from routing.backends.sqlite.feed import SqliteFeed
from routing.backends.sqlite.spine import SqliteEventStore, spine_schema
from routing.backends.sqlite.views import SqliteViewStore, view_schema
from routing.config import Connections, Route
from spine.errors import BackendUnavailable, RoutingError
from spine.feed import CheckpointStore
from spine.store import EventStore

__all__ = [
    "SqliteBackend",
    "SqliteCheckpointStore",
    "SqliteEventStore",
    "SqliteFeed",
    "SqliteViewStore",
    "open_backend",
]

log = logging.getLogger(__name__)

#: The layout of the derived tables (views, progress, checkpoints, parked streams).
LAYOUT_VERSION = 2


def upgrade(conn: sqlite3.Connection) -> list[str]:
    """Drop every derived table written by an older layout; return their names. Spine
    tables (those with the append-only trigger) are never touched."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= LAYOUT_VERSION:
        return []
    spines = {
        row[0]
        for row in conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ? ESCAPE '!'",
            ("%!_no!_update",),
        )
    }
    dropped = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%'"
            " ESCAPE '!'"
        ).fetchall()
        if name not in spines
    ]
    for name in dropped:
        conn.execute(f"DROP TABLE {q(name)}")
    conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
    return dropped


class SqliteBackend:
    """The stores behind every route to ``sqlite``, on one database. Without ``create``
    it adds no table (every one a store needs must exist: `engines serve` made them)."""

    def __init__(self, db: SqliteDatabase, *, create: bool = True) -> None:
        self.db = db
        self.create = create
        self._schemas: set[tuple[str, str]] = set()
        self._spines: dict[str, SqliteEventStore] = {}

    async def _ensure(self, what: str, table: str, schema: list[str]) -> None:
        if (what, table) not in self._schemas:
            if self.create:
                await self.db.write_script(schema)
            elif not await self.db.fetchone(_TABLE_EXISTS, (table,)):
                raise BackendUnavailable(
                    str(self.db.path),
                    "sqlite",
                    f"it holds no table {table!r} (`engines serve` creates it)",
                )
            self._schemas.add((what, table))

    async def event_store(self, route: Route) -> SqliteEventStore:
        await self._ensure("spine", route.name, spine_schema(route.name))
        if route.name not in self._spines:
            self._spines[route.name] = SqliteEventStore(self.db, route.name)
        return self._spines[route.name]

    async def feed(
        self, route: Route, spine: EventStore, *, checkpoints: CheckpointStore | None = None
    ) -> SqliteFeed:
        """The lab feed reads the spine's own table by position, so the spine must be
        on this database too (the route's name names nothing else)."""
        del route, checkpoints
        inner = getattr(spine, "inner", spine)  # an upcasting wrapper reads the same table
        if not isinstance(inner, SqliteEventStore) or inner.db is not self.db:
            raise RoutingError(
                "spine_feed on sqlite reads the spine's table by position: "
                "route event_spine to sqlite as well"
            )
        return SqliteFeed(inner)

    async def view_store(self, route: Route) -> SqliteViewStore:
        await self._ensure("view", route.name, view_schema(route.name))
        return SqliteViewStore(self.db, route.name, create=self.create)

    async def checkpoint_store(self, route: Route) -> SqliteCheckpointStore:
        await self._ensure("checkpoints", route.name, checkpoint_schema(route.name))
        return SqliteCheckpointStore(self.db, route.name)

    async def ping(self) -> None:
        """Raise :class:`~spine.errors.BackendUnavailable` unless the database answers
        and a write could begin now (no other process holds its write lock)."""
        self.db.check_writer()
        await self.db.fetchone("SELECT count(*) FROM sqlite_master")
        await self.db.try_write_lock()

    async def aclose(self) -> None:
        await self.db.aclose()


_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"


async def open_backend(
    connections: Connections, data_dir: Path, *, create: bool = True
) -> SqliteBackend:
    settings = connections.sqlite
    path = Path(settings.path)
    if not path.is_absolute():
        path = data_dir / path
    if not create and not path.is_file():
        raise BackendUnavailable(
            str(path),
            "sqlite",
            "no database there (`engines serve` creates it; is --data-dir right?)",
        )
    db = SqliteDatabase(
        path, synchronous=settings.synchronous, busy_timeout_ms=settings.busy_timeout_ms
    )
    await db.open(create=create)
    if create:
        dropped = await db.write(upgrade)
        if dropped:
            log.warning(
                "sqlite %s: dropped derived tables of an older layout (%s); "
                "the projectors rebuild them from the spine",
                path,
                ", ".join(dropped),
            )
    else:
        (version,) = await db.fetchone("PRAGMA user_version")
        if version < LAYOUT_VERSION:
            await db.aclose()
            raise BackendUnavailable(
                str(path), "sqlite", "written by an older build: `engines serve` upgrades it"
            )
    return SqliteBackend(db, create=create)
