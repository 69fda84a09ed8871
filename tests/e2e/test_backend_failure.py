"""A cloud backend that is down or refuses credentials (issue 9, item 9), through the
HTTP app: the error names the route and the backend, a request answers 503, nothing is
half-written, nothing falls back to another store, and ``/readyz`` says which route is
down. (A saas routes file naming a lab backend refuses to start:
``test_serve.py::test_a_sqlite_route_in_saas_mode_is_refused``.)

Down at start-up and going down while serving are tested on DynamoDB, Cosmos DB and
Firestore. Refused credentials only on DynamoDB: moto can check keys
(``/moto-api/reset-auth``); cosmosdb-server does not check the account key, and the
Firestore emulator accepts any credentials.

The spine, its feed and the checkpoints sit on the cloud backend; the views stay on
the lab's SQLite (lab mode), so a write that falls back anywhere would show there. A
server "goes down" behind :class:`tests.servers.proxy.Outage` (no server of its own);
one that is down from the start is a closed port.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engines.runtime import bootstrap
from engines.settings import Settings
from routing.config import (
    Connections,
    CosmosConnection,
    DynamoDBConnection,
    FirestoreConnection,
    Route,
)
from spine.errors import BackendUnavailable
from tests.e2e.support import Mint, client_for, create, note_stream_id, problem
from tests.servers.fixtures import COSMOS_EMULATOR_KEY, MotoServer
from tests.servers.process import HOST, free_port
from tests.servers.proxy import outage

CLOUDS = [
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    pytest.param("cosmos", marks=pytest.mark.cosmos),
    pytest.param("firestore", marks=pytest.mark.firestore),
]
#: The session fixture of each backend's local server.
SERVERS = {
    "dynamodb": "moto_server",
    "cosmos": "cosmosdb_server",
    "firestore": "firestore_emulator",
}


def cloud_spine(settings: Settings, connections: Connections, backend: str) -> Settings:
    """``settings`` with the spine, its feed and the checkpoints on ``backend``."""
    routes = {
        **settings.routes,
        "event_spine": Route(backend=backend, name="spine"),
        "spine_feed": Route(backend="direct", name="feed"),
        "projection_checkpoints": Route(backend=backend, name="checkpoints"),
    }
    joined = connections.model_copy(update={"sqlite": settings.connections.sqlite})
    # after an outage a projector retries within 5 s (its backoff): a write waits for it
    return settings.model_copy(
        update={"routes": routes, "connections": joined, "write_wait_seconds": 10.0}
    )


def dynamodb(endpoint: str, prefix: str, key: str = "testing") -> Connections:
    return Connections(
        dynamodb=DynamoDBConnection(
            endpoint_url=f"http://{endpoint}",
            access_key_id=key,
            secret_access_key=key,
            table_prefix=prefix,
        )
    )


def closed(backend: str) -> Connections:
    """Connections to ``backend`` at a port nobody listens on."""
    endpoint = f"{HOST}:{free_port()}"
    if backend == "dynamodb":
        return dynamodb(endpoint, "down_")
    if backend == "cosmos":
        return Connections(
            cosmos=CosmosConnection(
                endpoint=f"https://{endpoint}/", key=COSMOS_EMULATOR_KEY, verify_tls=False
            )
        )
    return Connections(
        firestore=FirestoreConnection(
            project="engines-test", emulator_host=endpoint, timeout_seconds=2
        )
    )


def sqlite_holds(data_dir: Path, text: str) -> bool:
    """Whether any row of the lab database under ``data_dir`` mentions ``text``."""
    conn = sqlite3.connect(data_dir / "engines.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return any(
            text in repr(row)
            for table in tables
            for row in conn.execute(f'SELECT * FROM "{table}"')
        )
    finally:
        conn.close()


@pytest.mark.parametrize("backend", CLOUDS)
async def test_a_backend_down_at_start_up_refuses_to_start_naming_route_and_backend(
    settings: Settings, tmp_path: Path, backend: str
) -> None:
    with pytest.raises(BackendUnavailable) as info:
        async with bootstrap(cloud_spine(settings, closed(backend), backend), tmp_path):
            raise AssertionError("the service started on a backend that is down")

    assert info.value.backend == backend
    assert info.value.route == "spine"
    assert f"backend {backend!r} for route 'spine'" in str(info.value)
    assert not (tmp_path / "engines.db").exists()  # no other store was opened instead


def through(backend: str, address: str, unique: str, timeout: float = 10.0) -> Connections:
    """Connections to the session's ``backend`` server at ``address`` (a proxy)."""
    if backend == "dynamodb":
        on = dynamodb(address, f"f{unique}_")
        assert on.dynamodb is not None
        return Connections(dynamodb=on.dynamodb.model_copy(update={"timeout_seconds": timeout}))
    if backend == "cosmos":
        return Connections(
            cosmos=CosmosConnection(
                endpoint=f"https://{address}/",
                key=COSMOS_EMULATOR_KEY,
                database=f"f{unique}",
                verify_tls=False,
                timeout_seconds=timeout,
                endpoint_discovery=False,  # else it goes around the proxy, as advertised
            )
        )
    return Connections(
        firestore=FirestoreConnection(
            project=f"f{unique}", emulator_host=address, timeout_seconds=timeout
        )
    )


