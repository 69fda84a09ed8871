"""Projector positions and parked streams on Cosmos DB: the ``projection_checkpoints``
route's container, partitioned by ``/pk``.

=============  ======================  ====================  ==========================
item           ``pk``                  ``id``                fields
=============  ======================  ====================  ==========================
position       ``c/`` + consumer       ``c`` + partition     type ``position``, consumer,
                                       (:func:`.ids.item_id`) partition, token,
                                                             updated_at
parked stream  ``p/`` + projector      ``p`` + stream id     type ``parked``, projector,
                                       (:func:`.ids.item_id`) stream_id, parked_at, body
                                                             (the :class:`Parked` record
                                                             as JSON)
=============  ======================  ====================  ==========================

A consumer's positions share one logical partition, so :meth:`~CosmosCheckpointStore.get`
is a one-partition query; :meth:`~CosmosCheckpointStore.all` and
:meth:`~CosmosCheckpointStore.parked` of every projector are cross-partition queries
(operator tools and the relay's sweeper, not a hot path).

Why a position only moves forward, from what the writer read: the first position is a
``create`` (409 if the item exists: someone else wrote it first), and every later move
is a ``replace`` conditional on the etag of the item whose token the writer read
(``If-Match``; 412 if anyone moved it since). A token that does not sort after the one
read is refused before any write. So twenty racing moves from one position have one
winner: the first replace changes the etag the others name. Both conditions are single
item writes, which cosmosdb-server checks as Cosmos DB does.

Items that may be absent are looked up by a query, never a point read (cosmosdb-server
answers a point read of a missing item with 500), and every one-partition query names
``c.pk`` in its text (cosmosdb-server needs it there; see :mod:`routing.backends.cosmos`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from projections.parking import Parked
from routing.backends.cosmos.errors import translated
from routing.backends.cosmos.ids import item_id
from spine.errors import IntegrityError

POSITION: Final = "position"
PARKED: Final = "parked"

_IN_PARTITION = "SELECT * FROM c WHERE c.pk = @pk AND c.type = @type"
_ONE = "SELECT * FROM c WHERE c.pk = @pk AND c.id = @id"
_ALL = "SELECT * FROM c WHERE c.type = @type"


def position_pk(consumer: str) -> str:
    return "c/" + consumer


def parked_pk(projector: str) -> str:
    return "p/" + projector


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise IntegrityError(f"{where}: stored item has no text {key!r}")
    return value


class CosmosCheckpointStore:
    """:class:`spine.feed.CheckpointStore` and :class:`projections.parking.ParkingStore`
    on one container (see the module's docstring)."""

    def __init__(self, container: ContainerProxy, route: str) -> None:
        self.container = container
        self.route = route

    async def _query(
        self, query: str, parameters: dict[str, str], *, pk: str | None = None
    ) -> list[dict[str, Any]]:
        named: list[dict[str, object]] = [{"name": n, "value": v} for n, v in parameters.items()]
        with translated(self.route):
            if pk is None:
                items = self.container.query_items(query, parameters=named)
            else:
                items = self.container.query_items(query, parameters=named, partition_key=pk)
            return [item async for item in items]

    async def _delete(self, item: str, pk: str) -> bool:
        with translated(self.route):
            try:
                await self.container.delete_item(item, partition_key=pk)
            except CosmosResourceNotFoundError:
                return False
        return True

    # -- positions ---------------------------------------------------------------------

    async def get(self, consumer: str) -> dict[str, str]:
        pk = position_pk(consumer)
        items = await self._query(_IN_PARTITION, {"@pk": pk, "@type": POSITION}, pk=pk)
        where = f"{self.route} consumer {consumer!r}"
        return {_text(i, "partition", where): _text(i, "token", where) for i in items}

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        if after is not None and token <= after:
            return False  # never backwards, never in place
        pk = position_pk(consumer)
        body = {
            "id": item_id("c", partition),
            "pk": pk,
            "type": POSITION,
            "consumer": consumer,
            "partition": partition,
            "token": token,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        with translated(self.route):
            if after is None:
                try:
                    await self.container.create_item(body)
                except CosmosResourceExistsError:
                    return False
                return True
            found = await self._query(_ONE, {"@pk": pk, "@id": body["id"]}, pk=pk)
            if not found or found[0].get("token") != after:
                return False
            try:
                await self.container.replace_item(
                    body["id"],
                    body,
                    etag=found[0]["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
                return False  # moved or reset since it was read
        return True

    async def reset(self, consumer: str) -> None:
        pk = position_pk(consumer)
        for item in await self._query(_IN_PARTITION, {"@pk": pk, "@type": POSITION}, pk=pk):
            await self._delete(_text(item, "id", self.route), pk)

    async def all(self) -> dict[str, dict[str, str]]:
        positions: dict[str, dict[str, str]] = {}
        for item in await self._query(_ALL, {"@type": POSITION}):
            where = f"{self.route} position {item.get('id')!r}"
            consumer = _text(item, "consumer", where)
            positions.setdefault(consumer, {})[_text(item, "partition", where)] = _text(
                item, "token", where
            )
        return positions

    # -- parked streams ----------------------------------------------------------------

    async def park(self, parked: Parked) -> None:
        body = {
            "id": item_id("p", parked.stream_id),
            "pk": parked_pk(parked.projector),
            "type": PARKED,
            "projector": parked.projector,
            "stream_id": parked.stream_id,
            "parked_at": parked.parked_at.astimezone(UTC).isoformat(),
            "body": parked.model_dump_json(),
        }
        with translated(self.route):
            await self.container.upsert_item(body)

    async def parked(self, projector: str | None = None) -> list[Parked]:
        if projector is None:
            items = await self._query(_ALL, {"@type": PARKED})
        else:
            pk = parked_pk(projector)
            items = await self._query(_IN_PARTITION, {"@pk": pk, "@type": PARKED}, pk=pk)
        found = [
            Parked.model_validate_json(_text(i, "body", f"{self.route} parked stream"))
            for i in items
        ]
        return sorted(found, key=lambda p: (p.parked_at, p.projector, p.stream_id))

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        wanted = set(stream_ids)
        if not wanted:
            return {}
        return {p.stream_id: p for p in await self.parked(projector) if p.stream_id in wanted}

    async def release(self, projector: str, stream_id: str) -> bool:
        return await self._delete(item_id("p", stream_id), parked_pk(projector))
