"""The Kafka feed harnesses: the feed suite with the spine on each backend (SQLite, the
lab's, followed by position; DynamoDB, Cosmos DB and Firestore by their outboxes) and
``spine_feed: kafka`` on a session Tansu broker (a fresh topic per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from routing.backends.kafka import open_backend as open_kafka
from routing.config import Connections, KafkaConnection
from tests.contract.harness import Harness
from tests.servers.fixtures import TansuBroker

#: What the Kafka feed does not offer, and why (``tests.contract.harness``).
WITHOUT = {
    "lag_from_start",  # a consumer with no position catches up from the spine
    "independent_subscriptions",  # subscriptions of one consumer form a group
}


def kafka_connections(server: TansuBroker) -> Connections:
    return Connections(
        kafka=KafkaConnection(
            bootstrap_servers=server.bootstrap,
            partitions=4,
            # Tansu holds a join until half a session has passed: keep sessions short.
            session_timeout_ms=1_000,
            heartbeat_interval_ms=100,
            rebalance_timeout_ms=1_000,
            fetch_max_wait_ms=50,  # it answers an idle fetch late
        )
    )


async def _with_kafka(
    spine: Harness, server: TansuBroker, tmp_path: Path
) -> AsyncIterator[Harness]:
    kafka = await open_kafka(
        kafka_connections(server), tmp_path, create=True, sweep_interval=1.0, sweep_after=1.0
    )
    try:
        yield replace(
            spine,
            feeder=kafka,
            feeder_name="kafka",
            capabilities=set(spine.capabilities) - WITHOUT,
        )
    finally:
        await kafka.aclose()


@pytest.fixture
async def sqlite_kafka_backend(
    sqlite_backend: Harness, tansu: TansuBroker, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for h in _with_kafka(sqlite_backend, tansu, tmp_path):
        yield h


@pytest.fixture
async def dynamodb_kafka_backend(
    dynamodb_backend: Harness, tansu: TansuBroker, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for h in _with_kafka(dynamodb_backend, tansu, tmp_path):
        yield h


@pytest.fixture
async def cosmos_kafka_backend(
    cosmos_backend: Harness, tansu: TansuBroker, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for h in _with_kafka(cosmos_backend, tansu, tmp_path):
        yield h


@pytest.fixture
async def firestore_kafka_backend(
    firestore_backend: Harness, tansu: TansuBroker, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for h in _with_kafka(firestore_backend, tansu, tmp_path):
        yield h
