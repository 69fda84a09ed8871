"""The Cosmos DB event store against cosmosdb-server, beyond the contract suites: its
batch limits, a server that is down, and writers racing from separate clients (as
separate processes would)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from routing.backends.cosmos import CosmosBackend, open_backend
from routing.backends.cosmos.spine import MAX_BATCH_BYTES, MAX_EVENTS, CosmosEventStore
from routing.config import Route, RoutesFile
from routing.registry import Registry
from spine.codec import verify_chain
from spine.errors import BackendUnavailable, ConcurrencyError, InvalidAppend
from spine.events import ANY, NO_STREAM, ExpectedVersion
from spine.feed import Outbox
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.cloud_cosmos import cosmos_connections, cosmos_harness
from tests.contract.harness import Harness, requires
from tests.servers.fixtures import COSMOSDB_SERVER, CosmosDBServer
from tests.servers.process import ServerProcess, free_port

pytestmark = pytest.mark.cosmos

WRITERS = 20


def route(unique: str) -> Route:
    return Route(backend="cosmos", name=f"spine_{unique}")


@pytest.fixture
def sid(unique: str) -> str:
    return stream_id("notes", "t1", "lab", f"n-{unique}")


@pytest.fixture
async def harness(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with cosmos_harness(cosmosdb_server, f"engines-{unique}", tmp_path) as h:
        yield h


@pytest.fixture
async def store(harness: Harness, unique: str) -> CosmosEventStore:
    s: CosmosEventStore = await harness.backend.event_store(route(unique))
    return s


@pytest.fixture
async def writers(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path
) -> AsyncIterator[list[CosmosEventStore]]:
    """One store per writer, each through a client of its own, on one container."""
    connections = cosmos_connections(cosmosdb_server, f"engines-{unique}")
    async with AsyncExitStack() as stack:
        stores: list[CosmosEventStore] = []
        for _ in range(WRITERS):
            backend = await open_backend(connections, tmp_path, create=True)
            stack.push_async_callback(backend.aclose)
            stores.append(await backend.event_store(route(unique)))
        yield stores


async def items_by_type(server: CosmosDBServer, database: str, container: str) -> Counter[str]:
    """Every item in the container, counted by type, read behind the store's back."""
    async with CosmosClient(
        server.endpoint_url, credential=server.key, connection_verify=server.connection_verify
    ) as client:
        items = client.get_database_client(database).get_container_client(container)
        return Counter([item["type"] async for item in items.query_items("SELECT c.type FROM c")])


