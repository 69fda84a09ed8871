"""The EventStore contract (spine.store): run unchanged against every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spine.codec import verify_chain
from spine.errors import ConcurrencyError, InvalidAppend, InvalidInput, InvalidStreamId
from spine.events import ANY, GENESIS_HASH, NO_STREAM, StreamState
from spine.feed import Outbox
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.conftest import Harness


@pytest.fixture
async def store(spine_harness: Harness, unique: str) -> EventStore:
    route = spine_harness.route(f"spine_{unique}")
    s: EventStore = await spine_harness.backend.event_store(route)
    return s


@pytest.fixture
def sid(unique: str) -> str:
    return stream_id("notes", "t1", "lab", f"n-{unique}")


async def test_store_satisfies_the_protocol(store: EventStore) -> None:
    assert isinstance(store, EventStore)


async def test_a_new_stream_starts_at_seq_1_and_reads_back_in_order(
    store: EventStore, sid: str
) -> None:
    result = await store.append(sid, [make_event(command_id="c1")], NO_STREAM)
    assert (result.first_seq, result.last_seq, result.deduplicated) == (1, 1, False)
    result = await store.append(sid, [make_event(command_id="c2"), make_event(command_id="c2")], 1)
    assert (result.first_seq, result.last_seq) == (2, 3)
    events = await store.read_stream(sid)
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.command_id for e in events] == ["c1", "c2", "c2"]
    assert all(e.stream_id == sid and e.route == "event_spine" for e in events)


async def test_envelope_fields_are_kept_exactly(store: EventStore, sid: str) -> None:
    event = make_event(
        surface_id="chat",
        project_id="p1",
        thread_id="th",
        trace_id="tr",
        span_id="sp",
        parent_event_id="pe",
        family="domain",
        schema_version=3,
        payload={"text": "é ünïcode", "nested": {"a": [1, 2.5, None, True]}},
    )
    (stored,) = (await store.append(sid, [event], NO_STREAM)).events
    (read,) = await store.read_stream(sid)
    assert read == stored
    for name in type(event).model_fields:
        assert getattr(read, name) == getattr(event, name), name
    assert read.recorded_at.tzinfo is not None


async def test_stale_expected_version_is_refused_and_writes_nothing(
    store: EventStore, sid: str
) -> None:
    await store.append(sid, [make_event()], NO_STREAM)
    await store.append(sid, [make_event()], 1)
    with pytest.raises(ConcurrencyError) as info:
        await store.append(sid, [make_event()], 1)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == (sid, 1, 2)
    assert sid in str(info.value)
    assert "expected version 1" in str(info.value)
    assert len(await store.read_stream(sid)) == 2


async def test_expected_version_ahead_of_the_stream_is_refused(store: EventStore, sid: str) -> None:
    with pytest.raises(ConcurrencyError) as info:
        await store.append(sid, [make_event()], 5)
    assert info.value.actual == 0
    assert await store.read_stream(sid) == []


async def test_no_stream_on_an_existing_stream_is_refused(store: EventStore, sid: str) -> None:
    await store.append(sid, [make_event()], NO_STREAM)
    with pytest.raises(ConcurrencyError) as info:
        await store.append(sid, [make_event()], NO_STREAM)
    assert info.value.expected == "NO_STREAM"
    assert len(await store.read_stream(sid)) == 1


async def test_any_appends_whatever_the_version(store: EventStore, sid: str) -> None:
    await store.append(sid, [make_event()], ANY)
    await store.append(sid, [make_event()], ANY)
    assert [e.seq for e in await store.read_stream(sid)] == [1, 2]


async def test_a_repeated_command_returns_the_original_result_and_writes_nothing(
    store: EventStore, sid: str
) -> None:
    first = await store.append(
        sid, [make_event(command_id="cmd"), make_event(command_id="cmd")], NO_STREAM
    )
    await store.append(sid, [make_event(command_id="other")], 2)
    again = await store.append(sid, [make_event(command_id="cmd")], NO_STREAM)  # stale: fine
    assert again.deduplicated
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
    assert (again.first_seq, again.last_seq) == (1, 2)
    assert len(await store.read_stream(sid)) == 3


async def test_a_multi_event_append_that_fails_midway_writes_nothing(
    store: EventStore, sid: str
) -> None:
    good = make_event(command_id="c")
    unencodable = make_event(command_id="c", payload={"too_big": 2**70})
    with pytest.raises(InvalidAppend):
        await store.append(sid, [good, good, unencodable], NO_STREAM)
    assert await store.read_stream(sid) == []
    await store.append(sid, [good], NO_STREAM)  # the stream is still new
    assert [e.seq for e in await store.read_stream(sid)] == [1]


@pytest.mark.parametrize(
    ("events", "expected", "why"),
    [
        ([], NO_STREAM, "no events"),
        ([make_event(command_id="a"), make_event(command_id="b")], NO_STREAM, "command_id"),
        ([make_event(tenant_id="t2")], NO_STREAM, "belongs to"),
        ([make_event(mode="saas")], NO_STREAM, "belongs to"),
        ([make_event()], -1, "expected_version"),
        ([make_event()], True, "expected_version"),
    ],
)
async def test_malformed_appends_are_refused_and_write_nothing(
    store: EventStore, sid: str, events: list[Any], expected: Any, why: str
) -> None:
    with pytest.raises(InvalidAppend, match=why):
        await store.append(sid, events, expected)
    assert await store.read_stream(sid) == []


@pytest.mark.parametrize(
    "bad", ["notes/t1/lab", "notes/t1/prod/x", "notes/t 1/lab/x", "notes/t1/lab/../x", "x"]
)
async def test_malformed_stream_ids_are_refused(store: EventStore, bad: str) -> None:
    with pytest.raises(InvalidStreamId):
        await store.append(bad, [make_event()], ANY)
    with pytest.raises(InvalidStreamId):
        await store.read_stream(bad)


async def test_the_hash_chain_links_every_event(store: EventStore, sid: str) -> None:
    await store.append(sid, [make_event(command_id="a"), make_event(command_id="a")], NO_STREAM)
    await store.append(sid, [make_event()], 2)
    events = await store.read_stream(sid)
    assert events[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert len({e.hash for e in events}) == 3
    assert verify_chain(events) == 3


async def test_read_stream_honours_the_seq_range(store: EventStore, sid: str) -> None:
    for n in range(5):
        await store.append(sid, [make_event()], n)
    assert [e.seq for e in await store.read_stream(sid, 2, 4)] == [2, 3, 4]
    assert [e.seq for e in await store.read_stream(sid, 4)] == [4, 5]
    assert await store.read_stream(sid, 6) == []
    assert await store.read_stream(stream_id("notes", "t1", "lab", "never")) == []


async def test_streams_are_independent(store: EventStore, unique: str) -> None:
    a = stream_id("notes", "t1", "lab", f"a-{unique}")
    b = stream_id("notes", "t1", "lab", f"b-{unique}")
    await store.append(a, [make_event()], NO_STREAM)
    await store.append(b, [make_event()], NO_STREAM)
    await store.append(a, [make_event()], 1)
    assert [e.seq for e in await store.read_stream(b)] == [1]


async def test_scan_returns_every_stream_in_seq_order_filtered_by_prefix(
    store: EventStore, unique: str
) -> None:
    streams = [stream_id("notes", "t1", "lab", f"s{i}-{unique}") for i in range(4)]
    other = stream_id("audit", "t1", "lab", f"r-{unique}")
    for i, s in enumerate(streams):
        for n in range(i + 1):
            await store.append(s, [make_event()], n)
    await store.append(other, [make_event(family="audit")], NO_STREAM)
    seen: dict[str, list[int]] = {}
    async for event in store.scan(domain="notes", tenant_id="t1", mode="lab", batch_size=3):
        seen.setdefault(event.stream_id, []).append(event.seq)
    assert seen == {s: list(range(1, i + 2)) for i, s in enumerate(streams)}
    everything = [e async for e in store.scan(batch_size=2)]
    assert len(everything) == 1 + 2 + 3 + 4 + 1
    audit = [e.stream_id async for e in store.scan(domain="audit")]
    assert audit == [other]
    by_tenant = [e async for e in store.scan(tenant_id="t1", batch_size=4)]
    assert len(by_tenant) == len(everything)
    assert [e async for e in store.scan(tenant_id="t2")] == []
    assert [e async for e in store.scan(domain="notes", mode="saas")] == []


@pytest.mark.parametrize(
    "scope",
    [{"domain": "No/tes"}, {"tenant_id": "a/b"}, {"mode": "prod"}, {"domain": "notes\n"}],
)
async def test_a_scan_of_a_malformed_scope_is_refused(
    store: EventStore, scope: dict[str, Any]
) -> None:
    with pytest.raises(InvalidStreamId):
        [e async for e in store.scan(**scope)]


async def test_twenty_concurrent_appenders_on_one_stream_get_one_winner_per_seq(
    store: EventStore, sid: str
) -> None:
    async def attempt(n: int) -> int | None:
        try:
            result = await store.append(sid, [make_event(command_id=f"first-{n}")], NO_STREAM)
        except ConcurrencyError:
            return None
        return result.last_seq

    outcomes = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert sorted(o for o in outcomes if o is not None) == [1]

    async def until_written(n: int) -> int:
        while True:
            version = len(await store.read_stream(sid))
            try:
                result = await store.append(sid, [make_event(command_id=f"w-{n}")], version)
            except ConcurrencyError:
                await asyncio.sleep(0)
            else:
                return result.last_seq

    seqs = await asyncio.gather(*(until_written(n) for n in range(20)))
    assert sorted(seqs) == list(range(2, 22))
    events = await store.read_stream(sid)
    assert [e.seq for e in events] == list(range(1, 22))
    by_seq = {e.seq: e.command_id for e in events}
    assert [by_seq[s] for s in seqs] == [f"w-{n}" for n in range(20)]  # each writer once
    assert by_seq[1].startswith("first-")
    assert verify_chain(events) == 21


@pytest.mark.parametrize("expected", [1, ANY], ids=["exact", "any"])
async def test_concurrent_appends_of_one_command_write_it_once_and_answer_each_alike(
    store: EventStore, sid: str, expected: int | StreamState
) -> None:
    """A command retried while its first try is in flight (two handlers that folded the
    same version): one append writes, every other answers the original result."""
    await store.append(sid, [make_event(command_id="before")], NO_STREAM)

    def attempt() -> list[Any]:
        return [make_event(command_id="twice"), make_event(command_id="twice")]

    results = await asyncio.gather(*(store.append(sid, attempt(), expected) for _ in range(5)))

    written = [r for r in results if not r.deduplicated]
    assert len(written) == 1
    (original,) = written
    assert (original.first_seq, original.last_seq) == (2, 3)
    assert all(r.events == original.events for r in results)
    events = await store.read_stream(sid)
    assert [e.command_id for e in events] == ["before", "twice", "twice"]
    assert list(events[1:]) == list(original.events)
    assert verify_chain(events) == 3
    if isinstance(store, Outbox):  # one marker for the command, not one per attempt
        pending = [p for p in await store.pending() if p.stream_id == sid]
        assert sorted((p.first_seq, p.last_seq) for p in pending) == [(1, 1), (2, 3)]


async def test_a_payload_too_deep_to_read_back_is_refused(store: EventStore, sid: str) -> None:
    deep: dict[str, Any] = {}
    for _ in range(150):
        deep = {"d": deep}
    with pytest.raises(InvalidAppend, match="nests deeper"):
        await store.append(sid, [make_event(payload=deep)], NO_STREAM)
    assert await store.read_stream(sid) == []


async def test_a_sealed_envelope_cannot_be_appended_again(store: EventStore, sid: str) -> None:
    (sealed,) = (await store.append(sid, [make_event()], NO_STREAM)).events
    other = sid + "x"
    with pytest.raises(InvalidAppend, match="EventEnvelope"):
        await store.append(other, [sealed], NO_STREAM)
    assert await store.read_stream(other) == []


async def test_events_may_come_from_any_iterable(store: EventStore, sid: str) -> None:
    events = (make_event(command_id="g") for _ in range(3))
    result = await store.append(sid, events, NO_STREAM)  # type: ignore[arg-type]
    assert (result.first_seq, result.last_seq) == (1, 3)


@pytest.mark.parametrize(("from_seq", "to_seq"), [(2**70, None), (-1, None), (1, 2**70)])
async def test_a_read_range_out_of_bounds_is_invalid_input(
    store: EventStore, sid: str, from_seq: int, to_seq: int | None
) -> None:
    with pytest.raises(InvalidInput, match="seq"):
        await store.read_stream(sid, from_seq, to_seq)


async def test_appends_made_together_are_each_answered_on_their_own(
    store: EventStore, unique: str
) -> None:
    """Appends issued at once (one group commit on the lab backend) each get their own
    answer: two to one stream chain, a conflict and an unencodable payload are refused
    alone and write nothing, and a command repeated while the first is in flight is
    answered with the first's events."""

    def sid(name: str) -> str:
        return stream_id("notes", "t1", "lab", f"{unique}-{name}")

    first, second = make_event(command_id="a-1"), make_event(command_id="a-2")
    repeated = make_event(command_id="c-1")
    results = await asyncio.gather(
        store.append(sid("a"), [first], NO_STREAM),
        store.append(sid("a"), [second], 1),
        store.append(sid("b"), [make_event()], 5),
        store.append(sid("c"), [repeated], NO_STREAM),
        store.append(sid("c"), [repeated], NO_STREAM),
        store.append(sid("d"), [make_event(payload={"n": 2**70})], NO_STREAM),
        store.append(sid("e"), [make_event(), make_event()][:1], ANY),
        return_exceptions=True,
    )
    a1, a2, b, c1, c2, d, e = results
    assert not isinstance(a1, BaseException)
    assert not isinstance(a2, BaseException)
    assert (a1.last_seq, a2.last_seq) == (1, 2)
    assert isinstance(b, ConcurrencyError)
    assert not isinstance(c1, BaseException)
    assert not isinstance(c2, BaseException)
    assert sorted([c1.deduplicated, c2.deduplicated]) == [False, True]
    assert c1.events == c2.events
    assert isinstance(d, InvalidAppend)
    assert not isinstance(e, BaseException)
    assert e.last_seq == 1
    a = await store.read_stream(sid("a"))
    assert [x.command_id for x in a] == ["a-1", "a-2"]
    assert verify_chain(a) == 2
    assert await store.read_stream(sid("b")) == []
    assert len(await store.read_stream(sid("c"))) == 1
    assert await store.read_stream(sid("d")) == []


async def test_find_command_answers_what_a_repeated_append_would(
    store: EventStore, sid: str
) -> None:
    await store.append(sid, [make_event(command_id="c1")], NO_STREAM)
    written = await store.append(sid, [make_event(command_id="c2"), make_event(command_id="c2")], 1)

    assert await store.find_command(sid, "c2") == list(written.events)
    assert await store.find_command(sid, "c3") == []
    assert await store.find_command(stream_id("notes", "t1", "lab", "other"), "c1") == []
    with pytest.raises(InvalidStreamId):
        await store.find_command("not a stream", "c1")
