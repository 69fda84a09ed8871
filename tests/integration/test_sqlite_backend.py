"""What only the SQLite lab backend does: append-only enforcement, group commit, and the
translation of every driver error."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from routing.backends.sqlite import SqliteBackend, open_backend
from routing.backends.sqlite.db import translate
from routing.backends.sqlite.spine import spine_schema
from routing.config import Connections, SqliteConnection
from spine.errors import BackendUnavailable, EnginesError, RoutingError
from spine.events import NO_STREAM
from spine.streams import stream_id
from tests.conftest import make_event
from tests.integration.conftest import lab_database, lab_route, write_lock_held


def _all_subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _all_subclasses(sub)
    return out


@pytest.mark.parametrize("driver_error", _all_subclasses(sqlite3.Error))
def test_every_driver_error_is_translated_naming_route_and_backend(
    driver_error: type[sqlite3.Error],
) -> None:
    translated = translate("notes_store", driver_error("boom"))
    assert isinstance(translated, EnginesError)
    assert isinstance(translated, BackendUnavailable)
    assert "sqlite" in str(translated)
    assert "notes_store" in str(translated)


async def test_spine_rows_cannot_be_updated_or_deleted(
    sqlite: SqliteBackend, tmp_path: Path
) -> None:
    store = await sqlite.event_store(lab_route("spine"))
    await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)
    conn = sqlite3.connect(tmp_path / "it.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE spine SET body = x'00'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM spine")
    finally:
        conn.close()


async def test_concurrent_appends_share_commits(sqlite: SqliteBackend) -> None:
    store = await sqlite.event_store(lab_route("spine"))
    before = sqlite.db.commits
    await asyncio.gather(
        *(
            store.append(stream_id("notes", "t1", "lab", f"s{i}"), [make_event()], NO_STREAM)
            for i in range(200)
        )
    )
    assert sqlite.db.commits - before < 200
    assert len([e async for e in store.scan(domain="notes")]) == 200


async def test_an_unwritable_database_is_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    connections = Connections(sqlite=SqliteConnection(path=str(blocker / "x.db")))
    with pytest.raises(BackendUnavailable, match="sqlite"):
        await open_backend(connections, tmp_path)


async def test_a_closed_database_refuses_work(tmp_path: Path) -> None:
    connections = Connections(sqlite=SqliteConnection(path=str(tmp_path / "c.db")))
    backend = await open_backend(connections, tmp_path)
    store = await backend.event_store(lab_route("spine"))
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="not open"):
        await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)
    with pytest.raises(BackendUnavailable, match="not open"):
        await store.read_stream("notes/t1/lab/a")


async def test_one_failing_job_is_undone_alone_and_the_others_commit(
    sqlite: SqliteBackend,
) -> None:
    db = sqlite.db
    await db.write_script(["CREATE TABLE t (x INTEGER PRIMARY KEY)"])

    def good(x: int) -> Any:
        return lambda c: c.execute("INSERT INTO t VALUES (?)", (x,))

    def writes_then_raises(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (100)")
        c.execute("CREATE TABLE leaked (y)")
        raise RuntimeError("bug after writing")

    def driver_error(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO missing_table VALUES (1)")

    results = await asyncio.gather(
        db.write(good(1)),
        db.write(writes_then_raises),
        db.write(good(2)),
        db.write(driver_error),
        db.write(good(3)),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[3], BackendUnavailable)
    assert [isinstance(r, BaseException) for r in results] == [False, True, False, True, False]
    rows = await db.fetchall("SELECT x FROM t ORDER BY x")
    assert rows == [(1,), (2,), (3,)]
    tables = await db.fetchall("SELECT name FROM sqlite_master WHERE name = 'leaked'")
    assert tables == []


async def test_a_write_racing_close_is_refused_not_left_hanging(tmp_path: Path) -> None:
    connections = Connections(sqlite=SqliteConnection(path=str(tmp_path / "c.db")))
    backend = await open_backend(connections, tmp_path)
    store = await backend.event_store(lab_route("spine"))
    closing = asyncio.create_task(backend.aclose())
    await asyncio.sleep(0)
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(store.append("notes/t1/lab/a", [make_event()], NO_STREAM), timeout=5)
    await closing


async def test_an_append_whose_insert_fails_in_a_group_fails_alone(
    sqlite: SqliteBackend,
) -> None:
    """The group's appends are inserted in one statement; when it fails, each append is
    redone alone under its own savepoint, so only the one that cannot be written fails."""
    store = await sqlite.event_store(lab_route("spine"))
    await sqlite.db.write_script(
        [
            "CREATE TRIGGER boom BEFORE INSERT ON spine WHEN NEW.stream_id = 'notes/t1/lab/boom'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        ]
    )
    names = ["ok1", "boom", "ok2"]
    results = await asyncio.gather(
        *(store.append(f"notes/t1/lab/{n}", [make_event()], NO_STREAM) for n in names),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "AppendResult",
        "BackendUnavailable",
        "AppendResult",
    ]
    assert "boom" in str(results[1])
    for name, length in zip(names, [1, 0, 1], strict=True):
        assert len(await store.read_stream(f"notes/t1/lab/{name}")) == length


async def test_a_database_locked_by_another_process_is_unavailable_then_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    async with lab_database(path, busy_timeout_ms=200) as backend:
        store = await backend.event_store(lab_route("spine"))
        with (
            write_lock_held(path, "BEGIN EXCLUSIVE"),
            pytest.raises(BackendUnavailable, match="locked"),
        ):
            await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)
        assert await store.read_stream("notes/t1/lab/a") == []
        result = await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)
        assert result.last_seq == 1


async def test_a_write_waits_for_a_lock_at_most_the_busy_timeout_even_behind_another(
    tmp_path: Path,
) -> None:
    """A write queued behind a group that is waiting for another process's lock does not
    wait that group's timeout and then its own: both end within one busy timeout of
    being asked."""
    path = tmp_path / "bounded.db"
    async with lab_database(path, busy_timeout_ms=1000) as backend:
        store = await backend.event_store(lab_route("spine"))
        loop = asyncio.get_running_loop()

        async def timed(name: str) -> float:
            started = loop.time()
            with pytest.raises(BackendUnavailable, match="locked"):
                await store.append(f"notes/t1/lab/{name}", [make_event()], NO_STREAM)
            return loop.time() - started

        with write_lock_held(path):
            first = asyncio.create_task(timed("a"))
            await asyncio.sleep(0.5)
            second = await timed("b")
            await first
        assert second < 1.35, f"waited {second:.2f} s for a lock with a 1 s busy timeout"


async def test_a_write_waiting_for_another_process_lock_leaves_the_loop_serving(
    tmp_path: Path,
) -> None:
    """The writer commits on the event loop's thread, but never waits for a lock there:
    while another process holds the write lock, the loop keeps running, the waiting
    group and the ones queued behind it commit, in order, once the lock is free."""
    path = tmp_path / "waiting.db"
    async with lab_database(path, busy_timeout_ms=5000) as backend:
        store = await backend.event_store(lab_route("spine"))
        with write_lock_held(path):
            first = asyncio.create_task(store.append("notes/t1/lab/a", [make_event()], NO_STREAM))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(store.append("notes/t1/lab/a", [make_event()], 1))
            # a loop blocked in the lock wait would have failed `first` by its busy timeout
            assert await store.read_stream("notes/t1/lab/a") == []
            assert not first.done()
            assert not second.done()
        assert (await first).last_seq == 1
        assert (await second).last_seq == 2


async def test_the_lab_feed_refuses_a_spine_that_is_not_on_its_database(
    sqlite: SqliteBackend, tmp_path: Path
) -> None:
    connections = Connections(sqlite=SqliteConnection(path=str(tmp_path / "other.db")))
    other = await open_backend(connections, tmp_path)
    try:
        elsewhere = await other.event_store(lab_route("spine"))
        with pytest.raises(RoutingError, match="route event_spine to sqlite"):
            await sqlite.feed(lab_route("feed"), elsewhere)
    finally:
        await other.aclose()


async def test_the_database_file_is_private_to_its_owner(tmp_path: Path) -> None:
    connections = Connections(sqlite=SqliteConnection(path=str(tmp_path / "d" / "p.db")))
    backend = await open_backend(connections, tmp_path)
    try:
        store = await backend.event_store(lab_route("spine"))
        await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)
        for path in (tmp_path / "d").iterdir():
            assert path.stat().st_mode & 0o077 == 0, path
        assert (tmp_path / "d").stat().st_mode & 0o077 == 0
    finally:
        await backend.aclose()


async def test_derived_tables_of_an_older_layout_are_dropped_and_the_spine_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    with conn:
        for statement in spine_schema("spine"):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO spine (stream_id, seq, command_id, hash, body) VALUES (?, 1, 'c', 'h', ?)",
            ("notes/t1/lab/a", b"{}"),
        )
        conn.execute("CREATE TABLE projection_checkpoints (projector TEXT, position INTEGER)")
        conn.execute("CREATE TABLE notes (key TEXT PRIMARY KEY, version INTEGER)")
    conn.close()

    backend = await open_backend(Connections(sqlite=SqliteConnection(path=str(path))), tmp_path)
    try:
        checkpoints = await backend.checkpoint_store(lab_route("projection_checkpoints"))
        assert await checkpoints.get("notes") == {}
        views = await backend.view_store(lab_route("notes"))
        assert await views.applied("notes", ["notes/t1/lab/a"]) == {}
    finally:
        await backend.aclose()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM spine").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_writer_whose_batch_blows_up_answers_it_and_goes_on_with_a_new_connection(
    sqlite: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await sqlite.event_store(lab_route("spine"))
    real = sqlite.db._run_open_batch
    calls = 0

    def once(conn: Any, batch: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(conn, batch)

    monkeypatch.setattr(sqlite.db, "_run_open_batch", once)
    with pytest.raises(BackendUnavailable, match="writer failed"):
        await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)

    result = await store.append("notes/t1/lab/a", [make_event()], NO_STREAM)

    assert result.last_seq == 1
    await sqlite.ping()


async def test_the_wal_starts_over_while_a_writer_keeps_writing(tmp_path: Path) -> None:
    """The writer leaves checkpoints to a thread of their own; the WAL must still be
    copied back and started over while appends keep coming (without that, 2,000
    appends of 1 KB grow it past 30 MB)."""
    path = tmp_path / "wal.db"
    async with lab_database(path) as backend:
        store = await backend.event_store(lab_route("spine"))
        for i in range(2_000):
            event = make_event(payload={"text": "x" * 1_000})
            await store.append(f"notes/t1/lab/s{i}", [event], NO_STREAM)
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal < 8 * 2**20, f"the WAL grew to {wal} bytes"
        assert len([e async for e in store.scan(domain="notes")]) == 2_000


async def test_a_spine_with_the_old_command_index_gets_the_new_one_and_still_dedupes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    event = make_event(command_id="cmd-1")
    async with lab_database(path) as backend:
        store = await backend.event_store(lab_route("spine"))
        await store.append("notes/t1/lab/a", [event], NO_STREAM)
    conn = sqlite3.connect(path)
    with conn:  # the index as an earlier build made it
        conn.execute('DROP INDEX "spine_command_id"')
        conn.execute('CREATE INDEX "spine_command" ON spine (stream_id, command_id)')
    conn.close()

    async with lab_database(path) as backend:
        store = await backend.event_store(lab_route("spine"))
        again = await store.append("notes/t1/lab/a", [event], NO_STREAM)
        assert again.deduplicated
        indexes = await backend.db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spine'"
            " AND sql IS NOT NULL"
        )
        assert indexes == [("spine_command_id",)]


async def test_a_declared_query_shape_is_answered_from_its_index_without_a_sort(
    sqlite: SqliteBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections.telemetry import ORDER, events_index
    from projections.views import Filter, ViewQuery, encode_cursor

    views = await sqlite.view_store(lab_route("telemetry"))
    await views.declare(events_index().shapes)
    issued: list[tuple[str, list[Any]]] = []
    fetchall = views.db.fetchall

    async def capture(sql: str, args: Any, **kw: Any) -> Any:
        issued.append((sql, list(args)))
        return await fetchall(sql, args, **kw)

    monkeypatch.setattr(views.db, "fetchall", capture)
    own_run = ViewQuery(
        tenant_id="t1",
        mode="lab",
        user_id="u1",
        where=(
            Filter(field="run_id", value="r1"),
            Filter(field=ORDER, op="ge", value="2026-01-01T00:00:00.000000Z"),
        ),
        order_by=ORDER,
        descending=False,
    )
    tenant_run = own_run.model_copy(update={"user_id": None})
    await views.query(own_run)
    await views.query(tenant_run)
    cursor = encode_cursor("2026-01-02T00:00:00.000000Z", "k")
    run_only = (Filter(field="run_id", value="r1"),)  # no time bound but the cursor's
    await views.query(own_run.model_copy(update={"cursor": cursor, "where": run_only}))
    await views.query(
        tenant_run.model_copy(update={"cursor": cursor, "where": run_only, "descending": True})
    )

    conn = sqlite3.connect(tmp_path / "it.db")
    try:
        for sql, args in issued:
            plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
            assert "USING INDEX telemetry__" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
            if " OR key " in sql or "(?, ?)" in sql:
                # a later page starts at the cursor: a range of the index, not a re-read
                assert "<expr>>?" in plan or "<expr><?" in plan, plan
    finally:
        conn.close()
