"""The Cosmos DB harness for the contract suites: the backend against the session's
cosmosdb-server, with a fresh database per test.

cosmosdb-server's transactional batch is not atomic (DESIGN §8): the harness does not
declare ``atomic_batch``, which real Cosmos DB (and the official emulator) would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from routing.backends.cosmos import open_backend
from routing.backends.cosmos.spine import CosmosEventStore, event_item_id
from routing.config import Connections, CosmosConnection
from spine.store import EventStore
from tests.contract.conftest import Harness
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


@pytest.fixture
async def cosmos_backend(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    connections = cosmos_connections(cosmosdb_server, f"engines-{unique}")
    backend = await open_backend(connections, tmp_path, create=True)

    async def tamper(spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        assert isinstance(spine, CosmosEventStore)
        async with CosmosClient(
            cosmosdb_server.endpoint_url,
            credential=cosmosdb_server.key,
            connection_verify=cosmosdb_server.connection_verify,
        ) as client:
            container = client.get_database_client(f"engines-{unique}").get_container_client(
                spine.route
            )
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
        yield Harness("cosmos", backend, lab=False, tamper=tamper, capabilities=set())
    finally:
        await backend.aclose()
