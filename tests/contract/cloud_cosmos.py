"""The Cosmos DB harness for the contract suites: the backend against the session's
cosmosdb-server, with a fresh database per test.

cosmosdb-server's transactional batch is not atomic (DESIGN §8): the harness does not
declare ``atomic_batch``, which real Cosmos DB (and the official emulator) would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from azure.cosmos.aio import ContainerProxy, CosmosClient

from routing.backends.cosmos import open_backend
from routing.backends.cosmos.spine import CosmosEventStore, event_item_id
from routing.backends.direct import open_backend as open_direct
from routing.config import Connections, CosmosConnection
from spine.store import EventStore
from tests.contract.harness import Harness, stored_attributes
from tests.servers.fixtures import CosmosDBServer


def cosmos_connections(server: CosmosDBServer, database: str) -> Connections:
    return Connections(
        cosmos=CosmosConnection(
            endpoint=server.endpoint_url,
            key=server.key,
            database=database,
            verify_tls=server.connection_verify,
        )
    )


class CosmosTampering:
    """Behind the Cosmos DB spine's back, with a client of its own (the layout is in
    :mod:`routing.backends.cosmos`)."""

    def __init__(self, server: CosmosDBServer, database: str) -> None:
        self.server = server
        self.database = database

    @asynccontextmanager
    async def _container(self, spine: EventStore) -> AsyncIterator[ContainerProxy]:
        assert isinstance(spine, CosmosEventStore)
        s = self.server
        async with CosmosClient(
            s.endpoint_url, credential=s.key, connection_verify=s.connection_verify
        ) as client:
            yield client.get_database_client(self.database).get_container_client(spine.route)

    async def put(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        digest, command_id = stored_attributes(body)
        async with self._container(spine) as container:
            await container.upsert_item(
                {
                    "id": event_item_id(seq),
                    "stream_id": stream_id,
                    "type": "event",
                    "seq": seq,
                    "command_id": command_id,
                    "hash": digest,
                    "body": body.decode(),
                }
            )

    async def remove(self, spine: EventStore, stream_id: str, seq: int) -> None:
        async with self._container(spine) as container:
            await container.delete_item(event_item_id(seq), partition_key=stream_id)

    async def remove_stream(self, spine: EventStore, stream_id: str) -> None:
        """Every item of the stream's partition: events, command and outbox markers."""
        async with self._container(spine) as container:
            items = container.query_items(
                "SELECT c.id FROM c WHERE c.stream_id = @s",
                parameters=[{"name": "@s", "value": stream_id}],
                partition_key=stream_id,
            )
            ids = [item["id"] async for item in items]
            for item_id in ids:
                await container.delete_item(item_id, partition_key=stream_id)


@asynccontextmanager
async def cosmos_harness(
    server: CosmosDBServer, database: str, data_dir: Path
) -> AsyncIterator[Harness]:
    """A harness on a backend of its own, on ``database`` (created on first use)."""
    connections = cosmos_connections(server, database)
    backend = await open_backend(connections, data_dir, create=True)

    async def tamper(spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        assert isinstance(spine, CosmosEventStore)
        async with CosmosClient(
            server.endpoint_url, credential=server.key, connection_verify=server.connection_verify
        ) as client:
            container = client.get_database_client(database).get_container_client(spine.route)
            await container.upsert_item(
                {
                    "id": event_item_id(seq),
                    "stream_id": stream_id,
                    "type": "event",
                    "seq": seq,
                    "command_id": "tampered",
                    "hash": "x",
                    "body": body.decode(),
                }
            )

    try:
        yield Harness(
            "cosmos",
            backend,
            lab=False,
            tamper=tamper,
            capabilities={"independent_subscriptions"},
            connections=connections,
            data_dir=data_dir,
            tampering=CosmosTampering(server, database),
        )
    finally:
        await backend.aclose()


@pytest.fixture
async def cosmos_backend(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with cosmos_harness(cosmosdb_server, f"engines-{unique}", tmp_path) as harness:
        yield harness


@pytest.fixture
async def cosmos_direct_backend(cosmos_backend: Harness) -> AsyncIterator[Harness]:
    """The Cosmos DB spine and checkpoints, delivered by ``spine_feed: direct``."""
    direct = await open_direct(
        Connections(), Path("."), create=True, sweep_interval=2.0, sweep_after=1.0
    )
    try:
        yield replace(
            cosmos_backend,
            name="cosmos",
            feeder=direct,
            feeder_name="direct",
            capabilities=set(cosmos_backend.capabilities),
        )
    finally:
        await direct.aclose()
