"""The DynamoDB harness: the contract suites against moto_server (one session server,
one backend and fresh tables per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from routing.backends.direct import open_backend as open_direct
from routing.backends.dynamodb import DynamoEventStore, event_sk
from routing.backends.dynamodb import open_backend as open_dynamodb
from routing.config import Connections, DynamoDBConnection
from spine.store import EventStore
from tests.contract.harness import Harness
from tests.servers.fixtures import MotoServer


def dynamodb_connections(server: MotoServer, prefix: str = "") -> Connections:
    return Connections(
        dynamodb=DynamoDBConnection(
            region=server.region,
            endpoint_url=server.endpoint_url,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
            table_prefix=prefix,
        )
    )


@pytest.fixture
async def dynamodb_backend(
    moto_server: MotoServer, tmp_path: Path, unique: str
) -> AsyncIterator[Harness]:
    connections = dynamodb_connections(moto_server, f"t{unique}_")
    backend = await open_dynamodb(connections, tmp_path)

    async def tamper(spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        assert isinstance(spine, DynamoEventStore)
        await backend._client.put_item(
            TableName=spine.table,
            Item={
                "stream_id": {"S": stream_id},
                "sk": {"S": event_sk(seq)},
                "seq": {"N": str(seq)},
                "command_id": {"S": "tampered"},
                "hash": {"S": "x"},
                "body": {"S": body.decode()},
            },
        )

    try:
        yield Harness(
            "dynamodb",
            backend,
            lab=False,
            tamper=tamper,
            capabilities={"atomic_batch", "independent_subscriptions"},
            connections=connections,
            data_dir=tmp_path,
        )
    finally:
        await backend.aclose()


@pytest.fixture
async def dynamodb_direct_backend(dynamodb_backend: Harness) -> AsyncIterator[Harness]:
    """The DynamoDB spine and checkpoints, delivered by ``spine_feed: direct`` (its
    sweeper at the default pace: on moto every request waits its turn)."""
    direct = await open_direct(
        Connections(), Path("."), create=True, sweep_interval=2.0, sweep_after=1.0
    )
    try:
        yield replace(
            dynamodb_backend,
            name="dynamodb",
            feeder=direct,
            feeder_name="direct",
            capabilities=set(dynamodb_backend.capabilities),
        )
    finally:
        await direct.aclose()
