"""Every view equals a fold of the spine: the check that ends each Kafka chaos test.

:func:`assert_views_are_folds_of_the_spine` builds each view afresh, with the
projectors' own runner (:meth:`ProjectorRunner.apply`) over the spine's ``scan``, in a
scratch SQLite file, and compares it with the view the deployment wrote, row for row:
every record (key, scope, version, data, tombstone, expiry) and every stream's applied
progress. A record the view lacks, holds twice-applied, or holds in excess shows, and
nothing may be parked on either side.

The views are on the deployment's SQLite file (the routes of
:mod:`tests.e2e.kafka.feed.deployment`), so both sides are read with plain SQL: the whole
table, not only the keys the fold knows.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engines.domains import DOMAINS
from engines.settings import Settings
from projections.projector import Projector
from projections.runner import ProjectorRunner
from routing.backends.sqlite import open_backend as open_sqlite
from routing.backends.sqlite.views import applied_table
from routing.config import Connections, Route, SqliteConnection
from routing.registry import Registry
from spine.store import EventStore
from spine.upcasting import Upcasters

PROJECTORS: dict[str, Projector] = {p.name: p for d in DOMAINS for p in d.projectors}


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def view_rows(db: Path, table: str) -> list[tuple[Any, ...]]:
    return _rows(db, f'SELECT * FROM "{table}" ORDER BY key')


def applied_rows(db: Path, table: str, projector: str) -> list[tuple[Any, ...]]:
    sql = f'SELECT stream_id, seq FROM "{applied_table(table)}" WHERE projector = ? ORDER BY 1'
    return _rows(db, sql, projector)


async def spine_heads(spine: EventStore, domains: Iterable[str]) -> dict[str, int]:
    """Each stream's last seq, for the streams of ``domains`` (a scan)."""
    heads: dict[str, int] = {}
    for domain in sorted(domains):
        async for event in spine.scan(domain=domain):
            heads[event.stream_id] = max(heads.get(event.stream_id, 0), event.seq)
    return heads


async def wait_until_applied(
    settings: Settings, data_dir: Path, projector: str, *, timeout: float
) -> dict[str, int]:
    """Wait until ``projector``'s view has applied every stream of its domains to the
    spine's head (read from the spine once, when called); return those heads. Fails
    naming what is missing at the deadline."""
    registry = Registry(settings, data_dir, create=False)
    try:
        heads = await spine_heads(await registry.event_store(), PROJECTORS[projector].domains)
        view = await registry.view_store(PROJECTORS[projector].resource_kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            applied = await view.applied(projector, list(heads))
            behind = {
                s: (applied.get(s, 0), seq) for s, seq in heads.items() if applied.get(s) != seq
            }
            if not behind:
                return heads
            if loop.time() > deadline:
                shown = sorted(behind.items())[:5]
                raise AssertionError(
                    f"{projector}: {len(behind)} of {len(heads)} streams not applied to the "
                    f"spine's head within {timeout:.0f}s; (applied, head) e.g. {shown}"
                )
            await asyncio.sleep(0.1)
    finally:
        await registry.aclose()


async def assert_views_are_folds_of_the_spine(
    settings: Settings, data_dir: Path, projectors: Iterable[str], *, scratch: Path | None = None
) -> None:
    """Each of ``projectors``' views, as the deployment wrote it, equals a fresh fold of
    the spine (see the module's docstring), built in ``scratch`` (``<data_dir>/fold``)."""
    names = sorted(projectors)
    scratch = scratch or data_dir / "fold"
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    live_db = data_dir / settings.connections.sqlite.path
    fold_db = scratch / "fold.db"
    registry = Registry(settings, data_dir, create=False)
    fold = await open_sqlite(Connections(sqlite=SqliteConnection(path=str(fold_db))), scratch)
    try:
        spine = await registry.event_store()
        live_parking = await registry.parking_store()
        fold_parking = await fold.checkpoint_store(
            Route(backend="sqlite", name="fold_parking", lab=True)
        )
        for name in names:
            projector = PROJECTORS[name]
            table = settings.routes[projector.resource_kind].name
            views = await fold.view_store(Route(backend="sqlite", name=table, lab=True))
            await views.declare(projector.shapes)
            runner = ProjectorRunner(
                projector, spine=spine, views=views, parking=fold_parking, upcasters=Upcasters()
            )
            for domain in sorted(projector.domains):
                batch = []
                async for event in spine.scan(domain=domain):
                    batch.append(event)
                    if len(batch) == 500:
                        await runner.apply(batch)
                        batch = []
                await runner.apply(batch)
            assert await fold_parking.parked(name) == [], f"the fold of {name} parked events"
            assert await live_parking.parked(name) == [], f"{name} parked events"
            assert applied_rows(live_db, table, name) == applied_rows(fold_db, table, name), (
                f"{name}: the applied progress per stream differs from a fold of the spine"
            )
        for table in sorted({settings.routes[PROJECTORS[n].resource_kind].name for n in names}):
            live, folded = view_rows(live_db, table), view_rows(fold_db, table)
            assert len(live) == len(folded), f"{table}: {len(live)} records, the fold {len(folded)}"
            assert live == folded, f"{table}: records differ from a fold of the spine"
    finally:
        await fold.aclose()
        await registry.aclose()
