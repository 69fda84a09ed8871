"""The Outbox contract (spine.feed): what an event store without a global position
offers its relay. Run against every cloud event store."""

from __future__ import annotations

import asyncio

import pytest

from spine.errors import ConcurrencyError
from spine.events import NO_STREAM
from spine.feed import Outbox
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.conftest import Harness


@pytest.fixture
async def store(outbox_harness: Harness, unique: str) -> EventStore:
    route = outbox_harness.route(f"spine_{unique}")
    s: EventStore = await outbox_harness.backend.event_store(route)
    return s


def outbox(store: EventStore) -> Outbox:
    assert isinstance(store, Outbox)
    return store


@pytest.fixture
def sid(unique: str) -> str:
    return stream_id("notes", "t1", "lab", f"n-{unique}")


async def test_an_append_leaves_one_pending_marker_naming_its_seqs(
    store: EventStore, sid: str
) -> None:
    await store.append(sid, [make_event(command_id="c1"), make_event(command_id="c1")], NO_STREAM)
    await store.append(sid, [make_event(command_id="c2")], 2)

    pending = await outbox(store).pending()
    assert sorted((p.stream_id, p.first_seq, p.last_seq) for p in pending) == [
        (sid, 1, 2),
        (sid, 3, 3),
    ]


async def test_a_cleared_marker_is_gone_and_clearing_again_is_no_error(
    store: EventStore, sid: str
) -> None:
    await store.append(sid, [make_event()], NO_STREAM)
    other = stream_id("notes", "t1", "lab", "other")
    await store.append(other, [make_event()], NO_STREAM)
    box = outbox(store)
    pending = await box.pending()
    mine = [p for p in pending if p.stream_id == sid]

    await box.clear(mine)
    await box.clear(mine)
    assert [p.stream_id for p in await box.pending()] == [other]


async def test_a_refused_or_repeated_append_leaves_no_marker(store: EventStore, sid: str) -> None:
    await store.append(sid, [make_event(command_id="c1")], NO_STREAM)
    with pytest.raises(ConcurrencyError):
        await store.append(sid, [make_event(command_id="c2")], NO_STREAM)
    again = await store.append(sid, [make_event(command_id="c1")], NO_STREAM)

    assert again.deduplicated
    assert [(p.first_seq, p.last_seq) for p in await outbox(store).pending()] == [(1, 1)]


async def test_fresh_markers_are_left_to_the_relay(store: EventStore, sid: str) -> None:
    await store.append(sid, [make_event()], NO_STREAM)
    box = outbox(store)

    assert await box.pending(older_than=60) == []
    await asyncio.sleep(0.05)
    assert len(await box.pending(older_than=0.01)) == 1


async def test_pending_takes_a_limit(store: EventStore, unique: str) -> None:
    for i in range(5):
        await store.append(stream_id("notes", "t1", "lab", f"s{i}-{unique}"), [make_event()], 0)

    assert len(await outbox(store).pending(limit=3)) == 3
    assert len(await outbox(store).pending()) == 5
