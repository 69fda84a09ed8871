"""An import into a store that a running service uses shows in its views within
seconds: ``engines spine import`` in a process of its own beside ``engines serve`` on
the lab (the SQLite feed polls for other processes' rows every half second), and an
import through another registry beside a runtime on DynamoDB with ``spine_feed:
direct`` (its sweeper takes markers it did not write: every second, once two old)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engines.auth import mint_lab_token
from engines.cli import main
from engines.runtime import bootstrap
from engines.settings import Settings, load_settings
from routing.config import Connections, DynamoDBConnection, Route
from routing.registry import Registry
from spine.events import EventEnvelope
from tests.e2e.support import client_for
from tests.e2e.test_serve import STARTUP_SECONDS, Server, engines_executable, free_port, run_cli
from tests.servers.fixtures import MotoServer

pytestmark = pytest.mark.e2e

#: How long the imported notes may take to show in the running service's view: the lab
#: feed polls every half second; the direct relay sweeps every second for markers two
#: seconds old (and moto, one request at a time, is slow on a loaded machine).
WITHIN_SECONDS = 5.0
WITHIN_SECONDS_ON_DYNAMODB = 6.0


def token(data_dir: Path) -> str:
    return mint_lab_token(
        data_dir, tenant_id="t", user_id="u", surfaces=["s"], projects=[], ttl_seconds=600
    )


async def notes_made_in_another_lab(data_dir: Path, count: int) -> list[str]:
    """``count`` notes created over HTTP in a lab of their own; their ids."""
    async with (
        bootstrap(load_settings(None)[0], data_dir) as rt,
        client_for(rt, token(data_dir)) as client,
    ):
        ids = []
        for n in range(count):
            answer = await client.post("/notes", json={"title": f"moved {n}", "tags": ["m"]})
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["note_id"])
        return ids


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    cwd = tmp_path / "serve"
    cwd.mkdir()
    port = free_port()
    log = cwd / "server.log"
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen(
            [engines_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = Server(f"http://127.0.0.1:{port}", cwd, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert proc.poll() is None, running.stderr()
            try:
                if httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, running.stderr()
            time.sleep(0.1)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def test_notes_imported_by_another_process_show_in_a_running_servers_view(
    server: Server, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    ids = await notes_made_in_another_lab(source, 3)
    export = tmp_path / "t.jsonl"
    exported = await asyncio.to_thread(
        main, ["spine", "export", "--tenant", "t", "-o", str(export), "--data-dir", str(source)]
    )
    assert exported == 0
    headers = {"Authorization": f"Bearer {token(server.cwd / '.engines')}"}

    result = await asyncio.to_thread(
        run_cli, "spine", "import", str(export), "--format", "json", cwd=server.cwd
    )
    imported_at = time.monotonic()

    assert result.returncode == 0, result.stderr
    assert '"events_written": 3' in result.stdout
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=5) as http:
        while True:
            answer = await http.get("/notes")
            shown = {note["note_id"] for note in answer.json()["items"]}
            if shown == set(ids):
                break
            assert time.monotonic() - imported_at < WITHIN_SECONDS, (shown, server.stderr())
            await asyncio.sleep(0.1)


def dynamodb_lab(moto_server: MotoServer, unique: str) -> Settings:
    """The lab settings with the spine and the checkpoints on DynamoDB, delivered by
    the direct relay; the views stay on the lab database."""
    lab = load_settings(None)[0]
    routes = dict(lab.routes)
    routes["event_spine"] = Route(backend="dynamodb", name="spine")
    routes["projection_checkpoints"] = Route(backend="dynamodb", name="checkpoints")
    routes["spine_feed"] = Route(backend="direct", name="feed")
    connections = Connections(
        sqlite=lab.connections.sqlite,
        dynamodb=DynamoDBConnection(
            region=moto_server.region,
            endpoint_url=moto_server.endpoint_url,
            access_key_id=moto_server.access_key_id,
            secret_access_key=moto_server.secret_access_key,
            table_prefix=f"i{unique}_",
        ),
    )
    return lab.model_copy(update={"routes": routes, "connections": connections})


@pytest.mark.dynamodb
async def test_an_import_from_elsewhere_reaches_the_views_of_a_runtime_on_dynamodb(
    moto_server: MotoServer, tmp_path: Path, unique: str
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    ids = await notes_made_in_another_lab(source, 3)
    async with bootstrap(load_settings(None)[0], source, run_projectors=False) as rt:
        spine = await rt.registry.event_store()
        events: list[EventEnvelope] = [e async for e in spine.scan(tenant_id="t")]
    settings = dynamodb_lab(moto_server, unique)
    served = tmp_path / "served"
    served.mkdir()
    async with bootstrap(settings, served) as runtime, client_for(runtime, token(served)) as client:
        # another registry: its store's writes are not told to the runtime's relay, as
        # another process's are not
        elsewhere = Registry(settings, served, create=False)
        try:
            target = await elsewhere.event_store()
            for event in events:
                await target.import_events(event.stream_id, [event])
        finally:
            await elsewhere.aclose()
        imported_at = time.monotonic()

        while True:
            answer = await client.get("/notes")
            shown = {note["note_id"] for note in answer.json()["items"]}
            if shown == set(ids):
                break
            assert time.monotonic() - imported_at < WITHIN_SECONDS_ON_DYNAMODB, shown
            await asyncio.sleep(0.1)