@pytest.mark.parametrize("backend", CLOUDS)
async def test_a_backend_that_goes_down_answers_503_writes_nothing_and_readyz_names_it(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
    mint: Mint,
    unique: str,
    backend: str,
) -> None:
    server = request.getfixturevalue(SERVERS[backend])
    async with outage(server.host, server.port) as proxy:
        connections = through(backend, proxy.address, unique)
        async with (
            bootstrap(cloud_spine(settings, connections, backend), tmp_path) as rt,
            client_for(rt, mint()) as client,
            client_for(rt) as probe,
        ):
            before = await create(client, title="before the outage")
            await proxy.down()

            key = {"Idempotency-Key": f"k-{unique}"}
            refused = await client.post("/notes", json={"title": "during"}, headers=key)
            ready = await probe.get("/readyz")
            live = await probe.get("/healthz")
            fell_back = sqlite_holds(tmp_path, "during")

            await proxy.up()
            retried = await client.post("/notes", json={"title": "during"}, headers=key)
            ready_again = await probe.get("/readyz")
            listed = await client.get("/notes")
            events = [e async for e in rt.spine.scan(domain="notes")]

    body = problem(refused, 503)
    assert (body["backend"], body["route"]) == (backend, "spine")
    assert f"backend {backend!r} for route 'spine'" in body["detail"]
    assert refused.headers["retry-after"]
    assert not fell_back  # no other store took the write

    down = problem(ready, 503)
    assert f"event_spine ({backend}:spine)" in down["detail"]
    assert f"projection_checkpoints ({backend}:checkpoints)" in down["detail"]
    assert down["backends"]["sqlite"] == "ok"
    assert down["backends"][backend] != "ok"
    assert down["routes"]["event_spine"] != "ok"
    assert down["routes"]["notes_store"] == "ok"
    assert live.status_code == 200

    assert retried.status_code == 201, retried.text  # nothing half-written blocks it
    assert ready_again.status_code == 200
    assert set(ready_again.json()["routes"].values()) == {"ok"}
    titles = sorted(n["title"] for n in listed.json()["items"])
    assert titles == ["before the outage", "during"]
    assert len(events) == 2
    assert before["note_id"] in {e.stream_id.rsplit("/", 1)[1] for e in events}


@pytest.fixture
def moto_refusing_credentials(moto_server: MotoServer) -> Iterator[httpx.Client]:
    """Switches moto's credential check on (``/moto-api/reset-auth``: from now on every
    request needs an IAM user's key, and the suite's keys are none) only when the test
    asks, through the client yielded; back off afterwards."""
    with httpx.Client(base_url=f"{moto_server.endpoint_url}/moto-api") as api:
        try:
            yield api
        finally:
            api.post("/reset-auth", content=b"inf").raise_for_status()


