"""The projector runner and its feed loop on the lab backend: checkpoints per partition,
applied progress per stream, gap repair from the spine, crash replay, parked events,
bounded caches, and read-your-writes waits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from commands.envelope import Command
from commands.handler import execute
from commands.notes import CreateNote, DeleteNote, NotesDecider, UpdateNote
from projections.driver import FeedLoop, projector_status
from projections.notes import NotesProjector
from projections.projector import next_version
from projections.runner import ProjectorRunner
from projections.views import ViewRecord, ViewWrite
from routing.backends.sqlite import SqliteBackend
from spine.errors import InvalidInput
from spine.events import NO_STREAM, EventEnvelope, Scope
from spine.feed import CheckpointStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.integration.conftest import lab_route

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")


class Notes:
    """Notes commands against the spine, and a runner with its feed loop over the view."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend

    async def open(self, checkpoints: CheckpointStore | None = None) -> Notes:
        self.spine = await self.backend.event_store(lab_route("spine"))
        self.feed = await self.backend.feed(lab_route("feed"), self.spine)
        self.views = await self.backend.view_store(lab_route("notes"))
        self.parking = await self.backend.checkpoint_store(lab_route("cp"))
        self.checkpoints = checkpoints or self.parking
        self.runner = self.new_runner()
        self.loop = self.new_loop(self.runner)
        return self

    def new_runner(self, projector: Any = None, **kw: Any) -> ProjectorRunner:
        return ProjectorRunner(
            projector or NotesProjector(),
            spine=self.spine,
            views=self.views,
            parking=self.parking,
            **kw,
        )

    def new_loop(self, runner: ProjectorRunner, **kw: Any) -> FeedLoop:
        return FeedLoop(runner, self.feed, self.checkpoints, **kw)

    async def do(self, payload: Any, scope: Scope = ALICE) -> int:
        cmd = Command[Any](scope=scope, payload=payload)
        return (await execute(self.spine, NotesDecider(), cmd)).version

    async def view(self, note_id: str, tenant: str = "t1") -> Any:
        return await self.views.get(f"notes/{tenant}/lab/{note_id}")

    async def status(self, name: str = "notes") -> Any:
        return await projector_status(name, self.feed, self.checkpoints, self.parking)


@pytest.fixture
async def notes(sqlite: SqliteBackend) -> Notes:
    return await Notes(sqlite).open()


