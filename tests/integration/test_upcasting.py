"""Upcasters on the read paths: handlers and projectors see current schemas, the spine
keeps what was stored."""

from __future__ import annotations

from typing import Any

from commands.envelope import Command
from commands.handler import execute
from commands.notes import NotesDecider, UpdateNote
from projections.notes import NotesProjector
from projections.runner import ProjectorRunner
from routing.backends.sqlite import SqliteBackend
from spine.codec import verify_chain
from spine.events import NO_STREAM, Scope
from spine.upcasting import Upcasters, UpcastingEventStore
from tests.conftest import make_event
from tests.integration.conftest import lab_route

SID = "notes/t1/lab/old"


def v1_note() -> Any:
    """A note.created as an older schema stored it: ``name`` instead of ``title``."""
    payload = {
        "note_id": "old",
        "name": "from v1",
        "content_type": "text",
        "content": "",
        "tags": [],
        "source": {"created_by": "user", "agent_id": None, "run_id": None},
    }
    return make_event("note.created", user_id="alice", payload=payload)


def upcasters() -> Upcasters:
    u = Upcasters()

    @u.register("note.created", 1)
    def name_to_title(p: dict[str, Any]) -> dict[str, Any]:
        p["title"] = p.pop("name")
        return p

    return u


async def test_reads_through_the_wrapper_are_upcast_and_the_store_keeps_the_original(
    sqlite: SqliteBackend,
) -> None:
    raw = await sqlite.event_store(lab_route("spine"))
    await raw.append(SID, [v1_note()], NO_STREAM)
    wrapped = UpcastingEventStore(raw, upcasters())
    (event,) = await wrapped.read_stream(SID)
    assert (event.schema_version, event.payload["title"]) == (2, "from v1")
    assert [e.payload.get("title") async for e in wrapped.scan(domain="notes")] == ["from v1"]
    (stored,) = await raw.read_stream(SID)
    assert (stored.schema_version, "name" in stored.payload) == (1, True)
    assert verify_chain([stored]) == 1


async def test_the_runner_and_the_handler_see_the_current_schema(sqlite: SqliteBackend) -> None:
    raw = await sqlite.event_store(lab_route("spine"))
    await raw.append(SID, [v1_note()], NO_STREAM)
    views = await sqlite.view_store(lab_route("notes"))
    runner = ProjectorRunner(
        NotesProjector(),
        spine=raw,
        views=views,
        parking=await sqlite.checkpoint_store(lab_route("cp")),
        upcasters=upcasters(),
    )
    assert await runner.apply(await raw.read_stream(SID)) == 1
    view = await views.get(SID)
    assert view is not None
    assert view.data["title"] == "from v1"

    alice = Scope(tenant_id="t1", mode="lab", user_id="alice")
    update = Command[Any](scope=alice, payload=UpdateNote(note_id="old", title="v2"))
    result = await execute(UpcastingEventStore(raw, upcasters()), NotesDecider(), update)
    assert result.version == 2
