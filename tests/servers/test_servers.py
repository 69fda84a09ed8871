"""What each local server does for the backends: a conditional create that succeeds, and
the same create refused with the engine's own conflict signal, through the real SDK."""

from __future__ import annotations

import aioboto3
import pytest
from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError
from botocore.exceptions import ClientError
from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore

from tests.servers.fixtures import CosmosDBServer, FirestoreEmulator, MotoServer


@pytest.mark.dynamodb
async def test_dynamodb_transaction_refuses_an_existing_key_with_a_cancellation_reason(
    moto_server: MotoServer, unique: str
) -> None:
    table = f"events-{unique}"
    session = aioboto3.Session(
        aws_access_key_id=moto_server.access_key_id,
        aws_secret_access_key=moto_server.secret_access_key,
        region_name=moto_server.region,
    )
    async with session.client("dynamodb", endpoint_url=moto_server.endpoint_url) as dynamodb:
        await dynamodb.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "stream_id", "KeyType": "HASH"},
                {"AttributeName": "seq", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "stream_id", "AttributeType": "S"},
                {"AttributeName": "seq", "AttributeType": "N"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

        def put(seq: int) -> dict[str, object]:
            return {
                "Put": {
                    "TableName": table,
                    "Item": {"stream_id": {"S": "s1"}, "seq": {"N": str(seq)}},
                    "ConditionExpression": "attribute_not_exists(stream_id)",
                }
            }

        await dynamodb.transact_write_items(TransactItems=[put(1), put(2)])

        with pytest.raises(ClientError) as refused:
            await dynamodb.transact_write_items(TransactItems=[put(3), put(2)])

        error = refused.value.response
        assert error["Error"]["Code"] == "TransactionCanceledException"
        reasons = [r["Code"] for r in error["CancellationReasons"]]
        assert reasons == ["None", "ConditionalCheckFailed"]
        # All or nothing: seq 3 was not written.
        items = await dynamodb.query(
            TableName=table,
            KeyConditionExpression="stream_id = :s",
            ExpressionAttributeValues={":s": {"S": "s1"}},
        )
        assert [item["seq"]["N"] for item in items["Items"]] == ["1", "2"]


@pytest.mark.firestore
async def test_firestore_create_in_a_transaction_refuses_an_existing_document(
    firestore_emulator: FirestoreEmulator, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in firestore_emulator.env.items():
        monkeypatch.setenv(name, value)
    client = firestore.AsyncClient(project=firestore_emulator.project)
    try:
        ref = client.collection(f"events-{unique}").document("s1-1")

        @firestore.async_transactional
        async def create(transaction: firestore.AsyncTransaction) -> None:
            transaction.create(ref, {"seq": 1})

        await create(client.transaction())
        assert (await ref.get()).to_dict() == {"seq": 1}

        with pytest.raises(AlreadyExists):  # a Conflict (409); gRPC ALREADY_EXISTS
            await create(client.transaction())
    finally:
        # AsyncClient.close() only closes an HTTP session; the gRPC channel is the transport's.
        await client._firestore_api.transport.close()


@pytest.mark.cosmos
async def test_cosmos_refuses_a_duplicate_id_and_a_stale_etag(
    cosmosdb_server: CosmosDBServer, unique: str
) -> None:
    async with CosmosClient(
        cosmosdb_server.endpoint_url,
        credential=cosmosdb_server.key,
        connection_verify=cosmosdb_server.connection_verify,
    ) as client:
        database = await client.create_database_if_not_exists(f"db-{unique}")
        container = await database.create_container_if_not_exists(
            "events", partition_key=PartitionKey(path="/pk")
        )
        created = await container.create_item({"id": "e1", "pk": "s1", "n": 1})

        with pytest.raises(CosmosResourceExistsError) as duplicate:
            await container.create_item({"id": "e1", "pk": "s1", "n": 2})
        assert duplicate.value.status_code == 409

        replaced = await container.replace_item(
            "e1",
            {"id": "e1", "pk": "s1", "n": 3},
            etag=created["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )
        assert replaced["_etag"] != created["_etag"]

        with pytest.raises(CosmosAccessConditionFailedError) as stale:
            await container.replace_item(
                "e1",
                {"id": "e1", "pk": "s1", "n": 4},
                etag=created["_etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        assert stale.value.status_code == 412
        read = await container.read_item("e1", partition_key="s1")
        assert read["n"] == 3
