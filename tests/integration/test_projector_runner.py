"""The projector runner on the lab backend: checkpoints, idempotent and monotonic apply,
gap repair from the spine, crash replay, and read-your-writes waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from commands.envelope import Command
from commands.handler import execute
from commands.notes import CreateNote, DeleteNote, NotesDecider, UpdateNote
from projections.notes import NotesProjector
from projections.runner import ProjectorRunner
from projections.views import CheckpointStore
from routing.backends.sqlite import SqliteBackend
from spine.events import Scope
from tests.conftest import make_event
from tests.integration.conftest import lab_route

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")


class Notes:
    """A small harness: notes commands against the spine and a runner over the view."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend

    async def open(self, checkpoints: CheckpointStore | None = None) -> Notes:
        self.spine = await self.backend.event_store(lab_route("spine"))
        self.views = await self.backend.view_store(lab_route("notes"))
        self.checkpoints = checkpoints or await self.backend.checkpoint_store(lab_route("cp"))
        self.runner = self.new_runner()
        return self

    def new_runner(self, **kw: Any) -> ProjectorRunner:
        return ProjectorRunner(
            NotesProjector(),
            feed=self.spine,
            spine=self.spine,
            views=self.views,
            checkpoints=self.checkpoints,
            **kw,
        )

    async def do(self, payload: Any) -> int:
        cmd = Command[Any](scope=ALICE, payload=payload)
        return (await execute(self.spine, NotesDecider(), cmd)).version

    async def view(self, note_id: str) -> Any:
        return await self.views.get(f"notes/t1/lab/{note_id}")


@pytest.fixture
async def notes(sqlite: SqliteBackend) -> Notes:
    return await Notes(sqlite).open()


