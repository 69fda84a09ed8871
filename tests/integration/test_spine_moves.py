"""Moving a tenant between backends with ``engines spine export`` and ``engines spine
import``: lab SQLite to DynamoDB, Cosmos DB to Firestore, on the session servers.

After each move the target holds the tenant's events exactly as the source does (every
field, hashes included), every stream verifies from the genesis hash, a second import
writes nothing, and a stream whose seqs conflict is refused with nothing of it written
while the other streams go on. Each target spine is made first, as `engines routes
provision` makes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.cli import main, spine_file
from engines.runtime import bootstrap
from engines.settings import load_settings
from routing.registry import Registry
from spine.codec import seal_after, verify_chain
from spine.events import ANY, GENESIS_HASH, EventEnvelope
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.servers.fixtures import CosmosDBServer, FirestoreEmulator, MotoServer

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"


def cloud_routes(tmp_path: Path, backend: str, connection: dict[str, Any], spine: str) -> Path:
    """``examples/routes/<backend>.yaml`` pointed at a session server, the spine under a
    fresh name."""
    data = yaml.safe_load((ROOT / f"examples/routes/{backend}.yaml").read_text())
    data["connections"][backend] |= connection
    data["auth"]["hs256_secret_file"] = str(ROOT / data["auth"]["hs256_secret_file"])
    data["routes"]["event_spine"]["name"] = spine
    path = tmp_path / f"{backend}-{spine}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@asynccontextmanager
async def spine_of(routes: Path | None, data_dir: Path) -> AsyncIterator[EventStore]:
    """The event store a routes file names (made if absent), as ``engines serve`` opens it."""
    settings, _ = load_settings(routes)
    registry = Registry(settings, data_dir, create=True)
    try:
        yield await registry.event_store()
    finally:
        await registry.aclose()


async def write_tenant(spine: EventStore, tenant: str, streams: int, unique: str) -> None:
    """``streams`` note streams of ``tenant``, one to three appends each (some of two
    events): a hundred-odd events for thirty streams."""
    for n in range(streams):
        sid = stream_id("notes", tenant, "lab", f"n{unique}-{n}")
        for a in range(1 + n % 3):
            count = 2 if (n + a) % 4 == 0 else 1
            command = f"{unique}-{n}-{a}"
            events = [
                make_event(tenant_id=tenant, command_id=command, payload={"n": n, "a": a, "é": "ü"})
                for _ in range(count)
            ]
            await spine.append(sid, events, ANY)


async def tenant_events(spine: EventStore, tenant: str = TENANT) -> list[EventEnvelope]:
    return sorted(
        [e async for e in spine.scan(tenant_id=tenant)], key=lambda e: (e.stream_id, e.seq)
    )


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``engines ARGV`` in this process (in a thread: it runs its own event loop)."""
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def imported(
    capsys: pytest.CaptureFixture[str], file: Path, routes: Path, data_dir: Path
) -> tuple[int, dict[str, Any], str]:
    code, out, err = await run(
        capsys, "spine", "import", str(file), "--routes", str(routes),
        "--data-dir", str(data_dir), "--format", "json",
    )  # fmt: skip
    assert out, err
    (row,) = json.loads(out)
    return code, row, err


def assert_same_and_verified(source: list[EventEnvelope], target: list[EventEnvelope]) -> None:
    assert [e.model_dump() for e in target] == [e.model_dump() for e in source]
    for _, stream in groupby(target, key=lambda e: e.stream_id):
        events = list(stream)
        assert verify_chain(events) == len(events)  # from the genesis hash


def another_history(events: list[EventEnvelope]) -> list[EventEnvelope]:
    """A stream's events as another store could have sealed them: same seqs, other
    events (each verifies on its own chain)."""
    fresh = [make_event(tenant_id=TENANT, command_id=f"else-{e.seq}") for e in events]
    sealed = seal_after(
        fresh,
        stream_id=events[0].stream_id,
        head=0,
        prev_hash=GENESIS_HASH,
        recorded_at=datetime.now(UTC),
    )
    return [envelope for envelope, _ in sealed]


