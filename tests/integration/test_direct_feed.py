"""What only ``spine_feed: direct`` does, on every cloud event store with an outbox
(DynamoDB on moto_server, Cosmos DB on cosmosdb-server, Firestore on its emulator): an
append whose process dies before delivery still arrives, a marker waits for every
consumer, and a consumer with no checkpoint catches up from the spine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from routing.backends.cosmos import CosmosEventStore
from routing.backends.cosmos import open_backend as open_cosmos
from routing.backends.direct import PARTITION, DirectBackend, DirectFeed
from routing.backends.direct import open_backend as open_direct
from routing.backends.dynamodb import DynamoEventStore
from routing.backends.dynamodb import open_backend as open_dynamodb
from routing.backends.firestore import FirestoreEventStore
from routing.backends.firestore import open_backend as open_firestore
from routing.config import Connections, Route
from spine.errors import RoutingError
from spine.events import NO_STREAM
from spine.feed import CheckpointStore, Delivered, Subscription
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.cloud_cosmos import cosmos_connections
from tests.contract.cloud_dynamodb import dynamodb_connections
from tests.contract.cloud_firestore import emulator_connections

FEED = Route(backend="direct", name="feed")

Spine = DynamoEventStore | CosmosEventStore | FirestoreEventStore


class Stores:
    """Opens the backend holding a deployment's spine and checkpoints (the same tables,
    containers or collections each time; ``suffix`` ends their names)."""

    def __init__(
        self, name: str, open_backend: Callable[[], Awaitable[Any]], suffix: str = ""
    ) -> None:
        self.name, self.open, self.suffix = name, open_backend, suffix


@pytest.fixture(
    params=[
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
        pytest.param("cosmos", marks=pytest.mark.cosmos),
        pytest.param("firestore", marks=pytest.mark.firestore),
    ]
)
def stores(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Stores:
    if request.param == "dynamodb":
        moto = request.getfixturevalue("moto_server")
        connections = dynamodb_connections(moto, f"d{unique}_")
        return Stores("dynamodb", lambda: open_dynamodb(connections, tmp_path))
    if request.param == "cosmos":
        cosmos = request.getfixturevalue("cosmosdb_server")
        connections = cosmos_connections(cosmos, f"engines-{unique}")
        return Stores("cosmos", lambda: open_cosmos(connections, tmp_path))
    # one emulator project serves the session: the collections' names carry the test's
    connections = emulator_connections(request.getfixturevalue("firestore_emulator"))
    return Stores("firestore", lambda: open_firestore(connections, tmp_path), f"_{unique}")


class Process:
    """What one process of the service holds: the stores' backend and the relay."""

    def __init__(self, stores: Stores, backend: Any, direct: DirectBackend) -> None:
        self.backend, self.direct = backend, direct
        self.spine_route = Route(backend=stores.name, name="spine" + stores.suffix)
        self.checkpoints_route = Route(backend=stores.name, name="checkpoints" + stores.suffix)

    async def spine(self) -> Spine:
        store: Spine = await self.backend.event_store(self.spine_route)
        return store

    async def checkpoints(self) -> CheckpointStore:
        store: CheckpointStore = await self.backend.checkpoint_store(self.checkpoints_route)
        return store

    async def feed(self) -> DirectFeed:
        return await self.direct.feed(FEED, await self.spine())


def opener(
    stores: Stores, tmp_path: Path
) -> Callable[[], contextlib.AbstractAsyncContextManager[Process]]:
    """Opens a process of one deployment, its sweeper quick."""

    @contextlib.asynccontextmanager
    async def process() -> AsyncIterator[Process]:
        backend = await stores.open()
        direct = await open_direct(
            Connections(), tmp_path, create=True, sweep_interval=0.1, sweep_after=0.3
        )
        try:
            yield Process(stores, backend, direct)
        finally:
            await direct.aclose()
            await backend.aclose()

    return process


def sid(unique: str, name: str, domain: str = "notes") -> str:
    return stream_id(domain, "t1", "saas", f"{name}-{unique}")


