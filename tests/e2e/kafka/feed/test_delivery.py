"""The Kafka spine feed end to end: ``engines serve --no-projectors`` and ``engines
projections run`` as processes of their own, the relay's crash between commit and
publish, and two projector processes splitting the partitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.runtime import bootstrap
from engines.settings import Settings
from routing.config import Connections, Route, SqliteConnection
from routing.registry import Registry
from spine.events import NO_STREAM
from spine.feed import RelaySource
from tests.conftest import make_event
from tests.contract.cloud_dynamodb import dynamodb_connections
from tests.contract.crash import die_after_appending
from tests.contract.harness import Harness
from tests.e2e.kafka.feed.conftest import HttpFor
from tests.e2e.kafka.feed.deployment import (
    eventually,
    positions,
    run_projectors,
    serve,
    settings_of,
    write_routes,
)
from tests.e2e.kafka.feed.fold import assert_views_are_folds_of_the_spine, wait_until_applied
from tests.e2e.support import Mint, note_stream_id
from tests.servers.fixtures import MotoServer, TansuBroker

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


async def test_a_write_answers_201_once_another_process_applies_it_from_the_topic(
    routes: Path, kafka_settings: Settings, tmp_path: Path, mint: Mint, http_for: HttpFor
) -> None:
    token = mint()
    with await run_projectors(routes, tmp_path, ["notes"]), await serve(routes, tmp_path) as server:
        http = http_for(server, token)
        created = await http.post("/notes", json={"title": "through the topic"})
        note_id = created.json()["note_id"]
        updated = await http.put(f"/notes/{note_id}", json={"title": "and again"})
        fetched = await http.get(f"/notes/{note_id}")

    assert created.status_code == 201, created.text
    assert (updated.status_code, updated.json()["version"]) == (200, 2), updated.text
    assert fetched.json()["title"] == "and again"
    await assert_views_are_folds_of_the_spine(kafka_settings, tmp_path, ["notes"])


async def _no_tampering(*_: object) -> None:
    raise AssertionError("these tests tamper with nothing")


def crash_harness(backend: str, connections: Connections, data_dir: Path) -> Harness:
    """What :func:`die_after_appending` needs to reach the deployment's spine."""
    return Harness(
        backend,
        None,
        lab=backend == "sqlite",
        tamper=_no_tampering,
        connections=connections,
        data_dir=data_dir,
    )


def crashed_notes(n: int, unique: str) -> list[tuple[str, int]]:
    """``n`` new note streams for the crashing process (``note.created`` each)."""
    return [(note_stream_id(f"crashed-{unique}-{i}"), 0) for i in range(n)]


async def test_a_note_committed_by_a_process_that_died_before_publishing_reaches_the_view(
    routes: Path, kafka_settings: Settings, tmp_path: Path, unique: str
) -> None:
    """SQLite: the relay follows the spine by position from its checkpoint, so what a
    dead process committed is published by the next process that runs a relay, here a
    projector process started after the one that was killed."""
    harness = crash_harness(
        "sqlite", Connections(sqlite=SqliteConnection(path=str(tmp_path / "engines.db"))), tmp_path
    )
    spine = Route(backend="sqlite", name="spine_events", lab=True)
    first = await run_projectors(routes, tmp_path, ["notes"])
    with first:
        await eventually(
            lambda: positions(kafka_settings, tmp_path, "notes"),
            timeout=30,
            what="the notes projector stores its positions on the topic (it is live)",
        )
        await die_after_appending(harness, spine, crashed_notes(1, unique + "a"))
        await wait_until_applied(kafka_settings, tmp_path, "notes", timeout=30)
        first.kill()
    await die_after_appending(harness, spine, crashed_notes(3, unique + "b"))
    assert await positions(kafka_settings, tmp_path, "notes"), "resumes from the topic"
    with await run_projectors(routes, tmp_path, ["notes"]):
        heads = await wait_until_applied(kafka_settings, tmp_path, "notes", timeout=30)

    assert len(heads) == 4
    await assert_views_are_folds_of_the_spine(kafka_settings, tmp_path, ["notes"])


async def test_a_note_committed_to_dynamodb_by_a_process_that_died_is_swept_to_the_view(
    tansu: TansuBroker, moto_server: MotoServer, topic: str, tmp_path: Path, unique: str
) -> None:
    """An outbox spine: the dead process left its pending markers; another process's
    relay sweeper publishes their events and clears them."""
    dynamodb = dynamodb_connections(moto_server, f"k{unique}_")
    routes = write_routes(tmp_path / "etc", tansu.bootstrap, topic, spine_on=dynamodb)
    settings = settings_of(routes)
    harness = crash_harness("dynamodb", dynamodb, tmp_path)
    with await run_projectors(routes, tmp_path, ["notes"]):
        await eventually(
            lambda: positions(settings, tmp_path, "notes"),
            timeout=30,
            what="the notes projector stores its positions on the topic (it is live)",
        )
        await die_after_appending(
            harness, Route(backend="dynamodb", name="spine_events"), crashed_notes(3, unique)
        )
        heads = await wait_until_applied(settings, tmp_path, "notes", timeout=60)
        registry = Registry(settings, tmp_path, create=False)
        try:
            outbox = await registry.event_store()
            assert isinstance(outbox, RelaySource)
            await eventually(
                lambda: _none_pending(outbox), timeout=30, what="the sweeper clears the markers"
            )
        finally:
            await registry.aclose()

    assert len(heads) == 3
    await assert_views_are_folds_of_the_spine(settings, tmp_path, ["notes"])


async def _none_pending(outbox: RelaySource) -> bool:
    return not await outbox.pending(older_than=0.0, limit=10)


async def test_two_projector_processes_split_the_partitions_and_writes_still_answer_201(
    routes: Path, kafka_settings: Settings, tmp_path: Path, mint: Mint, http_for: HttpFor
) -> None:
    token = mint()
    one = await run_projectors(routes, tmp_path, ["notes"])
    with one, await run_projectors(routes, tmp_path, ["notes"]) as two:

        async def split() -> tuple[set[int], set[int]] | None:
            mine, theirs = one.assigned(), two.assigned()
            if mine and theirs and not mine & theirs and mine | theirs == set(range(4)):
                return mine, theirs
            return None

        await eventually(split, timeout=30, what="both processes hold partitions of the group")
        with await serve(routes, tmp_path) as server:
            http = http_for(server, token)
            statuses = [
                (await http.post("/notes", json={"title": f"note {i}"})).status_code
                for i in range(16)
            ]
        held = (one.assigned(), two.assigned())
        moved = await positions(kafka_settings, tmp_path, "notes")

    assert statuses == [201] * 16
    # each process checkpointed what it applied on its own partitions (from offset 0)
    applied_on = {int(p.rpartition("/")[2]) for p, t in moved.items() if int(t) > 0}
    assert applied_on & held[0], (held, moved)
    assert applied_on & held[1], (held, moved)
    await assert_views_are_folds_of_the_spine(kafka_settings, tmp_path, ["notes"])


async def test_a_runtime_relaying_a_sqlite_spine_to_kafka_closes_cleanly(
    kafka_settings: Settings, tmp_path: Path, unique: str
) -> None:
    """Its relay flushes on close, reading the spine's head: the spine must still be
    open then (it was closed first, and the close raised, leaking the producer)."""
    async with bootstrap(kafka_settings, tmp_path, run_projectors=False) as rt:
        await rt.spine.append(note_stream_id(unique), [make_event()], NO_STREAM)