async def check_move(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    *,
    source: EventStore,
    source_args: list[str],
    target: EventStore,
    target_routes: Path,
) -> None:
    """Export the tenant from the source, import it into the target, then the checks."""
    export = tmp_path / "acme.jsonl"
    code, _, err = await run(
        capsys, "spine", "export", "--tenant", TENANT, "-o", str(export), *source_args
    )
    assert code == 0, err
    expected = await tenant_events(source)
    assert len(expected) > 50
    lines = export.read_bytes().splitlines()
    assert len(lines) == len(expected) + 2  # the header, the events, the trailer
    assert not any(json.loads(line).get("tenant_id") == "other" for line in lines[1:-1])

    code, row, err = await imported(capsys, export, target_routes, tmp_path)

    assert code == 0, err
    streams = len({e.stream_id for e in expected})
    assert (row["streams"], row["imported"], row["refused"]) == (streams, streams, 0)
    assert (row["events_written"], row["events_already"]) == (len(expected), 0)
    assert_same_and_verified(expected, await tenant_events(target))

    code, row, err = await imported(capsys, export, target_routes, tmp_path)

    assert code == 0, err
    assert (row["events_written"], row["events_already"]) == (0, len(expected))
    assert row["unchanged"] == streams

    # A file holding another history of one stream (and one stream as it is): that
    # stream is refused, nothing of it written; the other goes on (unchanged).
    clash = [e for e in expected if e.stream_id == expected[0].stream_id]
    kept = [e for e in expected if e.stream_id == expected[-1].stream_id]
    conflicting = tmp_path / "conflicting.jsonl"
    conflicting.write_bytes(
        b"\n".join(
            [
                lines[0],
                *(spine_file.event_line(e) for e in [*another_history(clash), *kept]),
                spine_file.trailer(len(clash) + len(kept)),
                b"",
            ]
        )
    )

    code, row, err = await imported(capsys, conflicting, target_routes, tmp_path)

    assert code == 4
    assert (row["refused"], row["unchanged"], row["events_written"]) == (1, 1, 0)
    assert (row["refused_streams"][0]["stream_id"], row["refused_streams"][0]["seq"]) == (
        clash[0].stream_id,
        1,
    )
    assert f"refused: {clash[0].stream_id} seq 1" in err
    assert await target.read_stream(clash[0].stream_id) == clash


@pytest.mark.dynamodb
async def test_a_tenant_moves_from_the_lab_to_dynamodb(
    moto_server: MotoServer, tmp_path: Path, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    connection = {"endpoint_url": moto_server.endpoint_url, "table_prefix": f"m{unique}_"}
    target_routes = cloud_routes(tmp_path, "dynamodb", connection, "spine")
    async with (
        bootstrap(load_settings(None)[0], lab, run_projectors=False) as rt,
        spine_of(target_routes, tmp_path) as target,
    ):
        source = await rt.registry.event_store()
        await write_tenant(source, TENANT, 25, unique)
        await write_tenant(source, "other", 2, unique)  # not exported

        await check_move(
            capsys,
            tmp_path,
            source=source,
            source_args=["--data-dir", str(lab)],
            target=target,
            target_routes=target_routes,
        )


@pytest.mark.cosmos
@pytest.mark.firestore
async def test_a_tenant_moves_from_cosmos_to_firestore(
    cosmosdb_server: CosmosDBServer,
    firestore_emulator: FirestoreEmulator,
    tmp_path: Path,
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cosmos = {"endpoint": cosmosdb_server.endpoint_url, "key": cosmosdb_server.key}
    source_routes = cloud_routes(tmp_path, "cosmos", cosmos, f"spine_{unique}")
    firestore = {"emulator_host": firestore_emulator.host_port}
    target_routes = cloud_routes(tmp_path, "firestore", firestore, f"spine_{unique}")
    async with (
        spine_of(source_routes, tmp_path) as source,
        spine_of(target_routes, tmp_path) as target,
    ):
        await write_tenant(source, TENANT, 25, unique)
        await write_tenant(source, "other", 2, unique)

        await check_move(
            capsys,
            tmp_path,
            source=source,
            source_args=["--routes", str(source_routes), "--data-dir", str(tmp_path)],
            target=target,
            target_routes=target_routes,
        )
