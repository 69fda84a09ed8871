"""A cloud view store whose server goes away while the whole view is read or purged
(the reads and deletes of a rebuild): each of ``records``, ``progress`` and ``purge``
raises :class:`~spine.errors.BackendUnavailable` naming the route and the backend, no
driver error leaks, and nothing falls back to another store. The server "goes down"
behind :class:`tests.servers.proxy.Outage`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from projections.views import ViewRecord, ViewStore
from routing.backends.cosmos import open_backend as open_cosmos
from routing.backends.dynamodb import open_backend as open_dynamodb
from routing.backends.firestore import open_backend as open_firestore
from routing.config import (
    Connections,
    CosmosConnection,
    DynamoDBConnection,
    FirestoreConnection,
    Route,
)
from spine.errors import BackendUnavailable
from spine.events import Scope
from tests.servers.fixtures import COSMOS_EMULATOR_KEY
from tests.servers.proxy import outage

SCOPE = Scope(tenant_id="t1", mode="lab", user_id="alice")
CLOUDS = [
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    pytest.param("cosmos", marks=pytest.mark.cosmos),
    pytest.param("firestore", marks=pytest.mark.firestore),
]
SERVERS = {
    "dynamodb": "moto_server",
    "cosmos": "cosmosdb_server",
    "firestore": "firestore_emulator",
}
OPENERS: dict[str, Callable[..., Awaitable[Any]]] = {
    "dynamodb": open_dynamodb,
    "cosmos": open_cosmos,
    "firestore": open_firestore,
}


def through(backend: str, address: str, unique: str) -> Connections:
    """Connections to the session's ``backend`` server at ``address`` (the proxy), with
    a short time budget: a request to a server that is gone fails within seconds."""
    if backend == "dynamodb":
        return Connections(
            dynamodb=DynamoDBConnection(
                endpoint_url=f"http://{address}",
                access_key_id="testing",
                secret_access_key="testing",
                table_prefix=f"o{unique}_",
                timeout_seconds=4,
            )
        )
    if backend == "cosmos":
        return Connections(
            cosmos=CosmosConnection(
                endpoint=f"https://{address}/",
                key=COSMOS_EMULATOR_KEY,
                database=f"o{unique}",
                verify_tls=False,
                timeout_seconds=4,
                endpoint_discovery=False,  # else it goes around the proxy
            )
        )
    return Connections(
        firestore=FirestoreConnection(
            project=f"o{unique}", emulator_host=address, timeout_seconds=4
        )
    )


async def whole_view(views: ViewStore, what: str) -> None:
    if what == "records":
        [r async for r in views.records(batch_size=1)]
    elif what == "progress":
        [p async for p in views.progress("p", batch_size=1)]
    else:
        await views.purge(tenant_id="t1")


async def keys_once_back(views: ViewStore) -> list[str]:
    """The view's keys, once its server answers again (a gRPC channel waits out its
    reconnection backoff first)."""
    for _ in range(20):
        try:
            return [r.key async for r in views.records()]
        except BackendUnavailable:
            await asyncio.sleep(0.5)
    raise AssertionError("the store did not answer again")


@pytest.mark.parametrize("what", ["records", "progress", "purge"])
@pytest.mark.parametrize("backend", CLOUDS)
async def test_reading_or_purging_the_whole_view_of_a_store_that_is_down_is_unavailable(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str, backend: str, what: str
) -> None:
    server = request.getfixturevalue(SERVERS[backend])
    async with outage(server.host, server.port) as proxy:
        opened = await OPENERS[backend](through(backend, proxy.address, unique), tmp_path)
        try:
            views: ViewStore = await opened.view_store(Route(backend=backend, name="view"))
            await views.put(ViewRecord(key="k", scope=SCOPE, version=1))
            await proxy.down()

            with pytest.raises(BackendUnavailable) as info:
                await whole_view(views, what)

            await proxy.up()
            assert await keys_once_back(views) == ["k"]  # nothing was purged
        finally:
            await opened.aclose()
    assert (info.value.route, info.value.backend) == ("view", backend)
    assert info.value.__cause__ is not None  # the driver's error, kept
