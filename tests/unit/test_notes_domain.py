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
from spine.errors import AlreadyExists, InvalidField, NotFound, ScopeMismatch
from spine.events import GENESIS_HASH, EventEnvelope, NewEvent, Provenance, Scope

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")
BOB = ALICE.model_copy(update={"user_id": "bob"})
decider = NotesDecider()


def command(payload: Any, scope: Scope = ALICE, **fields: Any) -> Command[Any]:
    return Command[Any](scope=scope, payload=payload, **fields)


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
    provenance = Provenance(
        agent_id="summarizer",
        run_id="run-9",
        thread_id="th-1",
        step_id="step-3",
        parent_event_id="ev-0",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
    )
    cmd = command(CREATE, source="agent", provenance=provenance)
    (event,) = history(cmd)
    assert (event.tenant_id, event.mode, event.user_id, event.surface_id) == (
        "t1",
        "lab",
        "alice",
        "chat",
    )
    assert (event.source, event.command_id) == ("agent", cmd.command_id)
    assert {name: getattr(event, name) for name in Provenance.model_fields} == (
        provenance.model_dump()
    )


def test_absent_provenance_stays_absent_rather_than_made_up() -> None:
    (event,) = history(command(CREATE))
    assert (event.agent_id, event.run_id, event.step_id, event.thread_id) == (None,) * 4
    assert (event.parent_event_id, event.trace_id, event.span_id) == (None,) * 3


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


GRANTS = {"chat": frozenset({"p1"})}


@pytest.mark.parametrize(
    "stored",
    [
        ALICE.model_copy(update={"surface_id": "canvas"}),
        ALICE.model_copy(update={"project_id": "p2"}),
        ALICE.model_copy(update={"surface_id": None}),
    ],
    ids=["other-surface", "ungranted-project", "no-surface"],
)
@pytest.mark.parametrize("payload", [UpdateNote(note_id="n1", title="x"), DeleteNote(note_id="n1")])
def test_a_note_outside_the_callers_grants_does_not_exist_for_them(
    stored: Scope, payload: Any
) -> None:
    # stored as it is, whatever today's rules for a new note (a note of an older build
    # may have no surface)
    (created,) = history(command(CREATE))
    state = fold(decider, [created.model_copy(update=stored.model_dump())])
    with pytest.raises(NotFound):
        decider.decide(state, command(payload, grants=GRANTS))


def test_a_note_within_the_callers_grants_can_be_changed() -> None:
    created = command(CREATE, scope=ALICE.model_copy(update={"project_id": "p1"}))
    state = fold(decider, history(created))
    (event,) = decider.decide(state, command(DeleteNote(note_id="n1"), grants=GRANTS))
    assert event.event_type == "note.deleted"
    in_p1 = ALICE.model_copy(update={"project_id": "p1"})
    (event,) = decider.decide(fold(decider, []), command(CREATE, scope=in_p1, grants=GRANTS))
    assert event.event_type == "note.created"


def test_a_note_without_a_project_is_outside_a_grant_of_some_projects() -> None:
    with pytest.raises(ScopeMismatch):
        decider.decide(fold(decider, []), command(CREATE, grants=GRANTS))  # chat, no project
    (event,) = decider.decide(fold(decider, []), command(CREATE, grants={"chat": frozenset()}))
    assert (event.surface_id, event.project_id) == ("chat", None)


@pytest.mark.parametrize(
    "scope",
    [
        ALICE.model_copy(update={"surface_id": "canvas"}),
        ALICE.model_copy(update={"project_id": "p2"}),
    ],
    ids=["other-surface", "ungranted-project"],
)
def test_a_create_outside_the_callers_grants_is_refused(scope: Scope) -> None:
    with pytest.raises(ScopeMismatch):
        decider.decide(fold(decider, []), command(CREATE, scope=scope, grants=GRANTS))


@pytest.mark.parametrize("grants", [GRANTS, None], ids=["granted", "unrestricted"])
def test_a_note_without_a_surface_is_refused_naming_the_field(
    grants: dict[str, frozenset[str]] | None,
) -> None:
    no_surface = ALICE.model_copy(update={"surface_id": None})
    with pytest.raises(InvalidField) as info:
        decider.decide(fold(decider, []), command(CREATE, scope=no_surface, grants=grants))
    assert info.value.loc == ("body", "surface_id")


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
        ({"title": "t", "content_type": "markdown", "content": {"a": 1}}, "must be a string"),
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


@pytest.mark.parametrize(
    ("content", "inferred"),
    [
        ({"k": 1}, "json"),
        ([1, 2], "json"),
        (7, "json"),
        ("# heading", "markdown"),
        ("", "markdown"),
    ],
)
def test_an_omitted_content_type_is_inferred_from_the_content(content: Any, inferred: str) -> None:
    assert NoteBody.model_validate({"title": "t", "content": content}).content_type == inferred


def test_an_omitted_content_is_empty_markdown() -> None:
    assert NoteBody.model_validate({"title": "t"}).content_type == "markdown"


def test_a_stated_content_type_is_kept() -> None:
    body = NoteBody.model_validate({"title": "t", "content_type": "text", "content": "x"})
    assert body.content_type == "text"


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


def test_an_update_to_what_the_note_says_already_is_no_change() -> None:
    created = command(CREATE)
    same = command(UpdateNote(note_id="n1", title="t", content="# hi", tags=["a"]))
    state = fold(decider, history(created))

    assert decider.decide(state, same) == []
    (event,) = decider.decide(state, command(UpdateNote(note_id="n1", title="t", tags=["a"])))
    assert event.event_type == "note.updated"  # the content differs ("" now)
    after = fold(decider, history(created, command(UpdateNote(note_id="n1", title="u"))))
    assert decider.decide(after, command(UpdateNote(note_id="n1", title="u"))) == []


@pytest.mark.parametrize(
    "title", ["a\x00b", "red \x1b[31m", "line\nbreak", "evil\u202eright", "   ", "\t"]
)
def test_a_title_is_one_visible_line(title: str) -> None:
    with pytest.raises(ValidationError, match="title"):
        CreateNote(note_id="n1", title=title)


def test_a_title_may_hold_any_printable_text() -> None:
    assert CreateNote(note_id="n1", title="Plan ✓ — étape 2 (العربية)").title.startswith("Plan")


def test_an_event_a_command_makes_equals_the_validated_one() -> None:
    """Command.event builds its NewEvent without re-validating what the command holds;
    the result must be the event validation would have made."""
    scope = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s", project_id="p")
    command = Command[CreateNote](
        scope=scope,
        source="agent",
        provenance=Provenance(agent_id="a", run_id="r", trace_id="x"),
        payload=CreateNote(note_id="n", title="t"),
    )
    event = command.event("note.created", {"title": "t"})
    expected = NewEvent.model_validate({**event.model_dump(), "event_id": event.event_id})
    assert event == expected
    assert set(event.__dict__) == set(NewEvent.model_fields)
    with pytest.raises(ValueError, match="pattern"):
        command.event("Not A Type", {})
