"""The DynamoDB harness: the contract suites against moto_server (one session server,
one backend and fresh tables per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from routing.backends.direct import open_backend as open_direct
from routing.backends.dynamodb import DynamoEventStore, event_sk
from routing.backends.dynamodb import open_backend as open_dynamodb
from routing.config import Connections, DynamoDBConnection
from spine.store import EventStore
from tests.contract.harness import Harness, stored_attributes
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


class DynamoTampering:
    """Behind the DynamoDB spine's back, with the backend's own client (the layout is
    in :mod:`routing.backends.dynamodb.spine`)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def put(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        assert isinstance(spine, DynamoEventStore)
        digest, command_id = stored_attributes(body)
        await self.client.put_item(
            TableName=spine.table,
            Item={
                "stream_id": {"S": stream_id},
                "sk": {"S": event_sk(seq)},
                "seq": {"N": str(seq)},
                "command_id": {"S": command_id},
                "hash": {"S": digest},
                "body": {"S": body.decode()},
            },
        )

    async def remove(self, spine: EventStore, stream_id: str, seq: int) -> None:
        assert isinstance(spine, DynamoEventStore)
        key = {"stream_id": {"S": stream_id}, "sk": {"S": event_sk(seq)}}
        await self.client.delete_item(TableName=spine.table, Key=key)

    async def remove_stream(self, spine: EventStore, stream_id: str) -> None:
        """Every item of the stream: events, command markers, outbox markers."""
        assert isinstance(spine, DynamoEventStore)
        answer = await self.client.query(
            TableName=spine.table,
            KeyConditionExpression="stream_id = :s",
            ExpressionAttributeValues={":s": {"S": stream_id}},
            ProjectionExpression="stream_id, sk",
            ConsistentRead=True,
        )
        for item in answer["Items"]:
            await self.client.delete_item(TableName=spine.table, Key=item)


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
            tampering=DynamoTampering(backend._client),
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