async def append(spine: Spine, stream: str, at: int = 0) -> None:
    await spine.append(stream, [make_event(tenant_id="t1", mode="saas")], at or NO_STREAM)


async def until(subscription: Subscription, count: int, timeout: float = 10.0) -> list[Delivered]:
    """Batches (each committed) until ``count`` events came, or the timeout."""
    seen: list[Delivered] = []
    async with asyncio.timeout(timeout):
        while len(seen) < count:
            batch = await subscription.next_batch(0.1)
            if batch is not None:
                seen.extend(batch.events)
                assert await subscription.commit(batch)
    return seen


def seqs(events: list[Delivered]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in events:
        out.setdefault(e.stream_id, []).append(e.seq)
    return out


async def test_an_append_whose_process_died_before_delivery_still_arrives(
    stores: Stores, tmp_path: Path, unique: str
) -> None:
    process = opener(stores, tmp_path)
    a, b = sid(unique, "a"), sid(unique, "b")
    async with process() as first:
        spine, checkpoints = await first.spine(), await first.checkpoints()
        await append(spine, a)
        subscription = (await first.feed()).subscribe("p", checkpoints)
        assert seqs(await until(subscription, 1)) == {a: [1]}
        await subscription.aclose()  # the projector is gone: the next appends wait
        await append(spine, a, at=1)
        await append(spine, b)
        # the process dies: nothing delivered them, their markers stay
        assert {(p.stream_id, p.first_seq) for p in await spine.pending()} == {(a, 2), (b, 1)}

    async with process() as second:
        checkpoints = await second.checkpoints()
        assert PARTITION in await checkpoints.get("p")
        subscription = (await second.feed()).subscribe("p", checkpoints)
        assert seqs(await until(subscription, 2)) == {a: [2], b: [1]}
        assert await (await second.spine()).pending() == []

    # and while a relay runs, another process's append reaches it through the sweeper
    async with process() as relay, process() as other:
        feed = await relay.feed()
        subscription = feed.subscribe("p", await relay.checkpoints())
        assert await subscription.next_batch(0) is None
        await append(await other.spine(), b, at=1)
        assert seqs(await until(subscription, 1)) == {b: [2]}
        assert feed.swept >= 1


async def test_a_marker_is_cleared_only_once_every_consumer_has_committed_past_it(
    stores: Stores, tmp_path: Path, unique: str
) -> None:
    process = opener(stores, tmp_path)
    a = sid(unique, "a")
    async with process() as one:
        spine, checkpoints, feed = await one.spine(), await one.checkpoints(), await one.feed()
        await append(spine, a)
        first, second = feed.subscribe("one", checkpoints), feed.subscribe("two", checkpoints)
        await until(first, 1)
        await until(second, 1)  # both caught up from the spine, both have checkpoints

        await append(spine, a, at=1)
        assert seqs(await until(first, 1)) == {a: [2]}
        assert [p.first_seq for p in await spine.pending()] == [2]  # "two" has not
        batch = await second.next_batch(1)
        assert batch is not None
        assert [e.seq for e in batch.events] == [2]
        assert [p.first_seq for p in await spine.pending()] == [2]  # delivered, not committed
        assert await second.commit(batch)
        assert await spine.pending() == []

        # "two" stops; the next marker waits for it, though "one" took it at once
        await second.aclose()
        await append(spine, a, at=2)
        assert seqs(await until(first, 1)) == {a: [3]}
        await asyncio.sleep(0.3)  # a sweep or two: "two" has a position, so it waits
        assert [p.first_seq for p in await spine.pending()] == [3]

    async with process() as restarted:  # "one" subscribes first, "two" a moment later
        feed, checkpoints = await restarted.feed(), await restarted.checkpoints()
        first = feed.subscribe("one", checkpoints)
        assert seqs(await until(first, 1)) == {a: [3]}  # pending: delivered again
        assert [p.first_seq for p in await (await restarted.spine()).pending()] == [3]
        second = feed.subscribe("two", checkpoints)
        assert seqs(await until(second, 1)) == {a: [3]}
        assert await (await restarted.spine()).pending() == []


async def test_a_consumer_with_no_checkpoint_catches_up_from_the_spine(
    stores: Stores, tmp_path: Path, unique: str
) -> None:
    process = opener(stores, tmp_path)
    a, b, other = sid(unique, "a"), sid(unique, "b"), sid(unique, "x", domain="audit")
    async with process() as one:
        spine, checkpoints, feed = await one.spine(), await one.checkpoints(), await one.feed()
        for n in range(5):
            await append(spine, a, at=n)
        await append(spine, b)
        await append(spine, other)
        old = feed.subscribe("old", checkpoints, domains=frozenset({"audit"}))
        await until(old, 1)
        # every marker is gone: "old" took its own, and nobody else takes the rest
        await asyncio.sleep(0.3)
        assert await spine.pending() == []

        new = feed.subscribe("new", checkpoints, domains=frozenset({"notes"}), batch_size=2)
        caught_up = await until(new, 6)
        assert seqs(caught_up) == {a: [1, 2, 3, 4, 5], b: [1]}
        await append(spine, b, at=1)  # then it follows live
        assert seqs(await until(new, 1)) == {b: [2]}

        await checkpoints.reset("new")  # a reset one catches up again
        assert seqs(await until(new, 7)) == {a: [1, 2, 3, 4, 5], b: [1, 2]}


async def test_direct_needs_an_event_store_with_an_outbox(tmp_path: Path) -> None:
    from routing.backends.sqlite import open_backend as open_sqlite
    from routing.config import SqliteConnection

    sqlite = await open_sqlite(Connections(sqlite=SqliteConnection(path="x.db")), tmp_path)
    direct = await open_direct(Connections(), tmp_path, create=True)
    try:
        spine = await sqlite.event_store(Route(backend="sqlite", name="spine", lab=True))
        with pytest.raises(RoutingError, match="spine_feed: direct needs a cloud event store"):
            await direct.feed(FEED, spine)
    finally:
        await direct.aclose()
        await sqlite.aclose()


async def test_a_consumer_known_from_its_checkpoint_waits_only_for_its_domains(
    stores: Stores, tmp_path: Path, unique: str
) -> None:
    process = opener(stores, tmp_path)
    note, audit = sid(unique, "n"), sid(unique, "r", domain="audit")
    async with process() as one:
        checkpoints, feed = await one.checkpoints(), await one.feed()
        for name, domain in (("notes-view", "notes"), ("audit-view", "audit")):
            subscription = feed.subscribe(name, checkpoints, domains=frozenset({domain}))
            await append(await one.spine(), sid(unique, f"seed-{name}", domain=domain))
            await until(subscription, 1)

    async with process() as restarted:
        spine, checkpoints = await restarted.spine(), await restarted.checkpoints()
        feed = await restarted.feed()
        notes = feed.subscribe("notes-view", checkpoints, domains=frozenset({"notes"}))
        assert await notes.next_batch(0) is None  # knows "audit-view", domains unknown
        await append(spine, note)
        await append(spine, audit)
        assert seqs(await until(notes, 1)) == {note: [1]}
        assert {p.stream_id for p in await spine.pending()} == {note, audit}

        audits = feed.subscribe("audit-view", checkpoints, domains=frozenset({"audit"}))
        assert seqs(await until(audits, 1)) == {audit: [1]}
        await asyncio.sleep(0.3)  # its domains known: the note's marker no longer waits
        assert await spine.pending() == []


async def test_consumers_subscribing_at_once_each_get_every_event(
    stores: Stores, tmp_path: Path, unique: str
) -> None:
    """Every projector of a service subscribes at start-up, at once: their first reads of
    the checkpoint stores overlap (a race once made all but one fail)."""
    process = opener(stores, tmp_path)
    a = sid(unique, "a")
    async with process() as one:
        spine, checkpoints, feed = await one.spine(), await one.checkpoints(), await one.feed()
        await append(spine, a)
        subscriptions = [feed.subscribe(f"p{n}", checkpoints) for n in range(8)]

        seen = await asyncio.gather(*(until(s, 1) for s in subscriptions))

        assert [seqs(events) for events in seen] == [{a: [1]}] * 8
