"""Amazon DynamoDB (aioboto3): the backend behind every route to ``dynamodb``.

* :mod:`.spine`: :class:`spine.EventStore` and :class:`spine.feed.Outbox` (the table
  layout and why an append is atomic and conditional are in its docstring);
* :mod:`.checkpoints`: :class:`spine.feed.CheckpointStore` and
  :class:`projections.parking.ParkingStore`;
* :mod:`.views`: :class:`projections.ViewStore` (its layout, indexes and why a commit
  is atomic and conditional are in its docstring).

Its events reach projectors through ``spine_feed: direct`` (:mod:`routing.backends.direct`,
the outbox relay).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from routing.backends.dynamodb.checkpoints import DynamoCheckpointStore
from routing.backends.dynamodb.common import BACKEND, call, error_code, translate
from routing.backends.dynamodb.spine import MAX_EVENTS, OUTBOX_INDEX, DynamoEventStore, event_sk
from routing.backends.dynamodb.viewindex import DEFAULT_SHAPE, index_attributes, index_name
from routing.backends.dynamodb.views import DynamoViewStore
from routing.config import Connections, DynamoDBConnection, Route
from spine.errors import BackendUnavailable, RoutingError

__all__ = [
    "MAX_EVENTS",
    "DynamoBackend",
    "DynamoCheckpointStore",
    "DynamoEventStore",
    "DynamoViewStore",
    "event_sk",
    "open_backend",
]

#: The keys of the spine's table, and of the checkpoints' table.
SPINE_KEYS = ("stream_id", "sk")
CHECKPOINT_KEYS = ("pk", "sk")
#: The spine's index of pending outbox markers.
OUTBOX_GSI: dict[str, Any] = {
    "IndexName": OUTBOX_INDEX,
    "KeySchema": [
        {"AttributeName": "outbox_shard", "KeyType": "HASH"},
        {"AttributeName": "outbox_at", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}
#: The keys of a view's table, and its index by tenant and mode, ordered by ``updated_at``.
VIEW_KEYS = ("pk", "sk")
VIEW_INDEX_KEYS = index_attributes(DEFAULT_SHAPE)
VIEW_GSI: dict[str, Any] = {
    "IndexName": index_name(DEFAULT_SHAPE),
    "KeySchema": [
        {"AttributeName": VIEW_INDEX_KEYS[0], "KeyType": "HASH"},
        {"AttributeName": VIEW_INDEX_KEYS[1], "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}


class DynamoBackend:
    """The stores behind every route to ``dynamodb``, on one client. Without ``create``
    it makes no table (every one a store needs must exist)."""

    def __init__(
        self,
        client: Any,
        settings: DynamoDBConnection,
        stack: contextlib.AsyncExitStack,
        *,
        create: bool,
    ) -> None:
        self._client = client
        self.settings = settings
        self._stack = stack
        self.create = create
        self._ready: set[str] = set()
        self._spines: dict[str, DynamoEventStore] = {}
        """One store per route, so a relay listening to one hears every append."""
        self._views: dict[str, DynamoViewStore] = {}
        """One store per route, so the shapes declared on one are known to all."""
        self.created: list[str] = []
        """One line per table or index made while opening stores (``create``)."""

    def table(self, route: Route) -> str:
        return self.settings.table_prefix + route.name

    async def event_store(self, route: Route) -> DynamoEventStore:
        table = self.table(route)
        await self._ensure(table, route.name, SPINE_KEYS, ("outbox_shard", "outbox_at"), OUTBOX_GSI)
        if route.name not in self._spines:
            self._spines[route.name] = DynamoEventStore(self._client, table, route.name)
        return self._spines[route.name]

    async def checkpoint_store(self, route: Route) -> DynamoCheckpointStore:
        table = self.table(route)
        await self._ensure(table, route.name, CHECKPOINT_KEYS)
        return DynamoCheckpointStore(self._client, table, route.name)

    async def view_store(self, route: Route) -> DynamoViewStore:
        table = self.table(route)
        await self._ensure(table, route.name, VIEW_KEYS, VIEW_INDEX_KEYS, VIEW_GSI)
        if route.name not in self._views:
            store = DynamoViewStore(
                self._client, table, route.name, create=self.create, created=self.created
            )
            await store.load()
            self._views[route.name] = store
        return self._views[route.name]

    async def _ensure(
        self,
        table: str,
        route: str,
        keys: tuple[str, str],
        also: tuple[str, ...] = (),
        index: dict[str, Any] | None = None,
    ) -> None:
        """Make ``table`` (keys ``keys``, string attributes ``also`` for ``index``) unless
        it exists; without ``create``, a missing table is unavailable."""
        if table in self._ready:
            return
        try:
            await self._client.describe_table(TableName=table)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise translate(route, exc) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise translate(route, exc) from exc
        else:
            self._ready.add(table)
            return
        if not self.create:
            raise BackendUnavailable(
                route, BACKEND, f"no table {table!r} (`engines routes provision` creates it)"
            )
        request: dict[str, Any] = {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": "S"} for n in (*keys, *also)
            ],
            "KeySchema": [
                {"AttributeName": keys[0], "KeyType": "HASH"},
                {"AttributeName": keys[1], "KeyType": "RANGE"},
            ],
        }
        if index is not None:
            request["GlobalSecondaryIndexes"] = [index]
        try:
            await self._client.create_table(**request)
        except ClientError as exc:  # made by another process meanwhile: fine
            if error_code(exc) != "ResourceInUseException":
                raise translate(route, exc) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise translate(route, exc) from exc
        else:
            self.created.append(f"DynamoDB table {table}")
        waiter = self._client.get_waiter("table_exists")
        await call(
            route,
            lambda: waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}),
        )
        self._ready.add(table)

    async def ping(self) -> None:
        """Raise :class:`~spine.errors.BackendUnavailable` unless DynamoDB answers and
        every table a store was opened on is still there (a local server that restarted
        empty, a table deleted behind the service's back)."""
        if not self._ready:
            await call(BACKEND, lambda: self._client.list_tables(Limit=1))
            return
        present: set[str] = set()
        request: dict[str, Any] = {}
        while True:
            page = await call(BACKEND, self._client.list_tables, **request)
            present.update(page.get("TableNames", []))
            if "LastEvaluatedTableName" not in page:
                break
            request = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}
        for table in sorted(self._ready - present):
            raise BackendUnavailable(
                table, BACKEND, f"table {table!r} no longer exists (`engines routes provision`)"
            )

    async def aclose(self) -> None:
        await self._stack.aclose()


async def open_backend(
    connections: Connections, data_dir: Path, *, create: bool = True
) -> DynamoBackend:
    del data_dir
    settings = connections.dynamodb
    if settings is None:
        raise RoutingError(
            "a route names backend 'dynamodb' but the routes file has no "
            "`connections.dynamodb` (region, and endpoint_url for a local server)"
        )
    session = aioboto3.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
    )
    config = Config(
        connect_timeout=min(5.0, settings.timeout_seconds),
        read_timeout=settings.timeout_seconds,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        session.client("dynamodb", endpoint_url=settings.endpoint_url, config=config)
    )
    return DynamoBackend(client, settings, stack, create=create)
