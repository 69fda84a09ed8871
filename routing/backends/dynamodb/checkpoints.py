"""Projector positions and parked streams on DynamoDB: the ``projection_checkpoints``
route's table, keys ``pk`` and ``sk``.

=============  ==========================  =========================================
item           key (``pk``, ``sk``)         attributes
=============  ==========================  =========================================
position       ``c#{consumer}``, partition  ``token``, ``updated_at``
parked stream  ``p#{projector}``, stream    ``body`` (the :class:`Parked` record as
                                            JSON), ``parked_at``
=============  ==========================  =========================================

A position moves by a conditional write: created only if absent (``after=None``), else
only from the token the writer read (``token = :after``); a token that does not sort
after it is refused before any write. So twenty racing moves from one position have one
winner, as on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from projections.parking import Parked
from routing.backends.dynamodb.common import Item, _s, call, error_code, translate


class DynamoCheckpointStore:
    """:class:`spine.feed.CheckpointStore` and :class:`projections.parking.ParkingStore`
    on one table (see the module's docstring)."""

    def __init__(self, client: Any, table: str, route: str) -> None:
        self._client = client
        self.table = table
        self.route = route

    async def _query(self, **request: Any) -> list[Item]:
        items: list[Item] = []
        start: Item | None = None
        while True:
            if start is not None:
                request["ExclusiveStartKey"] = start
            answer = await call(
                self.route, lambda: self._client.query(TableName=self.table, **request)
            )
            items += answer.get("Items", [])
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return items

    async def _scan(self, prefix: str) -> list[Item]:
        items: list[Item] = []
        start: Item | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table,
                "FilterExpression": "begins_with(pk, :p)",
                "ExpressionAttributeValues": {":p": _s(prefix)},
            }
            if start is not None:
                request["ExclusiveStartKey"] = start
            answer = await call(self.route, self._client.scan, **request)
            items += answer.get("Items", [])
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return items

    # -- positions ---------------------------------------------------------------------

    async def get(self, consumer: str) -> dict[str, str]:
        items = await self._query(
            KeyConditionExpression="pk = :c",
            ExpressionAttributeValues={":c": _s("c#" + consumer)},
            ConsistentRead=True,
        )
        return {i["sk"]["S"]: i["token"]["S"] for i in items}

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        if after is not None and token <= after:
            return False  # never backwards, never in place
        request: dict[str, Any] = {
            "TableName": self.table,
            "Item": {
                "pk": _s("c#" + consumer),
                "sk": _s(partition),
                "token": _s(token),
                "updated_at": _s(datetime.now(UTC).isoformat()),
            },
        }
        if after is None:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "#t = :after"
            request["ExpressionAttributeNames"] = {"#t": "token"}
            request["ExpressionAttributeValues"] = {":after": _s(after)}
        try:
            await self._client.put_item(**request)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(self.route, exc) from exc
        except Exception as exc:
            raise translate(self.route, exc) from exc
        return True

    async def reset(self, consumer: str) -> None:
        for partition in await self.get(consumer):
            await self._delete({"pk": _s("c#" + consumer), "sk": _s(partition)})

    async def all(self) -> dict[str, dict[str, str]]:
        positions: dict[str, dict[str, str]] = {}
        for item in await self._scan("c#"):
            consumer = item["pk"]["S"][2:]
            positions.setdefault(consumer, {})[item["sk"]["S"]] = item["token"]["S"]
        return positions

    async def _delete(self, key: Item) -> Item:
        answer: Item = await call(
            self.route,
            lambda: self._client.delete_item(TableName=self.table, Key=key, ReturnValues="ALL_OLD"),
        )
        return answer

    # -- parked streams ----------------------------------------------------------------

    async def park(self, parked: Parked) -> None:
        item = {
            "pk": _s("p#" + parked.projector),
            "sk": _s(parked.stream_id),
            "parked_at": _s(parked.parked_at.astimezone(UTC).isoformat()),
            "body": _s(parked.model_dump_json()),
        }
        await call(self.route, lambda: self._client.put_item(TableName=self.table, Item=item))

    async def parked(self, projector: str | None = None) -> list[Parked]:
        if projector is None:
            items = await self._scan("p#")
        else:
            items = await self._query(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": _s("p#" + projector)},
                ConsistentRead=True,
            )
        found = [Parked.model_validate_json(i["body"]["S"]) for i in items]
        return sorted(found, key=lambda p: (p.parked_at, p.projector, p.stream_id))

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        wanted = set(stream_ids)
        if not wanted:
            return {}
        return {p.stream_id: p for p in await self.parked(projector) if p.stream_id in wanted}

    async def release(self, projector: str, stream_id: str) -> bool:
        answer = await self._delete({"pk": _s("p#" + projector), "sk": _s(stream_id)})
        return bool(answer.get("Attributes"))
