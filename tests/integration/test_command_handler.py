"""load → fold → decide → append against the lab spine: idempotency and concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from commands.envelope import Command
from commands.handler import RECENT_COMMANDS, CommandHandler, execute, handler_for
from commands.notes import CreateNote, NotesDecider, UpdateNote
from commands.telemetry import EmitEvents, Emitted, TelemetryRecorder
from routing.backends.sqlite import SqliteBackend
from spine.codec import verify_chain
from spine.errors import BackendUnavailable, ConcurrencyError, NotFound
from spine.events import AppendResult, ExpectedVersion, NewEvent, Scope
from spine.store import EventStore
from tests.integration.conftest import lab_route

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")


@pytest.fixture
async def spine(sqlite: SqliteBackend) -> EventStore:
    s: EventStore = await sqlite.event_store(lab_route("spine"))
    return s


def cmd(payload: Any, **kw: Any) -> Command[Any]:
    return Command[Any](scope=ALICE, payload=payload, **kw)


async def test_a_repeated_command_returns_its_original_result(spine: EventStore) -> None:
    create = cmd(CreateNote(note_id="n", title="t"))
    first = await execute(spine, NotesDecider(), create)
    again = await execute(spine, NotesDecider(), create)
    assert again.deduplicated
    assert again.events == first.events
    assert len(await spine.read_stream("notes/t1/lab/n")) == 1


async def test_a_pinned_stale_version_is_refused_before_deciding(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    await execute(spine, NotesDecider(), cmd(UpdateNote(note_id="n", title="u")))
    with pytest.raises(ConcurrencyError) as info:
        await execute(
            spine, NotesDecider(), cmd(UpdateNote(note_id="n", title="x"), expected_version=1)
        )
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert len(await spine.read_stream("notes/t1/lab/n")) == 2


class RacingStore:
    """Lets another writer slip in just before our first append."""

    def __init__(self, inner: EventStore) -> None:
        self.inner, self.raced = inner, False

    async def read_stream(self, *a: Any) -> Any:
        return await self.inner.read_stream(*a)

    def scan(self, **kw: Any) -> Any:
        return self.inner.scan(**kw)

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected: ExpectedVersion
    ) -> AppendResult:
        if not self.raced:
            self.raced = True
            other = cmd(UpdateNote(note_id="n", title="other"))
            await execute(self.inner, NotesDecider(), other)
        return await self.inner.append(stream_id, events, expected)


async def test_an_unpinned_command_retries_after_a_concurrent_write(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    result = await execute(
        RacingStore(spine), NotesDecider(), cmd(UpdateNote(note_id="n", title="mine"))
    )
    assert result.version == 3
    events = await spine.read_stream("notes/t1/lab/n")
    assert [e.payload.get("title") for e in events] == ["t", "other", "mine"]


async def test_concurrent_unpinned_updates_all_land_in_order(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    results = await asyncio.gather(
        *(
            execute(
                spine, NotesDecider(), cmd(UpdateNote(note_id="n", title=f"u{i}")), max_attempts=50
            )
            for i in range(10)
        )
    )
    assert sorted(r.version for r in results) == list(range(2, 12))


class RefusalCounter:
    """Counts the appends the spine refuses as stale."""

    def __init__(self, inner: EventStore) -> None:
        self.inner, self.refused = inner, 0

    async def read_stream(self, *a: Any) -> Any:
        return await self.inner.read_stream(*a)

    def scan(self, **kw: Any) -> Any:
        return self.inner.scan(**kw)

    async def append(self, *a: Any) -> Any:
        try:
            return await self.inner.append(*a)
        except ConcurrencyError:
            self.refused += 1
            raise


async def test_one_process_s_commands_on_one_stream_take_turns_and_never_conflict(
    spine: EventStore,
) -> None:
    counted = RefusalCounter(spine)
    handler = CommandHandler(counted, NotesDecider())
    await handler(cmd(CreateNote(note_id="n", title="t")))

    results = await asyncio.gather(
        *(handler(cmd(UpdateNote(note_id="n", title=f"u{i}"))) for i in range(50)),
        handler(cmd(CreateNote(note_id="other", title="t"))),  # another stream: no wait
    )

    assert sorted(r.version for r in results[:50]) == list(range(2, 52))
    assert counted.refused == 0
    assert handler._turns == {}  # nothing kept for streams no command is waiting on


async def test_a_failing_command_gives_the_next_one_its_turn(spine: EventStore) -> None:
    handler = CommandHandler(spine, NotesDecider())
    await handler(cmd(CreateNote(note_id="n", title="t")))

    stale, fine = await asyncio.gather(
        handler(cmd(UpdateNote(note_id="n", title="x"), expected_version=7)),
        handler(cmd(UpdateNote(note_id="n", title="y"))),
        return_exceptions=True,
    )

    assert isinstance(stale, ConcurrencyError)
    assert not isinstance(fine, BaseException)
    assert fine.version == 2


class DownStore:
    """A store whose appends fail as unavailable after a while, as a locked one does."""

    def __init__(self, inner: EventStore) -> None:
        self.inner, self.appends, self.down = inner, 0, True

    async def read_stream(self, *a: Any) -> Any:
        return await self.inner.read_stream(*a)

    def scan(self, **kw: Any) -> Any:
        return self.inner.scan(**kw)

    async def append(self, *a: Any) -> Any:
        self.appends += 1
        if self.down:
            await asyncio.sleep(0.05)  # the store's timeout
            raise BackendUnavailable("spine", "sqlite", "database is locked")
        return await self.inner.append(*a)


async def test_commands_queued_behind_one_the_store_refused_fail_with_it_not_one_by_one(
    spine: EventStore,
) -> None:
    store = DownStore(spine)
    handler = CommandHandler(store, NotesDecider())

    outcomes = await asyncio.gather(
        *(handler(cmd(CreateNote(note_id="n", title=f"t{i}"))) for i in range(5)),
        return_exceptions=True,
    )

    assert all(isinstance(o, BackendUnavailable) for o in outcomes)
    assert "database is locked" in str(outcomes[-1])
    assert store.appends == 1  # the queued four did not each wait out the timeout
    store.down = False
    assert (await handler(cmd(CreateNote(note_id="n", title="later")))).version == 1


# -- the state cache ----------------------------------------------------------------------


class CountingStore:
    """Records the seq ranges read."""

    def __init__(self, inner: EventStore) -> None:
        self.inner, self.reads = inner, []  # type: ignore[var-annotated]

    async def read_stream(self, stream_id: str, from_seq: int = 1, to_seq: Any = None) -> Any:
        self.reads.append((from_seq, to_seq))
        return await self.inner.read_stream(stream_id, from_seq, to_seq)

    def scan(self, **kw: Any) -> Any:
        return self.inner.scan(**kw)

    async def append(self, *a: Any) -> Any:
        return await self.inner.append(*a)


async def test_a_command_on_a_long_stream_reads_only_what_was_appended_since(
    spine: EventStore,
) -> None:
    store = CountingStore(spine)
    handler = CommandHandler(store, NotesDecider())  # type: ignore[arg-type]
    await handler(cmd(CreateNote(note_id="n", title="t")))
    for i in range(40):
        await handler(cmd(UpdateNote(note_id="n", title=f"u{i}")))
    store.reads.clear()

    result = await handler(cmd(UpdateNote(note_id="n", title="last")))

    assert result.version == 42
    assert store.reads == [(42, None)]  # the tail after the cached version 41, nothing more


async def test_the_cache_follows_what_another_writer_appended(spine: EventStore) -> None:
    mine, theirs = CommandHandler(spine, NotesDecider()), CommandHandler(spine, NotesDecider())
    await mine(cmd(CreateNote(note_id="n", title="t")))
    await theirs(cmd(UpdateNote(note_id="n", title="theirs")))

    result = await mine(cmd(UpdateNote(note_id="n", title="mine"), expected_version=2))

    assert result.version == 3
    with pytest.raises(ConcurrencyError):
        await mine(cmd(UpdateNote(note_id="n", title="stale"), expected_version=2))


async def test_a_repeated_command_older_than_the_remembered_ids_gets_its_original_result(
    spine: EventStore,
) -> None:
    handler = CommandHandler(spine, NotesDecider())
    create = cmd(CreateNote(note_id="n", title="t"))
    first = await handler(create)
    for i in range(RECENT_COMMANDS + 5):
        await handler(cmd(UpdateNote(note_id="n", title=f"u{i}")))

    again = await handler(create)  # would be "already exists" if decided afresh

    assert again.deduplicated
    assert again.events == first.events


class Idle:
    """A decider that never has anything to say."""

    def stream_id(self, command: Any) -> str:
        return "notes/t1/lab/idle"

    def initial(self) -> int:
        return 0

    def evolve(self, state: int, event: Any) -> int:
        return state + 1

    def decide(self, state: int, command: Any) -> Sequence[NewEvent]:
        return []


async def test_a_decision_that_changes_nothing_succeeds_and_appends_nothing(
    spine: EventStore,
) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="idle", title="t")))

    result = await execute(spine, Idle(), cmd(UpdateNote(note_id="idle", title="same")))

    assert (result.version, result.events, result.deduplicated) == (1, (), False)
    assert len(await spine.read_stream("notes/t1/lab/idle")) == 1


async def test_a_no_op_with_a_stale_pinned_version_is_still_refused(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="idle", title="t")))
    await execute(spine, NotesDecider(), cmd(UpdateNote(note_id="idle", title="u")))

    with pytest.raises(ConcurrencyError):
        await execute(spine, Idle(), cmd(UpdateNote(note_id="idle", title="x"), expected_version=1))


async def test_a_stale_pinned_version_wins_over_a_refusal_of_the_current_state(
    spine: EventStore,
) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    await execute(spine, NotesDecider(), cmd(UpdateNote(note_id="n", title="u")))

    # creating what exists is refused by the decider; the caller's version 1 is stale
    with pytest.raises(ConcurrencyError):
        await execute(
            spine, NotesDecider(), cmd(CreateNote(note_id="n", title="x"), expected_version=1)
        )
    # not-found is never masked by the version check (nor unmasked by it)
    with pytest.raises(NotFound):
        await execute(
            spine, NotesDecider(), cmd(UpdateNote(note_id="none", title="x"), expected_version=3)
        )


def _emit(step: str, **kw: Any) -> Command[Any]:
    payload = EmitEvents(
        family="rl",
        run_id="r1",
        events=(Emitted(event_type="rl.reward", step_id=step, payload={"reward": 1}),),
    )
    return cmd(payload, **kw)


async def test_concurrent_emitters_of_one_run_share_commits_and_never_conflict(
    sqlite: SqliteBackend, spine: EventStore
) -> None:
    handle = handler_for(spine, TelemetryRecorder())
    before = sqlite.db.commits
    results = await asyncio.gather(*(handle(_emit(str(i))) for i in range(50)))

    assert sqlite.db.commits - before < 50  # grouped: no read first, no turn per stream
    assert sorted(r.version for r in results) == list(range(1, 51))
    stream = await spine.read_stream("rl/t1/lab/r1")
    assert verify_chain(stream) == 50
    assert [e.step_id for e in stream] == [
        r.events[0].step_id for r in sorted(results, key=lambda r: r.version)
    ]


async def test_a_repeated_emit_returns_its_original_events(spine: EventStore) -> None:

    handle = handler_for(spine, TelemetryRecorder())
    emit = _emit("1", command_id="c-1")
    first = await handle(emit)
    await handle(_emit("2"))
    again = await handle(emit)

    assert again.deduplicated
    assert again.events == first.events
    assert len(await spine.read_stream("rl/t1/lab/r1")) == 2
