"""load → fold → decide → append against the lab spine: idempotency and concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from commands.envelope import Command
from commands.handler import execute
from commands.notes import CreateNote, NotesDecider, UpdateNote
from routing.backends.sqlite import SqliteBackend
from spine.errors import ConcurrencyError
from spine.events import AppendResult, ExpectedVersion, NewEvent, Scope
from spine.store import EventStore
from tests.integration.conftest import lab_route

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice")


@pytest.fixture
async def spine(sqlite: SqliteBackend) -> EventStore:
    s: EventStore = await sqlite.event_store(lab_route("spine"))
    return s


def cmd(payload: Any, **kw: Any) -> Command[Any]:
    return Command[Any](scope=ALICE, payload=payload, **kw)


async def test_a_repeated_command_returns_its_original_result(spine: EventStore) -> None:
    create = cmd(CreateNote(note_id="n", title="t"))
    first = await execute(spine, NotesDecider(), create)
    again = await execute(spine, NotesDecider(), create)
    assert again.deduplicated
    assert again.events == first.events
    assert len(await spine.read_stream("notes/t1/lab/n")) == 1


async def test_a_pinned_stale_version_is_refused_before_deciding(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    await execute(spine, NotesDecider(), cmd(UpdateNote(note_id="n", title="u")))
    with pytest.raises(ConcurrencyError) as info:
        await execute(
            spine, NotesDecider(), cmd(UpdateNote(note_id="n", title="x"), expected_version=1)
        )
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert len(await spine.read_stream("notes/t1/lab/n")) == 2


class RacingStore:
    """Lets another writer slip in just before our first append."""

    def __init__(self, inner: EventStore) -> None:
        self.inner, self.raced = inner, False

    async def read_stream(self, *a: Any) -> Any:
        return await self.inner.read_stream(*a)

    def scan(self, **kw: Any) -> Any:
        return self.inner.scan(**kw)

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected: ExpectedVersion
    ) -> AppendResult:
        if not self.raced:
            self.raced = True
            other = cmd(UpdateNote(note_id="n", title="other"))
            await execute(self.inner, NotesDecider(), other)
        return await self.inner.append(stream_id, events, expected)


async def test_an_unpinned_command_retries_after_a_concurrent_write(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    result = await execute(
        RacingStore(spine), NotesDecider(), cmd(UpdateNote(note_id="n", title="mine"))
    )
    assert result.version == 3
    events = await spine.read_stream("notes/t1/lab/n")
    assert [e.payload.get("title") for e in events] == ["t", "other", "mine"]


async def test_concurrent_unpinned_updates_all_land_in_order(spine: EventStore) -> None:
    await execute(spine, NotesDecider(), cmd(CreateNote(note_id="n", title="t")))
    results = await asyncio.gather(
        *(
            execute(
                spine, NotesDecider(), cmd(UpdateNote(note_id="n", title=f"u{i}")), max_attempts=50
            )
            for i in range(10)
        )
    )
    assert sorted(r.version for r in results) == list(range(2, 12))
