"""The Feed and CheckpointStore contracts (spine.feed): run unchanged against every
backend. Nothing here assumes a global position: events are compared per stream, and
positions only through the tokens a feed hands out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spine.events import NO_STREAM, EventEnvelope
from spine.feed import (
    CheckpointStore,
    Delivered,
    Feed,
    FeedBatch,
    Outbox,
    Subscription,
    Unreadable,
)
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.conftest import Harness, requires
from tests.contract.crash import die_after_appending


@pytest.fixture
async def store(feed_harness: Harness, unique: str) -> EventStore:
    s: EventStore = await feed_harness.backend.event_store(feed_harness.route(f"spine_{unique}"))
    return s


@pytest.fixture
async def feed(feed_harness: Harness, store: EventStore, unique: str) -> Feed:
    return await feed_harness.feed(store, f"feed_{unique}")


@pytest.fixture
async def checkpoints(feed_harness: Harness, unique: str) -> CheckpointStore:
    c: CheckpointStore = await feed_harness.backend.checkpoint_store(
        feed_harness.route(f"cp_{unique}")
    )
    return c


def sid(unique: str, name: str, domain: str = "notes") -> str:
    return stream_id(domain, "t1", "lab", f"{name}-{unique}")


async def append(store: EventStore, stream: str, n: int = 1, *, at: int = 0) -> None:
    for i in range(n):
        await store.append(stream, [make_event(tenant_id="t1")], at + i or NO_STREAM)


async def drain(subscription: Subscription, *, commit: bool = True) -> list[Delivered]:
    """Everything the subscription has now, each batch committed (unless told not to)."""
    seen: list[Delivered] = []
    while (batch := await subscription.next_batch(0)) is not None:
        seen.extend(batch.events)
        if commit:
            assert await subscription.commit(batch)
    return seen


async def drained(
    feed: Feed, consumer: str, checkpoints: CheckpointStore, *, commit: bool = True, **options: Any
) -> list[Delivered]:
    """:func:`drain` a new subscription of ``consumer``, then close it (a subscription
    left open may hold partitions: Kafka's consumer groups split them among members)."""
    subscription = feed.subscribe(consumer, checkpoints, **options)
    try:
        return await drain(subscription, commit=commit)
    finally:
        await subscription.aclose()


def per_stream(events: list[Delivered]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in events:
        out.setdefault(e.stream_id, []).append(e.seq)
    return out


async def test_feed_and_stores_satisfy_their_protocols(
    feed: Feed, checkpoints: CheckpointStore
) -> None:
    assert isinstance(feed, Feed)
    assert isinstance(checkpoints, CheckpointStore)
    assert isinstance(feed.subscribe("c", checkpoints), Subscription)


async def test_a_new_consumer_gets_every_committed_event_in_seq_order_per_stream(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    a, b = sid(unique, "a"), sid(unique, "b")
    await append(store, a, 3)
    await append(store, b, 2)
    await append(store, a, 1, at=3)

    seen = await drained(feed, "c", checkpoints)

    assert per_stream(seen) == {a: [1, 2, 3, 4], b: [1, 2]}
    assert all(isinstance(e, EventEnvelope) for e in seen)


async def test_batches_respect_the_batch_size_and_tokens_sort_in_delivery_order(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    await append(store, sid(unique, "a"), 7)
    subscription = feed.subscribe("c", checkpoints, batch_size=3)
    batches: list[FeedBatch] = []
    while (batch := await subscription.next_batch(0)) is not None:
        batches.append(batch)
        assert await subscription.commit(batch)

    assert all(0 < len(b.events) <= 3 for b in batches)
    assert sum(len(b.events) for b in batches) == 7
    for partition in {b.partition for b in batches}:
        tokens = [b.token for b in batches if b.partition == partition]
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == len(tokens)


async def test_a_committed_batch_is_not_delivered_again_and_a_new_subscription_resumes(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    a = sid(unique, "a")
    await append(store, a, 2)
    assert len(await drained(feed, "c", checkpoints)) == 2
    await append(store, a, 1, at=2)

    resumed = await drained(feed, "c", checkpoints)

    assert per_stream(resumed) == {a: [3]}
    positions = await checkpoints.get("c")
    assert positions
    assert set((await feed.lag(positions)).values()) == {0}


async def test_committing_a_batch_covers_the_batches_delivered_before_it(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    a = sid(unique, "a")
    await append(store, a, 5)
    subscription = feed.subscribe("c", checkpoints, batch_size=2)
    last: dict[str, FeedBatch] = {}
    while (batch := await subscription.next_batch(0)) is not None:
        last[batch.partition] = batch  # applied, not committed yet
    for batch in last.values():
        assert await subscription.commit(batch)

    assert await drained(feed, "c", checkpoints) == []


async def test_an_uncommitted_batch_is_delivered_again(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    a = sid(unique, "a")
    await append(store, a, 2)
    first = await drained(feed, "c", checkpoints, commit=False)

    again = await drained(feed, "c", checkpoints)

    assert per_stream(first) == per_stream(again) == {a: [1, 2]}
    assert await checkpoints.get("other") == {}


async def test_consumers_have_positions_of_their_own(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    await append(store, sid(unique, "a"), 2)
    assert len(await drained(feed, "one", checkpoints)) == 2
    assert len(await drained(feed, "two", checkpoints)) == 2
    assert await drained(feed, "one", checkpoints) == []


async def test_only_the_asked_for_domains_are_delivered_and_the_position_passes_the_rest(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    note, audit = sid(unique, "n"), sid(unique, "r", domain="audit")
    await append(store, audit, 2)
    await append(store, note, 1)
    await append(store, audit, 1, at=2)

    seen = await drained(feed, "c", checkpoints, domains=frozenset({"notes"}))

    assert per_stream(seen) == {note: [1]}
    assert set((await feed.lag(await checkpoints.get("c"))).values()) <= {0}


async def test_a_live_subscription_follows_a_reset_checkpoint(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    a = sid(unique, "a")
    await append(store, a, 2)
    subscription = feed.subscribe("c", checkpoints)
    assert len(await drain(subscription)) == 2

    await checkpoints.reset("c")
    batch = await subscription.next_batch(0.05)  # idle: it looks at the stored position

    assert batch is not None
    assert per_stream(list(batch.events)) == {a: [1, 2]}


async def test_a_commit_after_someone_else_moved_the_checkpoint_is_refused_and_followed(
    feed_harness: Harness, feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    requires(feed_harness, "independent_subscriptions")
    a = sid(unique, "a")
    await append(store, a, 2)
    slow, fast = feed.subscribe("c", checkpoints), feed.subscribe("c", checkpoints)
    stale = await slow.next_batch(0)
    assert len(await drain(fast)) == 2
    await append(store, a, 1, at=2)
    assert stale is not None

    assert await slow.commit(stale) is False
    after = await drain(slow)

    assert per_stream(after) == {a: [3]}  # from where the other one got to


async def test_next_batch_waits_for_a_commit_and_gives_up_after_its_timeout(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    subscription = feed.subscribe("c", checkpoints)
    assert await subscription.next_batch(0.05) is None
    waiting = asyncio.create_task(subscription.next_batch(10))
    await asyncio.sleep(0.02)
    await append(store, sid(unique, "a"), 1)

    batch = await asyncio.wait_for(waiting, 5)

    assert batch is not None
    assert [e.seq for e in batch.events] == [1]


async def test_a_tailing_consumer_never_skips_an_event_under_concurrent_writers(
    feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    """The classic lost event: a reader that checkpoints past a position that commits
    later never sees it. Whatever a feed's positions are, none may be skipped."""
    writers, per_writer = 40, 15
    done = asyncio.Event()
    seen: list[Delivered] = []

    async def writer(w: int) -> None:
        s = sid(unique, f"w{w}")
        for n in range(per_writer):
            await store.append(s, [make_event()], n or NO_STREAM)

    async def tail() -> None:
        subscription = feed.subscribe("tail", checkpoints, batch_size=7)
        while True:
            batch = await subscription.next_batch(0)
            if batch is not None:
                seen.extend(batch.events)
                await subscription.commit(batch)
            elif done.is_set():
                seen.extend(await drain(subscription))
                return
            else:
                await asyncio.sleep(0)

    reader = asyncio.create_task(tail())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await reader
    streams = per_stream(seen)
    assert len(streams) == writers
    wrong = {s: q for s, q in streams.items() if q != list(range(1, per_writer + 1))}
    assert wrong == {}


async def test_lag_counts_what_a_consumer_has_not_been_delivered(
    feed_harness: Harness, feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    # The direct relay counts what its outbox holds; how many events lie before a
    # consumer that has no position would take a count of the whole spine.
    requires(feed_harness, "lag_from_start")
    assert sum(v or 0 for v in (await feed.lag({})).values()) == 0
    await append(store, sid(unique, "a"), 3)
    assert sum(v or 0 for v in (await feed.lag({})).values()) == 3
    await drained(feed, "c", checkpoints)
    assert sum(v or 0 for v in (await feed.lag(await checkpoints.get("c"))).values()) == 0
    assert set(await feed.heads()) >= set(await checkpoints.get("c"))


async def test_an_undecodable_event_is_delivered_as_unreadable_and_the_rest_still_come(
    feed_harness: Harness, feed: Feed, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    good, bad = sid(unique, "good"), sid(unique, "bad")
    await append(store, good, 1)
    await feed_harness.tamper(store, bad, 1, b'{"not": "an event"')
    await append(store, good, 1, at=1)

    seen = await drained(feed, "c", checkpoints)

    assert per_stream(seen) == {good: [1, 2], bad: [1]}
    (broken,) = [e for e in seen if e.stream_id == bad]
    assert isinstance(broken, Unreadable)
    assert broken.error


# -- CheckpointStore ------------------------------------------------------------------------


async def until(subscription: Subscription, count: int, timeout: float = 30.0) -> list[Delivered]:
    """Batches (each committed) until ``count`` events came; fails after ``timeout`` s."""
    seen: list[Delivered] = []
    async with asyncio.timeout(timeout):
        while len(seen) < count:
            batch = await subscription.next_batch(0.2)
            if batch is not None:
                seen.extend(batch.events)
                assert await subscription.commit(batch)
    return seen


async def test_an_append_whose_process_died_before_delivery_still_arrives(
    feed_harness: Harness, store: EventStore, checkpoints: CheckpointStore, unique: str
) -> None:
    """A process that commits an append and dies before anything delivers it (a real
    second process, ended with ``os._exit``) loses nothing: a feed started after its
    death delivers it, and so does a feed already running (for an outbox store, its
    sweeper); then no outbox marker is left."""
    route = feed_harness.route(f"spine_{unique}")
    a, b = sid(unique, "a"), sid(unique, "b")

    await die_after_appending(feed_harness, route, [(a, 0)])  # while no feed runs
    feed = await feed_harness.feed(store, f"feed_{unique}")
    subscription = feed.subscribe("p", checkpoints)
    assert per_stream(await until(subscription, 1)) == {a: [1]}

    await die_after_appending(feed_harness, route, [(a, 1), (b, 0)])  # while it runs
    assert per_stream(await until(subscription, 2)) == {a: [2], b: [1]}
    assert await subscription.next_batch(0) is None
    if isinstance(store, Outbox):
        assert [p for p in await store.pending() if p.stream_id in (a, b)] == []
