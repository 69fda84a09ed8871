"""The notes domain as pure functions: validation, fold and decide, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from commands.bus import InProcessCommandBus
from commands.envelope import Command, CommandResult
from commands.handler import fold
from commands.notes import CreateNote, DeleteNote, NoteBody, NotesDecider, UpdateNote
from spine.codec import seal
from spine.errors import AlreadyExists, NotFound
from spine.events import GENESIS_HASH, EventEnvelope, Scope

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")
BOB = ALICE.model_copy(update={"user_id": "bob"})
decider = NotesDecider()


def command(payload: Any, scope: Scope = ALICE) -> Command[Any]:
    return Command[Any](scope=scope, payload=payload)


def history(*commands: Command[Any]) -> list[EventEnvelope]:
    """Run commands through decide and seal the events, as the store would."""
    events: list[EventEnvelope] = []
    for cmd in commands:
        for new in decider.decide(fold(decider, events), cmd):
            env, _ = seal(
                new,
                stream_id=decider.stream_id(cmd),
                seq=len(events) + 1,
                prev_hash=events[-1].hash if events else GENESIS_HASH,
                recorded_at=datetime.now(UTC),
            )
            events.append(env)
    return events


CREATE = CreateNote(note_id="n1", title="t", content="# hi", tags=["a"])


def test_create_update_delete_produce_one_event_each_in_the_notes_stream() -> None:
    events = history(
        command(CREATE),
        command(UpdateNote(note_id="n1", title="t2", content="x")),
        command(DeleteNote(note_id="n1")),
    )
    assert [e.event_type for e in events] == ["note.created", "note.updated", "note.deleted"]
    assert {e.stream_id for e in events} == {"notes/t1/lab/n1"}
    assert events[0].payload["source"] == {"created_by": "user", "agent_id": None, "run_id": None}
    assert events[1].payload == {
        "title": "t2",
        "content_type": "markdown",
        "content": "x",
        "tags": [],
    }
    state = fold(decider, events)
    assert (state.version, state.exists, state.deleted) == (3, True, True)


def test_events_carry_the_commands_scope_and_provenance() -> None:
    cmd = command(CREATE).model_copy(update={"run_id": "run-9", "source": "agent"})
    (event,) = history(cmd)
    assert (event.tenant_id, event.mode, event.user_id, event.surface_id) == (
        "t1",
        "lab",
        "alice",
        "chat",
    )
    assert (event.run_id, event.source, event.command_id) == ("run-9", "agent", cmd.command_id)


def test_creating_an_existing_note_is_refused() -> None:
    events = history(command(CREATE))
    with pytest.raises(AlreadyExists):
        decider.decide(fold(decider, events), command(CREATE))


@pytest.mark.parametrize("payload", [UpdateNote(note_id="n1", title="x"), DeleteNote(note_id="n1")])
def test_another_users_note_does_not_exist_for_them(payload: Any) -> None:
    state = fold(decider, history(command(CREATE)))
    with pytest.raises(NotFound):
        decider.decide(state, command(payload, scope=BOB))


@pytest.mark.parametrize("payload", [UpdateNote(note_id="n1", title="x"), DeleteNote(note_id="n1")])
def test_a_deleted_or_missing_note_cannot_be_changed(payload: Any) -> None:
    with pytest.raises(NotFound):
        decider.decide(fold(decider, []), command(payload))
    gone = history(command(CREATE), command(DeleteNote(note_id="n1")))
    with pytest.raises(NotFound):
        decider.decide(fold(decider, gone), command(payload))


def test_an_update_keeps_the_notes_surface_and_project() -> None:
    created = command(CREATE, scope=ALICE.model_copy(update={"project_id": "p1"}))
    update = command(UpdateNote(note_id="n1", title="x"), scope=ALICE)
    events = history(created, update)
    assert (events[1].surface_id, events[1].project_id) == ("chat", "p1")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 501}, "title"),
        ({"title": "t", "content": {"a": 1}}, "content must be a string"),
        ({"title": "t", "content_type": "html"}, "content_type"),
        ({"title": "t", "content_type": "json", "content": "x" * 1_000_001}, "limit"),
        ({"title": "t", "tags": ["a", "a"]}, "repeat"),
        ({"title": "t", "tags": ["a,b"]}, "tags"),
        ({"title": "t", "tags": ["x"] * 65}, "tags"),
        ({"title": "t", "surprise": 1}, "surprise"),
    ],
)
def test_bad_note_bodies_are_refused_naming_the_field(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        NoteBody.model_validate(fields)


def test_json_content_may_be_any_json_value() -> None:
    body = NoteBody(title="t", content_type="json", content={"k": [1, {"x": None}]})
    assert body.content == {"k": [1, {"x": None}]}


def test_an_agent_note_must_name_its_agent() -> None:
    with pytest.raises(ValidationError, match="agent_id"):
        CreateNote.model_validate({"note_id": "n", "title": "t", "source": {"created_by": "agent"}})


async def test_the_bus_routes_by_payload_type_and_refuses_the_unknown() -> None:
    bus = InProcessCommandBus()
    seen: list[Any] = []

    async def handler(cmd: Command[Any]) -> CommandResult:
        seen.append(cmd.payload)
        return CommandResult(stream_id="s", version=1, events=())

    bus.register(CreateNote, handler)
    with pytest.raises(ValueError, match="registered already"):
        bus.register(CreateNote, handler)
    await bus.dispatch(command(CREATE))
    assert seen == [CREATE]
    with pytest.raises(LookupError, match="DeleteNote"):
        await bus.dispatch(command(DeleteNote(note_id="n1")))
