"""The import part of the EventStore contract (``EventStore.import_events``,
:mod:`spine.importing`): run unchanged against every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from spine.codec import seal_after, verify_chain
from spine.errors import ImportConflict, IntegrityError, InvalidAppend
from spine.events import ANY, NO_STREAM, EventEnvelope
from spine.feed import Outbox
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.conftest import Harness, requires


@pytest.fixture
async def store(spine_harness: Harness, unique: str) -> EventStore:
    s: EventStore = await spine_harness.backend.event_store(spine_harness.route(f"imp_{unique}"))
    return s


@pytest.fixture
async def source(spine_harness: Harness, unique: str) -> EventStore:
    s: EventStore = await spine_harness.backend.event_store(spine_harness.route(f"src_{unique}"))
    return s


@pytest.fixture
def sid(unique: str) -> str:
    return stream_id("notes", "t1", "lab", f"n-{unique}")


def chain(
    sid: str, commands: list[str], *, after: EventEnvelope | None = None
) -> list[EventEnvelope]:
    """Events sealed elsewhere, as an export holds them: one per command id given
    (repeated ids in a row: one command of several events), recorded a day ago."""
    events = [make_event(command_id=c, payload={"i": i}) for i, c in enumerate(commands)]
    sealed = seal_after(
        events,
        stream_id=sid,
        head=0 if after is None else after.seq,
        prev_hash=after.hash if after is not None else "0" * 64,
        recorded_at=datetime.now(UTC) - timedelta(days=1),
    )
    return [envelope for envelope, _ in sealed]


async def test_imported_events_read_back_exactly_and_verify(
    store: EventStore, source: EventStore, sid: str
) -> None:
    await source.append(sid, [make_event(command_id="a", surface_id="chat")], NO_STREAM)
    await source.append(sid, [make_event(command_id="b"), make_event(command_id="b")], 1)
    await source.append(sid, [make_event(command_id="c", payload={"t": "é\u202e"})], 3)
    exported = await source.read_stream(sid)

    result = await store.import_events(sid, exported)

    assert (result.written, result.already, result.first_seq, result.last_seq) == (4, 0, 1, 4)
    imported = await store.read_stream(sid)
    assert imported == exported
    assert [e.model_dump() for e in imported] == [e.model_dump() for e in exported]
    assert verify_chain(imported) == 4


async def test_a_repeated_import_writes_nothing(store: EventStore, sid: str) -> None:
    events = chain(sid, ["a", "b", "b", "c"])
    await store.import_events(sid, events)

    again = await store.import_events(sid, events)

    assert (again.written, again.already) == (0, 4)
    assert await store.read_stream(sid) == events


async def test_an_import_completes_a_stream_holding_its_first_events(
    store: EventStore, sid: str
) -> None:
    events = chain(sid, ["a", "b", "c", "d", "e"])
    await store.import_events(sid, events[:2])

    result = await store.import_events(sid, events)

    assert (result.written, result.already) == (3, 2)
    assert await store.read_stream(sid) == events


async def test_a_held_seq_with_another_event_is_refused_and_nothing_written(
    store: EventStore, sid: str
) -> None:
    await store.append(sid, [make_event(command_id="own")], NO_STREAM)
    held = await store.read_stream(sid)

    with pytest.raises(ImportConflict) as info:
        await store.import_events(sid, chain(sid, ["a", "b", "c"]))

    assert (info.value.stream_id, info.value.seq) == (sid, 1)
    assert sid in str(info.value)
    assert "seq 1" in str(info.value)
    assert await store.read_stream(sid) == held


async def test_events_that_do_not_chain_onto_the_stream_are_refused(
    store: EventStore, sid: str
) -> None:
    ours = chain(sid, ["a", "b"])
    theirs = chain(sid, ["x", "y", "z"])  # another history of the same stream
    await store.import_events(sid, ours)

    with pytest.raises(ImportConflict) as info:
        await store.import_events(sid, theirs[2:])

    assert info.value.seq == 3
    assert await store.read_stream(sid) == ours


async def test_an_import_that_would_leave_a_gap_is_refused(store: EventStore, sid: str) -> None:
    events = chain(sid, ["a", "b", "c", "d"])
    await store.import_events(sid, events[:1])

    with pytest.raises(InvalidAppend, match="gap"):
        await store.import_events(sid, events[2:])

    assert await store.read_stream(sid) == events[:1]


async def test_an_event_changed_after_sealing_is_refused_and_nothing_written(
    store: EventStore, sid: str
) -> None:
    events = chain(sid, ["a", "b", "c"])
    events[1] = events[1].model_copy(update={"payload": {"i": 99}})

    with pytest.raises(IntegrityError, match="seq 2"):
        await store.import_events(sid, events)

    assert await store.read_stream(sid) == []


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda evs: [evs[0], evs[2]], id="seqs-not-contiguous"),
        pytest.param(lambda evs: evs[::-1], id="seqs-out-of-order"),
        pytest.param(
            lambda evs: [e.model_copy(update={"stream_id": e.stream_id + "x"}) for e in evs],
            id="another-stream",
        ),
        pytest.param(lambda evs: [], id="no-events"),
    ],
)
async def test_events_that_are_not_one_streams_run_are_refused(
    store: EventStore, sid: str, spoil: object
) -> None:
    events = chain(sid, ["a", "b", "c"])

    with pytest.raises(InvalidAppend):
        await store.import_events(sid, spoil(events))  # type: ignore[operator]

    assert await store.read_stream(sid) == []


async def test_a_command_split_across_the_import_is_refused(store: EventStore, sid: str) -> None:
    events = chain(sid, ["a", "b", "a"])

    with pytest.raises(InvalidAppend, match="command 'a'"):
        await store.import_events(sid, events)

    assert await store.read_stream(sid) == []


async def test_a_command_the_stream_holds_at_other_seqs_is_refused(
    spine_harness: Harness, store: EventStore, sid: str
) -> None:
    # found by the command marker's create, which fails the write after the first event's
    requires(spine_harness, "atomic_batch", "a failed batch keeps its first create")
    events = chain(sid, ["a", "b", "a"])
    # the stream holds "a" at seq 1: an import bringing "a" again at seq 3 is another history
    await store.import_events(sid, events[:2])
    with pytest.raises(ImportConflict, match="command 'a'"):
        await store.import_events(sid, events[2:])
    assert await store.read_stream(sid) == events[:2]


async def test_an_imported_command_deduplicates_a_later_append(store: EventStore, sid: str) -> None:
    events = chain(sid, ["a", "b", "b"])
    await store.import_events(sid, events)

    repeated = await store.append(sid, [make_event(command_id="b")], ANY)

    assert repeated.deduplicated
    assert list(repeated.events) == events[1:]
    assert await store.find_command(sid, "a") == events[:1]
    assert len(await store.read_stream(sid)) == 3


async def test_appends_continue_the_imported_chain(store: EventStore, sid: str) -> None:
    await store.import_events(sid, chain(sid, ["a", "b"]))

    result = await store.append(sid, [make_event(command_id="c")], 2)

    assert result.first_seq == 3
    assert verify_chain(await store.read_stream(sid)) == 3


async def test_a_dry_run_checks_everything_and_writes_nothing(store: EventStore, sid: str) -> None:
    events = chain(sid, ["a", "b", "c"])
    await store.import_events(sid, events[:1])

    result = await store.import_events(sid, events, dry_run=True)

    assert (result.written, result.already, result.dry_run) == (2, 1, True)
    assert await store.read_stream(sid) == events[:1]
    with pytest.raises(ImportConflict):
        await store.import_events(sid, chain(sid, ["x"]), dry_run=True)


async def test_two_concurrent_imports_of_a_stream_write_it_once(
    store: EventStore, sid: str
) -> None:
    events = chain(sid, [f"c{i}" for i in range(20)])

    results = await asyncio.gather(
        store.import_events(sid, events), store.import_events(sid, events)
    )

    assert sum(r.written for r in results) == 20
    assert all(r.written + r.already == 20 for r in results)
    assert await store.read_stream(sid) == events


async def test_an_import_and_an_append_racing_leave_one_history(
    store: EventStore, sid: str
) -> None:
    events = chain(sid, ["a", "b", "c"])

    outcomes = await asyncio.gather(
        store.import_events(sid, events),
        store.append(sid, [make_event(command_id="own")], NO_STREAM),
        return_exceptions=True,
    )

    stored = await store.read_stream(sid)
    assert verify_chain(stored) == len(stored)
    if isinstance(outcomes[0], BaseException):  # the append took seq 1 first
        assert isinstance(outcomes[0], ImportConflict)
        assert [e.command_id for e in stored] == ["own"]
    else:
        assert stored == events  # the import first: the append found seq 1 taken
        assert isinstance(outcomes[1], BaseException)


async def test_an_import_bigger_than_one_atomic_write_is_written_whole(
    store: EventStore, sid: str
) -> None:
    # three commands of 45 events: more than one transaction takes on DynamoDB and
    # Cosmos DB (100 items with the markers)
    events = chain(sid, [f"c{i // 45}" for i in range(135)])

    result = await store.import_events(sid, events)

    assert result.written == 135
    stored = await store.read_stream(sid)
    assert stored == events
    assert verify_chain(stored) == 135
    for command in ("c0", "c2"):
        assert len(await store.find_command(sid, command)) == 45


@pytest.fixture
async def outbox_store(outbox_harness: Harness, unique: str) -> EventStore:
    s: EventStore = await outbox_harness.backend.event_store(outbox_harness.route(f"ob_{unique}"))
    return s


async def test_an_import_leaves_outbox_markers_for_the_relay(
    outbox_store: EventStore, sid: str
) -> None:
    assert isinstance(outbox_store, Outbox)
    events = chain(sid, [f"c{i // 45}" for i in range(135)])

    await outbox_store.import_events(sid, events)

    pending = [p for p in await outbox_store.pending() if p.stream_id == sid]
    covered = sorted(seq for p in pending for seq in range(p.first_seq, p.last_seq + 1))
    assert covered == list(range(1, 136))
    assert all(p.written_at > datetime.now(UTC) - timedelta(minutes=1) for p in pending)


async def test_a_command_bigger_than_one_atomic_write_is_refused_before_writing(
    outbox_store: EventStore, sid: str
) -> None:
    # every store with an outbox has an atomic limit (500 writes at most): a command of
    # 501 events, which the lab store could have appended, cannot be written as one
    events = chain(sid, ["one"] * 501)

    with pytest.raises(InvalidAppend, match="command 'one'"):
        await outbox_store.import_events(sid, events)

    assert await outbox_store.read_stream(sid) == []