async def test_catch_up_materializes_the_view_and_checkpoints_the_head(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A", tags=["x"]))
    await notes.do(CreateNote(note_id="b", title="B"))
    await notes.do(UpdateNote(note_id="a", title="A2", tags=["y"]))
    await notes.do(DeleteNote(note_id="b"))
    assert await notes.runner.catch_up() == 4
    a = await notes.view("a")
    assert (a.version, a.data["title"], a.data["tags"]) == (2, "A2", ["y"])
    assert a.data["created_at"] <= a.data["updated_at"]
    assert await notes.view("b") is None
    status = await notes.runner.status()
    assert (status.checkpoint, status.lag) == (status.head, 0)


async def test_a_restarted_runner_resumes_from_its_checkpoint(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.runner.catch_up()
    await notes.do(UpdateNote(note_id="a", title="A2"))
    fresh = notes.new_runner()
    assert await fresh.catch_up() == 1  # only the new event is read
    assert (await notes.view("a")).data["title"] == "A2"


async def test_replaying_the_whole_feed_changes_nothing(notes: Notes) -> None:
    for i in range(5):
        await notes.do(CreateNote(note_id=f"n{i}", title=f"T{i}"))
        await notes.do(UpdateNote(note_id=f"n{i}", title=f"U{i}"))
    await notes.runner.catch_up()
    before = dict((await notes.views.get_many([f"notes/t1/lab/n{i}" for i in range(5)])).items())
    await notes.checkpoints.reset("notes")
    assert await notes.new_runner().catch_up() == 10
    after = await notes.views.get_many(list(before))
    assert after == before


async def test_a_gap_is_repaired_from_the_spine(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2", tags=["from-seq-2"]))
    await notes.do(UpdateNote(note_id="a", title="A3"))
    # the view holds seq 1 only, while the checkpoint already passed seq 2
    first = (await notes.spine.read_stream("notes/t1/lab/a", 1, 1))[0]
    await notes.views.put(NotesProjector().apply(None, first))
    positions = [p for p, _ in await notes.spine.read_all(0)]
    await notes.checkpoints.put("notes", positions[1])
    assert await notes.runner.catch_up() == 1
    a = await notes.view("a")
    assert (a.version, a.data["title"]) == (3, "A3")
    assert notes.runner.gaps_repaired == 1


async def test_events_at_or_below_the_views_version_are_skipped(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    await notes.runner.catch_up()
    view = await notes.view("a")
    await notes.views.put(
        view.model_copy(update={"version": 9, "data": {**view.data, "title": "ahead"}})
    )
    await notes.checkpoints.reset("notes")
    await notes.new_runner().catch_up()
    assert (await notes.view("a")).data["title"] == "ahead"


class CrashOnce:
    """A checkpoint store that fails the first put: the process 'dies' after the view
    write and before the checkpoint."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner, self.crashed = inner, False

    async def get(self, projector: str) -> int:
        return await self.inner.get(projector)

    async def put(self, projector: str, position: int) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("killed")
        await self.inner.put(projector, position)

    async def reset(self, projector: str) -> None:
        await self.inner.reset(projector)

    async def all(self) -> dict[str, int]:
        return await self.inner.all()


async def test_a_crash_between_view_write_and_checkpoint_replays_harmlessly(
    sqlite: SqliteBackend,
) -> None:
    base = await sqlite.checkpoint_store(lab_route("cp"))
    notes = await Notes(sqlite).open(CrashOnce(base))  # type: ignore[arg-type]
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    with pytest.raises(RuntimeError, match="killed"):
        await notes.runner.catch_up()
    assert await base.get("notes") == 0
    assert await notes.runner.catch_up() == 2
    a = await notes.view("a")
    assert (a.version, a.data["title"]) == (2, "A2")


async def test_wait_for_returns_once_the_view_reflects_the_seq(notes: Notes) -> None:
    task = asyncio.create_task(notes.runner.run())
    try:
        version = await notes.do(CreateNote(note_id="a", title="A"))
        assert await notes.runner.wait_for("notes/t1/lab/a", version, timeout=2)
        assert (await notes.view("a")).version == version
        assert await notes.runner.wait_for("notes/t1/lab/a", version, timeout=0)  # already
    finally:
        task.cancel()
    version = await notes.do(UpdateNote(note_id="a", title="A2"))
    assert not await notes.runner.wait_for("notes/t1/lab/a", version, timeout=0.05)
    assert notes.runner._waiters == {}


async def test_the_runner_ignores_streams_of_other_domains(notes: Notes) -> None:
    await notes.spine.append(
        "audit/t1/lab/r1", [make_event("audit.access_denied", family="audit")], 0
    )
    await notes.do(CreateNote(note_id="a", title="A"))
    assert await notes.runner.catch_up() == 2
    assert (await notes.view("a")).version == 1


async def test_small_batches_read_ahead_and_still_apply_everything_in_order(
    notes: Notes,
) -> None:
    for i in range(3):
        await notes.do(CreateNote(note_id=f"n{i}", title="t"))
        await notes.do(UpdateNote(note_id=f"n{i}", title=f"u{i}"))
    await notes.do(DeleteNote(note_id="n1"))
    runner = notes.new_runner(batch_size=2)
    assert await runner.catch_up() == 7
    status = await runner.status()
    assert (status.checkpoint, status.lag) == (status.head, 0)
    assert [(await notes.view(f"n{i}")) is None for i in range(3)] == [False, True, False]
    assert (await notes.view("n2")).data["title"] == "u2"


async def test_a_failed_batch_leaves_no_read_ahead_running(notes: Notes) -> None:
    for i in range(5):
        await notes.do(CreateNote(note_id=f"n{i}", title="t"))
    runner = notes.new_runner(batch_size=2)
    real_put_many = notes.views.put_many
    calls = 0

    async def fail_once(records: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk full")
        return await real_put_many(records)

    runner.views.put_many = fail_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="disk full"):
        await runner.catch_up()
    assert runner._prefetch is None
    assert await runner.catch_up() == 5
    assert all([await notes.view(f"n{i}") for i in range(5)])


async def test_a_view_written_ahead_by_someone_else_is_never_moved_back(notes: Notes) -> None:
    """The runner's cache may lag the store; conditional puts keep the store right."""
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.runner.catch_up()
    view = await notes.view("a")
    ahead = {"version": 9, "data": {**view.data, "title": "ahead"}}
    await notes.views.put(view.model_copy(update=ahead))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    await notes.runner.catch_up()  # its cache still says version 1
    assert ((await notes.view("a")).version, (await notes.view("a")).data["title"]) == (9, "ahead")


async def test_a_waiter_is_woken_when_the_store_is_ahead_of_the_runners_cache(
    notes: Notes,
) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.runner.catch_up()  # caches version 1
    waiting = asyncio.create_task(notes.runner.wait_for("notes/t1/lab/a", 3, timeout=1))
    await asyncio.sleep(0.01)  # registered, and saw version 1 in the store
    view = await notes.view("a")
    await notes.views.put(view.model_copy(update={"version": 3}))  # someone got ahead
    await notes.do(UpdateNote(note_id="a", title="A2"))  # seq 2: its put is refused
    await notes.runner.catch_up()
    assert await waiting