@pytest.mark.dynamodb
async def test_refused_credentials_answer_503_naming_route_and_backend(
    settings: Settings,
    tmp_path: Path,
    mint: Mint,
    moto_server: MotoServer,
    moto_refusing_credentials: httpx.Client,
    unique: str,
) -> None:
    """Credentials revoked while serving: each request and ``/readyz`` answer 503 naming
    the route and backend; with them refused from the start, the service does not start."""
    api = moto_refusing_credentials
    configured = cloud_spine(settings, dynamodb(moto_server.host_port, f"c{unique}_"), "dynamodb")
    async with (
        bootstrap(configured, tmp_path) as rt,
        client_for(rt, mint()) as client,
        client_for(rt) as probe,
    ):
        await create(client, title="before")
        api.post("/reset-auth", content=b"0").raise_for_status()
        refused = await client.post("/notes", json={"title": "refused"})
        ready = await probe.get("/readyz")
    with pytest.raises(BackendUnavailable) as info:
        async with bootstrap(configured, tmp_path / "again"):
            raise AssertionError("the service started with credentials that are refused")

    body = problem(refused, 503)
    assert (body["backend"], body["route"]) == ("dynamodb", "spine")
    assert "security token" in body["detail"].lower()
    assert not sqlite_holds(tmp_path, "refused")
    assert "event_spine (dynamodb:spine)" in problem(ready, 503)["detail"]
    assert (info.value.backend, info.value.route) == ("dynamodb", "spine")


@pytest.mark.dynamodb
async def test_a_write_whose_view_store_is_down_answers_202_and_is_written_once(
    settings: Settings, tmp_path: Path, mint: Mint, moto_server: MotoServer, unique: str
) -> None:
    """The spine takes the write; only its view (notes on DynamoDB) is down. The write is
    durable, so it answers 202, not a 503 that would invite a retry making a second
    note; once the store is back, the view shows it, once."""
    async with outage(moto_server.host, moto_server.port) as proxy:
        routes = {**settings.routes, "notes_store": Route(backend="dynamodb", name="notes")}
        connections = dynamodb(proxy.address, f"v{unique}_")
        joined = connections.model_copy(update={"sqlite": settings.connections.sqlite})
        on_cloud = settings.model_copy(update={"routes": routes, "connections": joined})
        async with bootstrap(on_cloud, tmp_path) as rt, client_for(rt, mint()) as client:
            await proxy.down()
            accepted = await client.post("/notes", json={"title": "while the view is down"})
            await proxy.up()
            note_id = accepted.json()["note_id"]
            assert await rt.wait_for("notes", note_stream_id(note_id), 1, 15)  # its retry
            shown = await client.get(f"/notes/{note_id}")
            events = [e async for e in rt.spine.scan(domain="notes")]

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert shown.json()["title"] == "while the view is down"
    assert [e.event_type for e in events] == ["note.created"]


@pytest.mark.parametrize("backend", CLOUDS)
async def test_a_backend_that_hangs_answers_503_in_its_timeout_not_never(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
    mint: Mint,
    unique: str,
    backend: str,
) -> None:
    """A server that takes connections and answers nothing (stopped, swapping): a write
    answers 503 once each of the SDK's few attempts has waited the connection's
    ``timeout_seconds`` (here 3), and its retry, once the server answers, writes the
    note once."""
    server = request.getfixturevalue(SERVERS[backend])
    async with outage(server.host, server.port) as proxy:
        connections = through(backend, proxy.address, unique, timeout=3.0)
        async with (
            bootstrap(cloud_spine(settings, connections, backend), tmp_path) as rt,
            client_for(rt, mint()) as client,
        ):
            key = {"Idempotency-Key": f"h-{unique}"}
            proxy.stall()
            async with asyncio.timeout(60):  # no answer at all would hang here
                hung = await client.post("/notes", json={"title": "hung"}, headers=key)
            proxy.flow()
            retried = await client.post("/notes", json={"title": "hung"}, headers=key)
            events = [e async for e in rt.spine.scan(domain="notes")]

    body = problem(hung, 503)
    assert (body["backend"], body["route"]) == (backend, "spine")
    assert retried.status_code in (200, 201), retried.text
    assert len(events) == 1
