"""What only the DynamoDB event store does, against moto_server: its limits, a server
that is down, and racing appends of one command."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from routing.backends.dynamodb import MAX_EVENTS, DynamoEventStore
from routing.backends.dynamodb import open_backend as open_dynamodb
from routing.config import Connections, DynamoDBConnection, Route
from spine.codec import verify_chain
from spine.errors import BackendUnavailable, InvalidAppend
from spine.events import ANY, NO_STREAM
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.cloud_dynamodb import dynamodb_connections
from tests.servers.fixtures import MotoServer
from tests.servers.process import free_port

pytestmark = pytest.mark.dynamodb


@pytest.fixture
async def store(moto_server: MotoServer, tmp_path: Path, unique: str) -> DynamoEventStore:
    backend = await open_dynamodb(dynamodb_connections(moto_server, f"i{unique}_"), tmp_path)
    try:
        yield await backend.event_store(Route(backend="dynamodb", name="spine"))
    finally:
        await backend.aclose()


@pytest.fixture
def sid(unique: str) -> str:
    return stream_id("notes", "t1", "saas", f"n-{unique}")


async def test_an_append_over_the_transaction_limit_is_refused_and_writes_nothing(
    store: DynamoEventStore, sid: str
) -> None:
    too_many = [make_event(command_id="c", mode="saas") for _ in range(MAX_EVENTS + 1)]
    with pytest.raises(InvalidAppend, match="atomic limit of 98"):
        await store.append(sid, too_many, NO_STREAM)
    big = make_event(command_id="c", mode="saas", payload={"blob": "x" * 400_000})
    with pytest.raises(InvalidAppend, match="refused, not split"):
        await store.append(sid, [big], NO_STREAM)

    assert await store.read_stream(sid) == []
    assert await store.pending() == []
    full = [make_event(command_id="c", mode="saas") for _ in range(MAX_EVENTS)]
    assert (await store.append(sid, full, NO_STREAM)).last_seq == MAX_EVENTS


async def test_two_racing_appends_of_one_command_write_it_once(
    store: DynamoEventStore, sid: str
) -> None:
    first, second = await asyncio.gather(
        store.append(sid, [make_event(command_id="same", mode="saas")], NO_STREAM),
        store.append(sid, [make_event(command_id="same", mode="saas")], NO_STREAM),
    )

    assert sorted([first.deduplicated, second.deduplicated]) == [False, True]
    assert first.events == second.events
    assert len(await store.read_stream(sid)) == 1
    assert len(await store.pending()) == 1


async def test_twenty_writers_with_any_get_one_seq_each_and_a_whole_chain(
    store: DynamoEventStore, sid: str
) -> None:
    results = await asyncio.gather(
        *(store.append(sid, [make_event(command_id=f"w{i}", mode="saas")], ANY) for i in range(20))
    )

    assert sorted(r.last_seq for r in results) == list(range(1, 21))
    assert verify_chain(await store.read_stream(sid)) == 20


async def test_a_server_that_is_down_is_unavailable_naming_route_and_backend(
    tmp_path: Path,
) -> None:
    closed = Connections(
        dynamodb=DynamoDBConnection(
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            access_key_id="testing",
            secret_access_key="testing",
        )
    )
    backend = await open_dynamodb(closed, tmp_path)
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.event_store(Route(backend="dynamodb", name="spine"))
    finally:
        await backend.aclose()

    assert "spine" in str(info.value)
    assert "dynamodb" in str(info.value)
    assert time.monotonic() - started < 30


async def test_without_create_a_missing_table_is_unavailable_not_made(
    moto_server: MotoServer, tmp_path: Path, unique: str
) -> None:
    backend = await open_dynamodb(
        dynamodb_connections(moto_server, f"n{unique}_"), tmp_path, create=False
    )
    try:
        with pytest.raises(BackendUnavailable, match="provision"):
            await backend.event_store(Route(backend="dynamodb", name="spine"))
    finally:
        await backend.aclose()


async def test_readiness_fails_naming_a_table_gone_since_it_was_opened(
    moto_server: MotoServer, tmp_path: Path, unique: str
) -> None:
    """A server that restarted empty, or a table deleted behind the service's back: the
    service answers, but the store's table is gone, and ``ping`` says which."""
    backend = await open_dynamodb(dynamodb_connections(moto_server, f"r{unique}_"), tmp_path)
    try:
        await backend.event_store(Route(backend="dynamodb", name="spine"))
        await backend.ping()
        await backend._client.delete_table(TableName=f"r{unique}_spine")

        with pytest.raises(BackendUnavailable, match=f"table 'r{unique}_spine' no longer exists"):
            await backend.ping()
    finally:
        await backend.aclose()
