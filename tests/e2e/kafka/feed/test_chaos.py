"""Chaos on the Kafka spine feed: a projector killed while it works through a backlog,
one stopped while thousands of events are appended, the broker restarted while writes
go on. Each ends with every budget's totals as its events say (a double apply would
show in ``spent_minor``) and the view equal to a fold of the spine.

The writer is this test's own runtime (its relay publishes what it appends); the
projector is ``engines projections run budgets``, a process of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from engines.runtime import bootstrap
from engines.settings import Settings
from projections.budget import DEBITED, LIMIT_SET
from routing.backends.sqlite.views import applied_table
from spine.events import NO_STREAM, new_id
from spine.store import EventStore
from tests.conftest import make_event
from tests.e2e.kafka.feed.deployment import (
    eventually,
    positions,
    run_projectors,
    settings_of,
    write_routes,
)
from tests.e2e.kafka.feed.fold import assert_views_are_folds_of_the_spine, wait_until_applied
from tests.servers.fixtures import TansuOnS3

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PROJECTOR = "budgets"
TABLE = "budgets"


def budget_stream(name: str) -> str:
    return f"budget/t1/lab/{name}"


async def append_budget(spine: EventStore, stream_id: str, debits: int) -> int:
    """A budget's limit and ``debits`` debits of 1, 2, 3... minor units, in one append;
    returns what it spent."""
    command = new_id()  # one append, one command
    limit = {"limit_minor": 10**12, "scale": 2, "currency": "EUR"}
    events = [make_event(LIMIT_SET, payload=limit, command_id=command)]
    events += [
        make_event(DEBITED, payload={"amount_minor": n}, command_id=command)
        for n in range(1, debits + 1)
    ]
    await spine.append(stream_id, events, NO_STREAM)
    return debits * (debits + 1) // 2


async def append_budgets(
    spine: EventStore, prefix: str, budgets: int, debits: int
) -> dict[str, int]:
    """``budgets`` budgets (see :func:`append_budget`); what each spent, by stream id."""
    spent = {}
    for i in range(budgets):
        stream_id = budget_stream(f"{prefix}-{i}")
        spent[stream_id] = await append_budget(spine, stream_id, debits)
    return spent


def applied_events(data_dir: Path) -> int:
    """How many events the budgets view has applied, over every stream."""
    conn = sqlite3.connect(data_dir / "engines.db")
    try:
        sql = f'SELECT COALESCE(SUM(seq), 0) FROM "{applied_table(TABLE)}" WHERE projector = ?'
        (total,) = conn.execute(sql, (PROJECTOR,)).fetchone()
        return int(total)
    finally:
        conn.close()


def assert_totals(data_dir: Path, spent: dict[str, int]) -> None:
    """Each budget's view shows exactly what its debits spent, at its last seq."""
    conn = sqlite3.connect(data_dir / "engines.db")
    try:
        rows = conn.execute(f'SELECT key, version, data FROM "{TABLE}" WHERE key NOT LIKE "%#%"')
        shown = {key: (version, orjson.loads(data)["spent_minor"]) for key, version, data in rows}
    finally:
        conn.close()
    assert {k: v[1] for k, v in shown.items()} == spent, "spent_minor (a double apply shows)"


async def live(settings: Settings, data_dir: Path) -> dict[str, str]:
    return await eventually(
        lambda: positions(settings, data_dir, PROJECTOR),
        timeout=30,
        what="the budgets projector stores its positions on the topic (it is live)",
    )


async def test_a_projector_killed_mid_backlog_is_replaced_and_applies_nothing_twice(
    routes: Path, kafka_settings: Settings, tmp_path: Path, unique: str
) -> None:
    total = 40 * 100
    first = await run_projectors(routes, tmp_path, [PROJECTOR])
    with first:
        await live(kafka_settings, tmp_path)
        async with bootstrap(kafka_settings, tmp_path, run_projectors=False) as writer:
            spent = await append_budgets(writer.spine, unique, budgets=40, debits=99)

            async def applying() -> int:
                return applied_events(tmp_path)

            await eventually(applying, timeout=30, what="the projector applies", every=0.005)
            first.kill()
        at_kill = applied_events(tmp_path)
    assert 0 < at_kill < total, f"killed mid-backlog: {at_kill} of {total} applied"

    with await run_projectors(routes, tmp_path, [PROJECTOR]):
        await wait_until_applied(kafka_settings, tmp_path, PROJECTOR, timeout=60)

    assert applied_events(tmp_path) == total
    assert_totals(tmp_path, spent)
    await assert_views_are_folds_of_the_spine(kafka_settings, tmp_path, [PROJECTOR])


async def test_a_projector_far_behind_catches_up(
    routes: Path, kafka_settings: Settings, tmp_path: Path, unique: str
) -> None:
    with await run_projectors(routes, tmp_path, [PROJECTOR]):
        await live(kafka_settings, tmp_path)
    async with bootstrap(kafka_settings, tmp_path, run_projectors=False) as writer:
        spent = await append_budgets(writer.spine, unique, budgets=50, debits=99)
        assert await writer.feed.relay.flush(everything=True)  # type: ignore[attr-defined]
    assert applied_events(tmp_path) == 0, "stopped while the events were appended"

    with await run_projectors(routes, tmp_path, [PROJECTOR]):
        await wait_until_applied(kafka_settings, tmp_path, PROJECTOR, timeout=60)

    assert applied_events(tmp_path) == 50 * 100
    assert_totals(tmp_path, spent)
    await assert_views_are_folds_of_the_spine(kafka_settings, tmp_path, [PROJECTOR])


async def test_a_broker_restart_while_writes_go_on_loses_nothing(
    tansu_on_s3: TansuOnS3, topic: str, tmp_path: Path, unique: str
) -> None:
    routes = write_routes(
        tmp_path / "etc",
        tansu_on_s3.bootstrap,
        topic,
        fetch_max_wait_ms=tansu_on_s3.fetch_max_wait_ms,
    )
    settings = settings_of(routes)
    spent: dict[str, int] = {}
    stop = asyncio.Event()

    async def write(spine: EventStore) -> None:
        while not stop.is_set():
            stream_id = budget_stream(f"{unique}-{len(spent)}")
            spent[stream_id] = await append_budget(spine, stream_id, debits=9)
            await asyncio.sleep(0.01)

    with await run_projectors(routes, tmp_path, [PROJECTOR]):
        await live(settings, tmp_path)
        async with bootstrap(settings, tmp_path, run_projectors=False) as writer:
            writing = asyncio.create_task(write(writer.spine))
            await eventually(
                lambda: asyncio.sleep(0, applied_events(tmp_path)), timeout=30, what="applying"
            )
            await asyncio.to_thread(tansu_on_s3.restart)
            before = len(spent)
            await eventually(
                lambda: asyncio.sleep(0, len(spent) > before + 20), timeout=30, what="writes go on"
            )
            stop.set()
            await writing
            await wait_until_applied(settings, tmp_path, PROJECTOR, timeout=90)

    assert_totals(tmp_path, spent)
    await assert_views_are_folds_of_the_spine(settings, tmp_path, [PROJECTOR])
