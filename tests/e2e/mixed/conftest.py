"""Mixed routing (issue 9, item 8): the spine on DynamoDB, notes on Cosmos DB, flows on
Firestore and every other kind spread over the three, each on its real local server.

The domain scenarios run here are the end-to-end tests of each domain, unchanged: this
package overrides only the ``settings`` fixture they build their service from. The
routes are lab mode so the scenarios' lab tokens and stream ids hold; the cloud routes
are ordinary (not ``lab: true``) routes, the same stores a saas deployment opens
(``examples/routes/mixed.yaml`` is the saas form). Each test gets fresh tables, a fresh
Cosmos database and fresh Firestore collections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import pytest

from engines.settings import Settings, load_settings
from routing.config import (
    Connections,
    CosmosConnection,
    DynamoDBConnection,
    FirestoreConnection,
    Route,
    RouteOptions,
)
from tests.servers.fixtures import CosmosDBServer, FirestoreEmulator, MotoServer

#: Which backend serves each kind (the spine's feed is ``direct``, the bus in-process).
PLACES: Final = {
    "event_spine": "dynamodb",
    "projection_checkpoints": "firestore",
    "notes_store": "cosmos",
    "flow_store": "firestore",
    "graph_store": "dynamodb",
    "overlay_store": "cosmos",
    "blackboard_store": "firestore",
    "memory_store": "dynamodb",
    "budget_store": "cosmos",
    "strategy_lock_store": "firestore",
    "seo_config_store": "dynamodb",
    "analytics_store": "cosmos",
    "audit_store": "firestore",
    "telemetry_store": "dynamodb",
}


@pytest.fixture
def settings(request: pytest.FixtureRequest, unique: str) -> Settings:
    return routed(request, PLACES, unique)


def routed(request: pytest.FixtureRequest, places: Mapping[str, str], unique: str) -> Settings:
    """The lab settings with each kind of ``places`` on its backend, on the session's
    servers, under names of this test's own."""
    lab = load_settings(None)[0]
    routes = dict(lab.routes)
    for kind, backend in places.items():
        options: RouteOptions = routes[kind].options
        # one emulator project serves the session: collection names carry the test's id
        name = f"{routes[kind].name}_{unique}" if backend == "firestore" else routes[kind].name
        routes[kind] = Route(backend=backend, name=name, options=options)
    routes["spine_feed"] = Route(backend="direct", name="feed")
    moto_server: MotoServer = request.getfixturevalue("moto_server")
    cosmosdb_server: CosmosDBServer = request.getfixturevalue("cosmosdb_server")
    firestore_emulator: FirestoreEmulator = request.getfixturevalue("firestore_emulator")
    connections = Connections(
        sqlite=lab.connections.sqlite,
        dynamodb=DynamoDBConnection(
            region=moto_server.region,
            endpoint_url=moto_server.endpoint_url,
            access_key_id=moto_server.access_key_id,
            secret_access_key=moto_server.secret_access_key,
            table_prefix=f"m{unique}_",
        ),
        cosmos=CosmosConnection(
            endpoint=cosmosdb_server.endpoint_url,
            key=cosmosdb_server.key,
            database=f"m{unique}",
            verify_tls=cosmosdb_server.connection_verify,
        ),
        firestore=FirestoreConnection(
            project=firestore_emulator.project, emulator_host=firestore_emulator.host_port
        ),
    )
    # A write answers 201 once its view shows it. Three local servers and moto's one
    # request at a time on two cores are slower than the lab, most of all while every
    # projector catches up at start-up: a write may wait longer here (202 after it).
    return lab.model_copy(
        update={"routes": routes, "connections": connections, "write_wait_seconds": 10.0}
    )
