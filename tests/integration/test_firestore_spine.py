"""The Firestore spine against the Cloud Firestore emulator: what the contract suites
cannot say for every backend (Firestore's limits, a server that is down, writers in
several processes racing on one stream)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from routing.backends.firestore import FirestoreBackend, FirestoreEventStore, open_backend
from routing.backends.firestore.client import Uncertain
from routing.config import Route, RoutesFile
from routing.registry import Registry
from spine.codec import verify_chain
from spine.errors import BackendUnavailable, InvalidAppend
from spine.events import ANY, NO_STREAM
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.cloud_firestore import emulator_connections
from tests.servers.fixtures import FirestoreEmulator
from tests.servers.process import free_port

pytestmark = pytest.mark.firestore


@pytest.fixture
async def backend(firestore_emulator: FirestoreEmulator) -> AsyncIterator[FirestoreBackend]:
    opened = await open_backend(emulator_connections(firestore_emulator), Path("."))
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def store(backend: FirestoreBackend, unique: str) -> FirestoreEventStore:
    return await backend.event_store(Route(backend="firestore", name=f"spine_{unique}"))


@pytest.fixture
def sid(unique: str) -> str:
    return stream_id("notes", "t1", "lab", f"n-{unique}")


def text_of(size: int) -> dict[str, str]:
    return {"text": "x" * size}


async def nothing_written(store: FirestoreEventStore, sid: str) -> bool:
    return await store.read_stream(sid) == [] and await store.pending() == []


async def test_an_append_over_the_commit_limit_is_refused_and_writes_nothing(
    store: FirestoreEventStore, sid: str
) -> None:
    events = [make_event(command_id="c") for _ in range(498)]
    with pytest.raises(InvalidAppend, match="atomic limit of 497; it is refused, not split"):
        await store.append(sid, events, NO_STREAM)
    assert await nothing_written(store, sid)

    result = await store.append(sid, events[:497], NO_STREAM)  # the most one append takes
    assert (result.first_seq, result.last_seq) == (1, 497)
    assert verify_chain(await store.read_stream(sid)) == 497


async def test_an_event_over_the_document_limit_is_refused_and_writes_nothing(
    store: FirestoreEventStore, sid: str
) -> None:
    small = make_event(command_id="c")
    with pytest.raises(InvalidAppend, match="as a Firestore document, over its limit of 1048576"):
        await store.append(sid, [small, make_event(command_id="c", payload=text_of(2**20))], ANY)
    assert await nothing_written(store, sid)

    near = make_event(command_id="d", payload=text_of(2**20 - 2_000))  # fits, just
    (stored,) = (await store.append(sid, [near], NO_STREAM)).events
    assert await store.read_stream(sid) == [stored]


async def test_an_append_over_the_request_limit_is_refused_and_writes_nothing(
    store: FirestoreEventStore, sid: str
) -> None:
    # 4 MiB on the emulator (its gRPC server's limit), 10 MiB on Firestore itself.
    assert store.db.limits.max_request_bytes == 4 * 2**20
    big = [make_event(command_id="c", payload=text_of(1_000_000)) for _ in range(5)]
    with pytest.raises(InvalidAppend, match="bytes in one commit, over the 4194304"):
        await store.append(sid, big, NO_STREAM)
    assert await nothing_written(store, sid)

    result = await store.append(sid, big[:4], NO_STREAM)  # about 4.0 MB: under it
    assert result.last_seq == 4
    assert len(await store.read_stream(sid)) == 4


async def test_a_server_that_is_down_is_unavailable_naming_route_and_backend_in_bounded_time(
    unique: str, sid: str
) -> None:
    down = FirestoreEmulator(port=free_port())  # nothing listens there
    backend = await open_backend(emulator_connections(down, timeout_seconds=1.0), Path("."))
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as opening:  # opening asks the database once
            await backend.event_store(Route(backend="firestore", name=f"spine_{unique}"))
        assert time.monotonic() - started < 5
        assert opening.value.route == f"spine_{unique}"
        store = FirestoreEventStore(backend.db, f"spine_{unique}")  # the store, unopened
        calls = {
            "append": store.append(sid, [make_event()], NO_STREAM),
            "append ANY": store.append(sid, [make_event()], ANY),
            "read_stream": store.read_stream(sid),
            "find_command": store.find_command(sid, "c"),
            "scan": anext(aiter(store.scan()), None),
            "pending": store.pending(),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                await call
            assert time.monotonic() - started < 5, name
            assert (info.value.route, info.value.backend) == (f"spine_{unique}", "firestore")
            assert f"backend 'firestore' for route 'spine_{unique}'" in str(info.value)
        with pytest.raises(BackendUnavailable, match="firestore"):
            await backend.ping()
    finally:
        await backend.aclose()


async def test_twenty_writers_in_separate_clients_with_any_get_one_winner_per_seq(
    firestore_emulator: FirestoreEmulator, unique: str, sid: str
) -> None:
    """Each writer its own client (as another process would be): their appends race
    through the server, and every one lands, chained, in some order."""
    route = Route(backend="firestore", name=f"spine_{unique}")
    backends = [
        await open_backend(emulator_connections(firestore_emulator), Path(".")) for _ in range(20)
    ]
    try:
        stores = [await b.event_store(route) for b in backends]

        async def writer(n: int, store: FirestoreEventStore) -> list[tuple[int, str]]:
            landed = []
            for k in range(3):
                result = await store.append(sid, [make_event(command_id=f"w{n}-{k}")], ANY)
                assert not result.deduplicated
                landed.append((result.last_seq, result.events[0].command_id))
            return landed

        results = await asyncio.gather(*(writer(n, s) for n, s in enumerate(stores)))
    finally:
        for b in backends:
            await b.aclose()

    landed = sorted(pair for per_writer in results for pair in per_writer)
    assert [seq for seq, _ in landed] == list(range(1, 61))  # one winner per seq, no gaps
    async with reopened(firestore_emulator) as backend:
        store = await backend.event_store(route)
        events = await store.read_stream(sid)
        assert [(e.seq, e.command_id) for e in events] == landed
        assert verify_chain(events) == 60
        assert len(await store.pending()) == 60


async def test_an_any_append_finds_the_head_however_far_others_moved_it(
    firestore_emulator: FirestoreEmulator, unique: str, sid: str
) -> None:
    """ANY looks for the head by key just past the last version its store saw; a stream
    written far past that from elsewhere is found by the query instead."""
    route = Route(backend="firestore", name=f"spine_{unique}")
    async with reopened(firestore_emulator) as one, reopened(firestore_emulator) as two:
        here, elsewhere = await one.event_store(route), await two.event_store(route)
        for moved in (1, 3, 20, 100):
            await here.append(sid, [make_event()], ANY)
            for _ in range(moved):
                await elsewhere.append(sid, [make_event()], ANY)
        result = await here.append(sid, [make_event()], ANY)
        assert result.last_seq == 4 + 124 + 1
        assert verify_chain(await here.read_stream(sid)) == 129


async def test_one_command_from_two_clients_at_once_is_written_once(
    firestore_emulator: FirestoreEmulator, unique: str, sid: str
) -> None:
    route = Route(backend="firestore", name=f"spine_{unique}")
    async with reopened(firestore_emulator) as one, reopened(firestore_emulator) as two:
        a, b = await one.event_store(route), await two.event_store(route)
        event = make_event(command_id="once")
        results = await asyncio.gather(
            *(s.append(sid, [event], NO_STREAM) for s in (a, b, a, b)), return_exceptions=True
        )
        answered = [r for r in results if not isinstance(r, BaseException)]
        assert len(answered) == 4, results
        assert sorted(r.deduplicated for r in answered) == [False, True, True, True]
        assert all(r.events == answered[0].events for r in answered)
        assert len(await a.read_stream(sid)) == 1
        assert len(await a.pending()) == 1


async def test_a_commit_whose_outcome_is_unknown_is_found_and_not_written_twice(
    store: FirestoreEventStore, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = store.db.commit
    failures = {"applied": 1, "lost": 1}

    async def flaky(batch: object) -> None:
        if failures["lost"]:  # the request never reached the server
            failures["lost"] -= 1
            raise Uncertain("connection reset")
        await commit(batch)  # type: ignore[arg-type]
        if failures["applied"]:  # applied, but the answer was lost
            failures["applied"] -= 1
            raise Uncertain("deadline exceeded")

    monkeypatch.setattr(store.db, "commit", flaky)
    result = await store.append(sid, [make_event(command_id="c1")], NO_STREAM)

    assert not result.deduplicated  # its own write, found again, not a repeat
    assert [e.seq for e in await store.read_stream(sid)] == [1]
    again = await store.append(sid, [make_event(command_id="c1")], NO_STREAM)
    assert again.deduplicated
    assert again.events == result.events


async def test_the_emulator_is_found_without_the_environment_and_the_environment_is_left_alone(
    firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch, sid: str, unique: str
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # a wrong one
    before = dict(os.environ)
    async with reopened(firestore_emulator) as backend:
        store = await backend.event_store(Route(backend="firestore", name=f"spine_{unique}"))
        await store.append(sid, [make_event()], NO_STREAM)
        assert len(await store.read_stream(sid)) == 1
    assert dict(os.environ) == before


async def test_the_registry_opens_the_firestore_spine_from_a_routes_file(
    firestore_emulator: FirestoreEmulator, sid: str, unique: str
) -> None:
    config = RoutesFile.model_validate(
        {
            "mode": "saas",
            "connections": {
                "firestore": {
                    "project": firestore_emulator.project,
                    "emulator_host": firestore_emulator.host_port,
                }
            },
            "routes": {"event_spine": {"backend": "firestore", "name": f"spine_{unique}"}},
        }
    )
    registry = Registry(config, Path("."))
    try:
        spine = await registry.event_store()
        assert isinstance(spine, FirestoreEventStore)
        await spine.append(sid, [make_event()], NO_STREAM)
        assert await registry.ready() == {"firestore": None}
    finally:
        await registry.aclose()


@contextlib.asynccontextmanager
async def reopened(emulator: FirestoreEmulator) -> AsyncIterator[FirestoreBackend]:
    """A backend of its own on the emulator (as another process's client), closed after."""
    backend = await open_backend(emulator_connections(emulator), Path("."))
    try:
        yield backend
    finally:
        await backend.aclose()