async def test_an_append_over_the_batch_operation_limit_is_refused_and_writes_nothing(
    store: CosmosEventStore, sid: str
) -> None:
    events = [make_event(command_id="big") for _ in range(MAX_EVENTS + 1)]
    with pytest.raises(InvalidAppend, match=f"atomic limit of {MAX_EVENTS}.*not split"):
        await store.append(sid, events, NO_STREAM)
    assert await store.read_stream(sid) == []
    assert await store.pending() == []

    result = await store.append(sid, events[:MAX_EVENTS], NO_STREAM)  # the most it takes
    assert (result.first_seq, result.last_seq) == (1, MAX_EVENTS)
    assert verify_chain(await store.read_stream(sid)) == MAX_EVENTS


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("x" * (MAX_BATCH_BYTES // 2), 2),  # about 2 MiB of ASCII
        ("é" * (MAX_BATCH_BYTES // 5), 1),  # fits in UTF-8; not as the SDK escapes it
    ],
)
async def test_an_append_over_the_batch_size_limit_is_refused_and_writes_nothing(
    store: CosmosEventStore, sid: str, text: str, count: int
) -> None:
    await store.append(sid, [make_event(command_id="small")], NO_STREAM)
    events = [make_event(command_id="big", payload={"text": text}) for _ in range(count)]
    with pytest.raises(InvalidAppend, match=f"over its limit of {MAX_BATCH_BYTES}.*not split"):
        await store.append(sid, events, 1)
    assert [e.command_id for e in await store.read_stream(sid)] == ["small"]
    assert [(p.first_seq, p.last_seq) for p in await store.pending()] == [(1, 1)]


async def test_twenty_writers_with_any_on_one_stream_get_one_seq_each_and_a_valid_chain(
    writers: list[CosmosEventStore], sid: str, cosmosdb_server: CosmosDBServer, unique: str
) -> None:
    results = await asyncio.gather(
        *(w.append(sid, [make_event(command_id=f"w-{n}")], ANY) for n, w in enumerate(writers))
    )

    assert sorted(r.last_seq for r in results) == list(range(1, WRITERS + 1))
    events = await writers[0].read_stream(sid)
    assert [e.seq for e in events] == list(range(1, WRITERS + 1))
    assert {e.command_id for e in events} == {f"w-{n}" for n in range(WRITERS)}
    assert verify_chain(events) == WRITERS
    pending = await writers[0].pending()
    assert sorted((p.first_seq, p.last_seq) for p in pending) == [
        (n, n) for n in range(1, WRITERS + 1)
    ]
    # Every lost race failed on its first operation: even without atomic batches,
    # nothing but the winners' items is stored.
    found = await items_by_type(cosmosdb_server, f"engines-{unique}", f"spine_{unique}")
    assert found == {"event": WRITERS, "command": WRITERS, "outbox": WRITERS}


@pytest.mark.parametrize("expected", [NO_STREAM, ANY])
async def test_one_command_sent_by_two_writers_at_once_is_written_once(
    writers: list[CosmosEventStore],
    sid: str,
    expected: ExpectedVersion,
    cosmosdb_server: CosmosDBServer,
    unique: str,
) -> None:
    await writers[0].append(sid, [make_event(command_id="first")], NO_STREAM)
    command = [make_event(command_id="twice"), make_event(command_id="twice")]
    version = 1 if expected is NO_STREAM else ANY  # NO_STREAM is stale: dedup wins anyway
    results = await asyncio.gather(
        *(w.append(sid, command, version) for w in writers[:2]), return_exceptions=True
    )
    answers = [r for r in results if not isinstance(r, BaseException)]

    assert len(answers) == 2, results
    assert sorted(r.deduplicated for r in answers) == [False, True]
    assert answers[0].events == answers[1].events
    assert [e.seq for e in await writers[0].read_stream(sid)] == [1, 2, 3]
    found = await items_by_type(cosmosdb_server, f"engines-{unique}", f"spine_{unique}")
    assert found == {"event": 3, "command": 2, "outbox": 2}


async def test_writers_racing_for_one_exact_version_get_one_winner(
    writers: list[CosmosEventStore], sid: str
) -> None:
    await writers[0].append(sid, [make_event()], NO_STREAM)
    results = await asyncio.gather(
        *(w.append(sid, [make_event()], 1) for w in writers), return_exceptions=True
    )

    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert [r.last_seq for r in won] == [2]
    assert all(isinstance(e, ConcurrencyError) and e.actual == 2 for e in lost)
    assert len(await writers[0].read_stream(sid)) == 2


async def test_a_batch_failing_midway_leaves_nothing(
    harness: Harness, cosmosdb_server: CosmosDBServer, unique: str
) -> None:
    """What the batch order does not have to cover where batches are atomic."""
    requires(
        harness,
        "atomic_batch",
        "cosmosdb-server runs a batch's operations one by one and keeps those before a failure",
    )
    store: CosmosEventStore = await harness.backend.event_store(route(unique))
    await store.container.create_item({"id": "taken", "stream_id": "s", "type": "x"})
    with pytest.raises(Exception, match="409"):
        await store.container.execute_item_batch(
            [
                ("create", ({"id": "new", "stream_id": "s", "type": "x"},)),
                ("create", ({"id": "taken", "stream_id": "s", "type": "x"},)),
            ],
            partition_key="s",
        )
    found = await items_by_type(cosmosdb_server, f"engines-{unique}", f"spine_{unique}")
    assert found == {"x": 1}


@pytest.fixture
def own_cosmosdb_server(cosmosdb_server: CosmosDBServer) -> Iterator[ServerProcess]:
    """A cosmosdb-server of this test's own, to stop (the session's one stays up)."""
    server = CosmosDBServer(port=free_port())
    with ServerProcess.start(
        "cosmosdb-server",
        [str(COSMOSDB_SERVER), "--host", server.host, "-p", str(server.port)],
        ready_url=f"{server.endpoint_url}/",
        timeout=30,
    ) as process:
        process.server = server  # type: ignore[attr-defined]
        yield process


async def test_a_server_that_stops_answering_is_unavailable_naming_route_and_backend(
    own_cosmosdb_server: ServerProcess, unique: str, sid: str, tmp_path: Path
) -> None:
    server: CosmosDBServer = own_cosmosdb_server.server  # type: ignore[attr-defined]
    backend = await open_backend(cosmos_connections(server, "engines"), tmp_path, create=True)
    try:
        store = await backend.event_store(route(unique))
        await store.append(sid, [make_event()], NO_STREAM)

        own_cosmosdb_server.stop()

        for call in (store.append(sid, [make_event()], 1), store.pending()):
            with pytest.raises(BackendUnavailable) as info:
                await call
            assert (info.value.route, info.value.backend) == (f"spine_{unique}", "cosmos")
            assert "cannot reach the service" in str(info.value)
    finally:
        await backend.aclose()


async def test_a_server_that_is_not_there_is_unavailable_naming_route_and_backend(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path
) -> None:
    nowhere = CosmosDBServer(port=free_port())  # nothing listens there
    backend: CosmosBackend = await open_backend(
        cosmos_connections(nowhere, "engines"), tmp_path, create=True
    )
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.event_store(route(unique))
        assert (info.value.route, info.value.backend) == (f"spine_{unique}", "cosmos")
        assert f"backend 'cosmos' for route 'spine_{unique}'" in str(info.value)
        with pytest.raises(BackendUnavailable, match="database engines"):
            await backend.ping()
    finally:
        await backend.aclose()


async def test_a_routes_file_sends_the_spine_to_cosmos_and_readiness_asks_it(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path, sid: str
) -> None:
    connections = cosmos_connections(cosmosdb_server, f"engines-{unique}")
    routes = RoutesFile(
        mode="saas",
        connections=connections,
        routes={"event_spine": Route(backend="cosmos", name=f"spine_{unique}")},
    )
    registry = Registry(routes, tmp_path)
    try:
        spine = await registry.event_store()
        await spine.append(sid, [make_event()], NO_STREAM)
        assert isinstance(spine, CosmosEventStore)
        assert isinstance(spine, Outbox)
        assert await registry.ready() == {"cosmos": None}
    finally:
        await registry.aclose()


async def test_readiness_fails_naming_a_container_gone_since_it_was_opened(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path, sid: str
) -> None:
    """A server that restarted empty, or a container deleted behind the service's back:
    the account answers, but the store's container is gone, and readiness says so."""
    connections = cosmos_connections(cosmosdb_server, f"engines-{unique}")
    routes = RoutesFile(
        mode="saas",
        connections=connections,
        routes={"event_spine": Route(backend="cosmos", name=f"spine_{unique}")},
    )
    registry = Registry(routes, tmp_path)
    try:
        await registry.event_store()
        _, backend = await registry.backend("event_spine")
        database = backend.client.get_database_client(f"engines-{unique}")
        await database.delete_container(f"spine_{unique}")

        answers = await registry.ready()

        assert answers["cosmos"] is not None
        assert f"container 'spine_{unique}' no longer exists" in answers["cosmos"]
        await backend.client.delete_database(f"engines-{unique}")
        assert "the database does not exist" in str((await registry.ready())["cosmos"])
    finally:
        await registry.aclose()