async def test_catch_up_materializes_the_view_and_checkpoints_the_head(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A", tags=["x"]))
    await notes.do(CreateNote(note_id="b", title="B"))
    await notes.do(UpdateNote(note_id="a", title="A2", tags=["y"]))
    await notes.do(DeleteNote(note_id="b"))

    assert await notes.loop.catch_up() == 4

    a = await notes.view("a")
    assert (a.version, a.data["title"], a.data["tags"]) == (2, "A2", ["y"])
    assert a.data["created_at"] <= a.data["updated_at"]
    assert await notes.view("b") is None
    status = await notes.status()
    assert status.lag == 0
    assert status.parked == 0
    assert [p.partition for p in status.partitions] == list(await notes.feed.heads())
    assert await notes.runner.applied(["notes/t1/lab/a", "notes/t1/lab/b"]) == {
        "notes/t1/lab/a": 2,
        "notes/t1/lab/b": 2,
    }


async def test_a_restarted_runner_resumes_from_its_checkpoint(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.loop.catch_up()
    await notes.do(UpdateNote(note_id="a", title="A2"))

    fresh = notes.new_loop(notes.new_runner())

    assert await fresh.catch_up() == 1  # only the new event is read
    assert (await notes.view("a")).data["title"] == "A2"


async def test_replaying_the_whole_feed_applies_nothing_twice(notes: Notes) -> None:
    for i in range(5):
        await notes.do(CreateNote(note_id=f"n{i}", title=f"T{i}"))
        await notes.do(UpdateNote(note_id=f"n{i}", title=f"U{i}"))
    await notes.loop.catch_up()
    keys = [f"notes/t1/lab/n{i}" for i in range(5)]
    before = dict(await notes.views.get_many(keys))

    await notes.checkpoints.reset("notes")
    runner = notes.new_runner()
    assert await notes.new_loop(runner).catch_up() == 10
    events = [e async for e in notes.spine.scan(domain="notes")]
    assert await runner.apply(events) == 0

    assert await notes.views.get_many(keys) == before


async def test_a_gap_is_repaired_from_the_spine(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2", tags=["from-seq-2"]))
    await notes.do(UpdateNote(note_id="a", title="A3"))
    events = await notes.spine.read_stream("notes/t1/lab/a")
    assert await notes.runner.apply(events[:1]) == 1

    assert await notes.runner.apply(events[2:]) == 2  # seq 2 never delivered

    a = await notes.view("a")
    assert (a.version, a.data["title"], a.data["tags"]) == (3, "A3", [])
    assert notes.runner.gaps_repaired == 1


async def test_gaps_between_delivered_events_are_each_repaired_in_order(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    for i in range(2, 7):
        await notes.do(UpdateNote(note_id="a", title=f"A{i}", tags=[f"seq-{i}"]))
    events = await notes.spine.read_stream("notes/t1/lab/a")

    # seqs 1, 3, 4 and 6 delivered: 2 and 5 are read from the spine, in their places
    assert await notes.runner.apply([events[0], events[2], events[3], events[5]]) == 6

    a = await notes.view("a")
    assert (a.version, a.data["title"], a.data["tags"]) == (6, "A6", ["seq-6"])
    assert notes.runner.gaps_repaired == 2
    assert await notes.views.applied("notes", ["notes/t1/lab/a"]) == {"notes/t1/lab/a": 6}


async def test_events_the_view_has_applied_are_passed_over(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    events = await notes.spine.read_stream("notes/t1/lab/a")
    assert await notes.runner.apply(events) == 2

    assert await notes.runner.apply(events) == 0
    assert await notes.runner.apply(events[:1]) == 0
    assert await notes.new_runner().apply(events) == 0  # a cold cache asks the store


class CrashOnce:
    """A checkpoint store that fails the first move: the process 'dies' after the view
    write and before the checkpoint."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner, self.crashed = inner, False

    async def get(self, consumer: str) -> dict[str, str]:
        return await self.inner.get(consumer)

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("killed")
        return await self.inner.put(consumer, partition, token, after=after)

    async def reset(self, consumer: str) -> None:
        await self.inner.reset(consumer)

    async def all(self) -> dict[str, dict[str, str]]:
        return await self.inner.all()


async def test_a_crash_between_view_write_and_checkpoint_replays_harmlessly(
    sqlite: SqliteBackend,
) -> None:
    base = await sqlite.checkpoint_store(lab_route("cp"))
    notes = await Notes(sqlite).open(CrashOnce(base))
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    with pytest.raises(RuntimeError, match="killed"):
        await notes.loop.catch_up()
    assert await base.get("notes") == {}

    runner = notes.new_runner()
    assert await notes.new_loop(runner).catch_up() == 2

    a = await notes.view("a")
    assert (a.version, a.data["title"]) == (2, "A2")
    assert runner.gaps_repaired == 0


async def test_the_runner_ignores_streams_of_other_domains(notes: Notes) -> None:
    await notes.spine.append(
        "audit/t1/lab/r1", [make_event("audit.access_denied", family="audit")], 0
    )
    await notes.do(CreateNote(note_id="a", title="A"))
    assert await notes.loop.catch_up() == 2
    assert (await notes.view("a")).version == 1
    assert await notes.views.applied("notes", ["audit/t1/lab/r1"]) == {}


async def test_small_batches_read_ahead_and_still_apply_everything_in_order(
    notes: Notes,
) -> None:
    for i in range(3):
        await notes.do(CreateNote(note_id=f"n{i}", title="t"))
        await notes.do(UpdateNote(note_id=f"n{i}", title=f"u{i}"))
    await notes.do(DeleteNote(note_id="n1"))
    loop = notes.new_loop(notes.new_runner(), batch_size=2)
    assert await loop.catch_up() == 7
    assert (await notes.status()).lag == 0
    assert [(await notes.view(f"n{i}")) is None for i in range(3)] == [False, True, False]
    assert (await notes.view("n2")).data["title"] == "u2"


async def test_a_store_failure_fails_the_batch_and_a_retry_applies_it(notes: Notes) -> None:
    for i in range(5):
        await notes.do(CreateNote(note_id=f"n{i}", title="t"))
    runner = notes.new_runner()
    real_commit = notes.views.commit
    calls = 0

    async def fail_once(projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            from spine.errors import BackendUnavailable

            raise BackendUnavailable("notes_store", "sqlite", "disk full")
        return await real_commit(projector, writes)

    runner.views.commit = fail_once  # type: ignore[method-assign]
    loop = notes.new_loop(runner, batch_size=2)
    with pytest.raises(Exception, match="disk full"):
        await loop.catch_up()
    assert await notes.parking.parked("notes") == []  # a store failure is not poison
    assert await loop.catch_up() == 5
    assert all([await notes.view(f"n{i}") for i in range(5)])


async def test_a_stale_cache_never_moves_a_view_back(notes: Notes) -> None:
    """Another runner (another process) applied events this runner's cache has not
    seen: the conditional commit is refused, the runner reloads, nothing goes back."""
    await notes.do(CreateNote(note_id="a", title="A"))
    events = await notes.spine.read_stream("notes/t1/lab/a")
    assert await notes.runner.apply(events) == 1  # caches version 1
    await notes.do(UpdateNote(note_id="a", title="A2"))
    await notes.do(UpdateNote(note_id="a", title="A3"))
    events = await notes.spine.read_stream("notes/t1/lab/a")
    assert await notes.new_runner().apply(events) == 2  # the other process

    assert await notes.runner.apply(events[1:2]) == 0  # the stale one, behind

    a = await notes.view("a")
    assert (a.version, a.data["title"]) == (3, "A3")
    assert await notes.views.applied("notes", ["notes/t1/lab/a"]) == {"notes/t1/lab/a": 3}


async def test_one_stale_stream_in_a_batch_is_redone_while_the_others_commit_at_once(
    notes: Notes,
) -> None:
    """The batch's writes go to the store together; the one stream whose conditions no
    longer hold (another runner moved it) is refused alone, reloaded and redone in the
    same call, and the others land in the first commit."""
    for name in "abc":
        await notes.do(CreateNote(note_id=name, title=name))
    firsts = [e async for e in notes.spine.scan(domain="notes")]
    assert await notes.runner.apply(firsts) == 3  # caches each record at version 1
    for name in "abc":
        await notes.do(UpdateNote(note_id=name, title=name + "2"))
    b = await notes.spine.read_stream("notes/t1/lab/b")
    assert await notes.new_runner().apply(b) == 1  # the other process: b is at 2 now
    await notes.do(UpdateNote(note_id="b", title="b3"))
    events = [e async for e in notes.spine.scan(domain="notes")]
    commits: list[tuple[list[str], list[str]]] = []
    real_commit = notes.views.commit

    async def recorded(projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        refused = await real_commit(projector, writes)
        commits.append(([w.stream_id for w in writes], refused))
        return refused

    notes.views.commit = recorded  # type: ignore[method-assign]
    try:
        taken = await notes.runner.apply(events)
    finally:
        notes.views.commit = real_commit  # type: ignore[method-assign]

    a, b_, c = (f"notes/t1/lab/{n}" for n in "abc")
    assert commits == [([a, b_, c], [b_]), ([b_], [])]
    assert taken == 3  # a's and c's updates, and b's last (its first came from elsewhere)
    for name, version, title in (("a", 2, "a2"), ("b", 3, "b3"), ("c", 2, "c2")):
        record = await notes.view(name)
        assert (record.version, record.data["title"]) == (version, title)
    assert await notes.views.applied("notes", [a, b_, c]) == {a: 2, b_: 3, c: 2}


async def test_two_runners_racing_over_the_same_events_apply_each_once(notes: Notes) -> None:
    scopes = [ALICE.model_copy(update={"tenant_id": f"t{i % 3}"}) for i in range(30)]
    for i, scope in enumerate(scopes):
        await notes.do(CreateNote(note_id=f"n{i}", title="t"), scope)
    counter = TenantCount()
    runners = [notes.new_runner(counter), notes.new_runner(counter)]
    events = [e async for e in notes.spine.scan(domain="notes")]

    taken = await asyncio.gather(*(r.apply(events) for r in runners))

    assert sum(taken) == 30
    counts = await notes.views.get_many(["count/t0", "count/t1", "count/t2"])
    assert {k: r.data["notes"] for k, r in counts.items()} == {
        "count/t0": 10,
        "count/t1": 10,
        "count/t2": 10,
    }


# -- views that fold several streams, and views with one record per event ------------------


class TenantCount:
    """A per-tenant view over every note stream: how many notes were created."""

    name = "note_counts"
    domains = frozenset({"notes"})
    resource_kind = "notes_store"

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return (f"count/{event.tenant_id}",)

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        if event.event_type != "note.created":
            return ()
        key = f"count/{event.tenant_id}"
        current = records.get(key)
        n = current.data["notes"] if current else 0
        scope = Scope(tenant_id=event.tenant_id, mode=event.mode)
        return (
            ViewRecord(key=key, scope=scope, version=next_version(current), data={"notes": n + 1}),
        )


class History:
    """One record per event: never read back, only added."""

    name = "note_history"
    domains = frozenset({"notes"})
    resource_kind = "notes_store"

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return (f"history/{event.stream_id}/{event.seq}",)

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        key = f"history/{event.stream_id}/{event.seq}"
        return (ViewRecord(key=key, scope=event.scope, version=1, data={"type": event.event_type}),)


async def test_a_view_folding_several_streams_tracks_each_streams_progress(
    notes: Notes,
) -> None:
    """The case that compared seqs of different streams: stream a at seq 3 must not make
    stream c's seq 1 look applied."""
    a, c = stream_id("notes", "t1", "lab", "a"), stream_id("notes", "t1", "lab", "c")
    for seq in range(3):
        await notes.spine.append(a, [make_event("note.created")], seq or NO_STREAM)
    await notes.spine.append(c, [make_event("note.created")], NO_STREAM)
    loop = notes.new_loop(notes.new_runner(TenantCount()))

    assert await loop.catch_up() == 4

    record = await notes.views.get("count/t1")
    assert record is not None
    assert record.data["notes"] == 4
    assert await notes.views.applied("note_counts", [a, c]) == {a: 3, c: 1}
    await notes.checkpoints.reset("note_counts")
    await notes.new_loop(notes.new_runner(TenantCount())).catch_up()
    again = await notes.views.get("count/t1")
    assert again is not None
    assert again.data["notes"] == 4  # a replay adds nothing


async def test_a_projector_may_write_one_new_record_per_event(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="B"))
    loop = notes.new_loop(notes.new_runner(History()))
    await loop.catch_up()
    sid = "notes/t1/lab/a"
    found = await notes.views.get_many([f"history/{sid}/1", f"history/{sid}/2"])
    assert [r.data["type"] for r in found.values()] == ["note.created", "note.updated"]


class Wide(History):
    """``width`` new records per event."""

    name = "note_wide"

    def __init__(self, width: int) -> None:
        self.width = width

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return ()

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        return tuple(
            ViewRecord(key=f"wide/{event.stream_id}/{event.seq}/{i}", scope=event.scope, version=1)
            for i in range(self.width)
        )


async def test_a_stream_whose_changes_exceed_one_store_write_is_split_over_several(
    notes: Notes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that takes at most 5 records in one write (DynamoDB: 99) gets a stream's 7
    events of 2 records each as writes of 2 events, each atomic with its progress."""
    monkeypatch.setattr(notes.views, "max_write_records", 5)
    commits: list[int] = []
    commit = notes.views.commit

    async def counted(projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        commits.extend(len(w.records) for w in writes)
        return await commit(projector, writes)

    monkeypatch.setattr(notes.views, "commit", counted)
    sid = stream_id("notes", "t1", "lab", "a")
    await notes.spine.append(
        sid, [make_event("note.created", command_id="c") for _ in range(7)], NO_STREAM
    )

    applied = await notes.new_runner(Wide(2)).apply(await notes.spine.read_stream(sid))

    assert applied == 7
    assert commits == [4, 4, 4, 2]
    found = await notes.views.get_many([f"wide/{sid}/{n}/{i}" for n in range(1, 8) for i in (0, 1)])
    assert len(found) == 14
    assert await notes.views.applied("note_wide", [sid]) == {sid: 7}


async def test_an_event_whose_changes_alone_exceed_one_store_write_is_parked(
    notes: Notes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notes.views, "max_write_records", 2)
    sid = stream_id("notes", "t1", "lab", "a")
    await notes.spine.append(sid, [make_event("note.created")], NO_STREAM)

    runner = notes.new_runner(Wide(3))
    assert await runner.apply(await notes.spine.read_stream(sid)) == 0

    parked = await notes.parking.find("note_wide", [sid])
    assert "changes 3 records" in parked[sid].error
    assert "at most 2" in parked[sid].error
    assert await notes.views.get(f"wide/{sid}/1/0") is None


async def test_a_write_the_store_cannot_take_parks_its_event_and_every_other_goes_on(
    notes: Notes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store refuses a commit holding a record too large for it (a cloud store's item
    limit) as invalid, whole: the runner finds the one event, parks it (its stream held
    back) and writes everything else, instead of retrying the batch for ever."""
    commit = notes.views.commit

    async def limited(projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        for w in writes:  # a's event 2 made a record too large (whatever came after it)
            if w.stream_id == "notes/t1/lab/a" and w.applied_from < 2 <= w.applied_to:
                raise InvalidInput("a record of 2 MB; this store takes 1 MiB a document")
        return await commit(projector, writes)

    monkeypatch.setattr(notes.views, "commit", limited)
    await notes.do(CreateNote(note_id="a", title="fine"))
    await notes.do(UpdateNote(note_id="a", title="huge"))
    await notes.do(UpdateNote(note_id="a", title="after"))
    await notes.do(CreateNote(note_id="b", title="other"))
    runner = notes.new_runner()

    applied = await runner.apply([e async for e in notes.spine.scan()])

    assert applied == 2  # a's first event, and b
    assert (await notes.view("a")).data["title"] == "fine"
    assert (await notes.view("b")).data["title"] == "other"
    parked = await notes.parking.find("notes", ["notes/t1/lab/a"])
    assert parked["notes/t1/lab/a"].seq == 2
    assert "takes 1 MiB a document" in parked["notes/t1/lab/a"].error


# -- poison events ---------------------------------------------------------------------------


class Fussy(NotesProjector):
    """The notes projector, failing on any note titled ``boom``."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        if event.payload.get("title") == "boom":
            self.calls += 1
            raise ValueError("cannot project a boom")
        return super().apply(event, records)


async def test_a_failing_event_is_parked_and_every_other_stream_goes_on(notes: Notes) -> None:
    other = ALICE.model_copy(update={"tenant_id": "t2"})
    await notes.do(CreateNote(note_id="bad", title="fine"))
    await notes.do(UpdateNote(note_id="bad", title="boom"))
    await notes.do(UpdateNote(note_id="bad", title="after"))
    await notes.do(CreateNote(note_id="good", title="g"), other)
    projector = Fussy()
    loop = notes.new_loop(notes.new_runner(projector))

    await loop.catch_up()

    assert (await notes.view("good", tenant="t2")).data["title"] == "g"
    bad = await notes.view("bad")
    assert (bad.version, bad.data["title"]) == (1, "fine")  # held back at seq 1
    (parked,) = await notes.parking.parked("notes")
    assert (parked.stream_id, parked.seq, parked.event_type) == (
        "notes/t1/lab/bad",
        2,
        "note.updated",
    )
    assert "cannot project a boom" in parked.error
    assert parked.attempts == projector.calls == 3
    assert (await notes.status()).lag == 0  # the feed went on
    assert (await notes.status()).parked == 1


async def test_a_parked_stream_stays_held_back_as_new_events_arrive(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="bad", title="boom"))
    loop = notes.new_loop(notes.new_runner(Fussy()))
    await loop.catch_up()
    await notes.do(UpdateNote(note_id="bad", title="fixed later"))

    await loop.catch_up()

    assert await notes.view("bad") is None
    assert [p.seq for p in await notes.parking.parked("notes")] == [1]


async def test_retry_applies_a_parked_stream_once_its_projector_can(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="bad", title="fine"))
    await notes.do(UpdateNote(note_id="bad", title="boom"))
    await notes.do(UpdateNote(note_id="bad", title="after"))
    fussy = notes.new_runner(Fussy())
    await notes.new_loop(fussy).catch_up()
    assert await fussy.retry("notes/t1/lab/bad") is not None  # still failing: parked again

    fixed = notes.new_runner()  # the projector after a fix
    assert await fixed.retry("notes/t1/lab/bad") is None

    bad = await notes.view("bad")
    assert (bad.version, bad.data["title"]) == (3, "after")
    assert await notes.parking.parked("notes") == []


async def test_skip_passes_over_the_parked_event_and_applies_the_rest(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="bad", title="fine"))
    await notes.do(UpdateNote(note_id="bad", title="boom"))
    await notes.do(UpdateNote(note_id="bad", title="after"))
    runner = notes.new_runner(Fussy())
    await notes.new_loop(runner).catch_up()

    assert await runner.skip("notes/t1/lab/bad") is None

    bad = await notes.view("bad")
    assert (bad.version, bad.data["title"]) == (3, "after")
    assert await notes.runner.applied(["notes/t1/lab/bad"]) == {"notes/t1/lab/bad": 3}


async def test_a_live_runner_applies_a_stream_released_elsewhere(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="bad", title="boom"))
    live = notes.new_runner(Fussy())
    loop = notes.new_loop(live)
    await loop.catch_up()
    await notes.parking.release("notes", "notes/t1/lab/bad")  # an operator, elsewhere
    await notes.do(UpdateNote(note_id="bad", title="fine now"))

    await notes.new_loop(notes.new_runner()).catch_up()  # (a fixed projector elsewhere)
    await loop.catch_up()

    assert (await notes.view("bad")).data["title"] == "fine now"


async def test_an_undecodable_event_parks_its_stream_alone(notes: Notes, tmp_path: Path) -> None:
    await notes.do(CreateNote(note_id="good", title="g"))
    conn = sqlite3.connect(tmp_path / "it.db")
    with conn:
        conn.execute(
            "INSERT INTO spine (stream_id, seq, command_id, hash, body)"
            " VALUES ('notes/t9/lab/x', 1, 'c', 'h', x'7b7b')"
        )
    conn.close()
    await notes.do(UpdateNote(note_id="good", title="g2"))

    await notes.loop.catch_up()

    assert (await notes.view("good")).data["title"] == "g2"
    (parked,) = await notes.parking.parked("notes")
    assert (parked.stream_id, parked.seq, parked.event_type) == ("notes/t9/lab/x", 1, None)
    assert "decode" in parked.error


async def test_a_broken_event_inside_a_gap_parks_its_stream_at_that_seq(
    notes: Notes, tmp_path: Path
) -> None:
    sid = "notes/t1/lab/gappy"
    await notes.do(CreateNote(note_id="gappy", title="1"))
    await notes.do(UpdateNote(note_id="gappy", title="2"))
    conn = sqlite3.connect(tmp_path / "it.db")
    with conn:
        conn.execute(
            "INSERT INTO spine (stream_id, seq, command_id, hash, body) VALUES (?, 3, 'c', 'h', ?)",
            (sid, b"{broken"),
        )
    conn.close()
    (last,) = (
        await notes.spine.append(sid, [make_event("note.updated", payload={"title": "4"})], 3)
    ).events

    assert await notes.runner.apply([last]) == 2  # seq 1 and 2, read from the spine

    (parked,) = await notes.parking.parked("notes")
    assert (parked.stream_id, parked.seq) == (sid, 3)
    assert "cannot be decoded" in parked.error
    assert await notes.runner.applied([sid]) == {sid: 2}


# -- checkpoints, caches, waits ---------------------------------------------------------------


async def test_a_live_runner_follows_a_checkpoint_reset(notes: Notes) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    loop = notes.new_loop(notes.runner, idle_timeout=0.02)
    task = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: checkpoint_is_head(notes))
        delivered = 0
        real_apply = notes.runner.apply

        async def counting(events: Any) -> int:
            nonlocal delivered
            events = list(events)
            delivered += len(events)
            return await real_apply(events)

        notes.runner.apply = counting  # type: ignore[method-assign]
        await notes.checkpoints.reset("notes")
        await wait_until(lambda: checkpoint_is_head(notes))
        assert delivered == 1  # the live loop read the feed again from the start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def checkpoint_is_head(notes: Notes) -> bool:
    return await notes.checkpoints.get("notes") == await notes.feed.heads()


async def wait_until(check: Any, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_record_cache_is_bounded_in_bytes(notes: Notes) -> None:
    runner = notes.new_runner(cache_bytes=64 * 1024)
    for i in range(40):
        await notes.do(CreateNote(note_id=f"n{i}", title="t", content="x" * 10_000))
    await notes.new_loop(runner).catch_up()
    assert runner._records.size <= 64 * 1024
    assert 0 < len(runner._records.records) < 40


async def test_wait_for_returns_once_the_view_reflects_the_seq(notes: Notes) -> None:
    task = asyncio.create_task(notes.loop.run())
    try:
        version = await notes.do(CreateNote(note_id="a", title="A"))
        assert await notes.runner.wait_for("notes/t1/lab/a", version, timeout=2)
        assert (await notes.view("a")).version == version
        assert await notes.runner.wait_for("notes/t1/lab/a", version, timeout=0)  # already
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    version = await notes.do(UpdateNote(note_id="a", title="A2"))
    assert not await notes.runner.wait_for("notes/t1/lab/a", version, timeout=0.05)
    assert notes.runner._waiters == {}


async def test_wait_for_sees_a_write_applied_by_another_runner(notes: Notes) -> None:
    """Read-your-writes across processes: the waiting runner applies nothing itself."""
    version = await notes.do(CreateNote(note_id="a", title="A"))
    waiting = asyncio.create_task(notes.runner.wait_for("notes/t1/lab/a", version, timeout=5))
    await asyncio.sleep(0.02)
    assert not waiting.done()

    await notes.new_loop(notes.new_runner()).catch_up()  # "the other process"

    assert await asyncio.wait_for(waiting, 2)


async def test_a_stream_whose_writes_keep_being_refused_is_parked_not_retried_for_ever(
    notes: Notes,
) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="B"))
    events = await notes.spine.read_stream("notes/t1/lab/a")
    assert await notes.runner.apply(events[:1]) == 1
    real_commit = notes.views.commit

    async def always_refused(projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        return [w.stream_id for w in writes]

    notes.views.commit = always_refused  # type: ignore[method-assign]
    try:
        assert await notes.runner.apply(events[1:]) == 0
    finally:
        notes.views.commit = real_commit  # type: ignore[method-assign]

    (parked,) = await notes.parking.parked("notes")
    assert (parked.stream_id, parked.seq, parked.attempts) == ("notes/t1/lab/a", 2, 5)
    assert "refused" in parked.error


async def test_lost_applied_progress_heals_from_the_records_the_view_holds(
    notes: Notes,
) -> None:
    """The progress rows deleted behind the runner's back: a replay finds each record at
    or above the event's version, writes nothing to it, and the progress is rebuilt."""
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    await notes.loop.catch_up()
    conn = sqlite3.connect(notes.backend.db.path)
    with conn:
        conn.execute("DELETE FROM notes__applied")
        conn.execute("DELETE FROM cp")
    conn.close()
    await notes.do(UpdateNote(note_id="a", title="A3"))

    runner = notes.new_runner()
    await notes.new_loop(runner).catch_up()

    a = await notes.view("a")
    assert (a.version, a.data["title"]) == (3, "A3")
    assert await notes.parking.parked("notes") == []
    assert await runner.applied(["notes/t1/lab/a"]) == {"notes/t1/lab/a": 3}


async def test_a_history_replayed_after_lost_progress_is_not_written_twice(
    notes: Notes,
) -> None:
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.new_loop(notes.new_runner(History())).catch_up()
    conn = sqlite3.connect(notes.backend.db.path)
    with conn:
        conn.execute("DELETE FROM notes__applied WHERE projector = 'note_history'")
        conn.execute("DELETE FROM cp WHERE consumer = 'note_history'")
    conn.close()

    await notes.new_loop(notes.new_runner(History())).catch_up()

    assert await notes.parking.parked("note_history") == []
    assert await notes.views.applied("note_history", ["notes/t1/lab/a"]) == {"notes/t1/lab/a": 1}


async def test_progress_read_before_another_runners_commit_is_not_poison(
    notes: Notes,
) -> None:
    """Two processes: this runner reads the stream's progress, the other applies the
    event, then this one loads the record (now newer than the progress it read)."""
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.do(UpdateNote(note_id="a", title="A2"))
    events = await notes.spine.read_stream("notes/t1/lab/a")
    slow = notes.new_runner()
    assert await slow.apply(events[:1]) == 1
    slow._records.clear()  # the record must come from the store, the progress from cache
    assert await notes.new_runner().apply(events) == 1  # the other process

    assert await slow.apply(events[1:]) == 0

    assert await notes.parking.parked("notes") == []
    assert (await notes.view("a")).data["title"] == "A2"


async def test_a_checkpoint_past_the_feeds_head_is_forgotten_not_trusted(notes: Notes) -> None:
    """A position no feed handed out (written behind its back): the partition is read
    again from the start, status says the lag is unknown until then."""
    await notes.do(CreateNote(note_id="a", title="A"))
    await notes.checkpoints.put("notes", "all", "00000000000000099999", after=None)
    assert (await notes.status()).lag is None

    await notes.loop.catch_up()

    assert (await notes.view("a")).version == 1
    assert (await notes.status()).lag == 0


# -- other domains' events ----------------------------------------------------------------


async def test_a_projector_is_not_woken_by_other_domains_appends(notes: Notes) -> None:
    subscription = notes.feed.subscribe(
        "flows-reader", notes.checkpoints, domains=frozenset({"flows"})
    )
    waiting = asyncio.create_task(subscription.next_batch(timeout=10))
    await asyncio.sleep(0)  # it reads, finds nothing, and waits

    await notes.do(CreateNote(note_id="a", title="A"))  # a notes append
    await asyncio.sleep(0.05)
    woken_by_notes = waiting.done()
    await notes.spine.append("flows/t1/lab/f1", [make_event("flow.created")], NO_STREAM)
    batch = await asyncio.wait_for(waiting, 5)

    assert not woken_by_notes
    assert batch is not None
    assert [e.stream_id for e in batch.events] == ["flows/t1/lab/f1"]
    assert batch.read == 2  # the notes event was passed over, not lost
    await subscription.aclose()


async def test_a_batch_of_other_domains_only_does_not_write_a_checkpoint_each_time(
    notes: Notes,
) -> None:
    class Counting:
        def __init__(self, inner: CheckpointStore) -> None:
            self.inner, self.puts = inner, 0

        async def get(self, consumer: str) -> Any:
            return await self.inner.get(consumer)

        async def put(self, *a: Any, **kw: Any) -> Any:
            self.puts += 1
            return await self.inner.put(*a, **kw)

        async def reset(self, consumer: str) -> Any:
            return await self.inner.reset(consumer)

    counting = Counting(notes.checkpoints)
    loop = FeedLoop(notes.runner, notes.feed, counting, checkpoint_seconds=3600)  # type: ignore[arg-type]
    for i in range(3):
        await notes.spine.append(f"flows/t1/lab/f{i}", [make_event("flow.created")], NO_STREAM)
        assert await loop.step(0) == 1  # read, nothing of ours
    assert counting.puts == 0

    await notes.do(CreateNote(note_id="a", title="A"))
    assert await loop.step(0) == 1
    assert counting.puts == 1  # caught up having applied something: checkpointed
    assert (await notes.status()).lag == 0  # and past the flows events too


async def test_an_append_landing_after_a_read_ahead_found_nothing_still_wakes_the_reader(
    notes: Notes,
) -> None:
    subscription = notes.feed.subscribe(
        "flows-reader", notes.checkpoints, domains=frozenset({"flows"}), batch_size=2
    )
    for i in range(2):
        await notes.spine.append(f"flows/t1/lab/f{i}", [make_event("flow.created")], NO_STREAM)
    full = await subscription.next_batch(timeout=0)  # a full batch: it reads ahead
    assert full is not None
    assert full.read == 2
    await asyncio.sleep(0.05)  # the read-ahead finishes, finding nothing
    await notes.spine.append("flows/t1/lab/late", [make_event("flow.created")], NO_STREAM)

    # the append came after the read-ahead: the reader must not wait for another one
    batch = await asyncio.wait_for(subscription.next_batch(timeout=30), 5)

    assert batch is not None
    assert [e.stream_id for e in batch.events] == ["flows/t1/lab/late"]
    await subscription.aclose()
