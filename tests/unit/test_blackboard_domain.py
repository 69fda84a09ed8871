"""The blackboard as pure functions: the entity decider under the blackboard's kind
(shared by project, keys created again after a delete), and the value's size, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from commands.blackboard import (
    BLACKBOARD,
    DEFAULT_MAX_VALUE_BYTES,
    BlackboardBody,
    DeleteBlackboardKey,
    PutBlackboardKey,
    check_value_size,
)
from commands.entities import Creation, EntityDecider
from commands.envelope import Command
from commands.handler import fold
from spine.codec import seal
from spine.errors import ConcurrencyError, InvalidField, NotFound, ScopeMismatch, ValueTooLarge
from spine.events import GENESIS_HASH, EventEnvelope, Scope

PATH = ("p1", "r1", "plan")
ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat", project_id="p1")
BOB = ALICE.model_copy(update={"user_id": "bob", "surface_id": "canvas"})
MALLORY = ALICE.model_copy(update={"user_id": "mallory", "project_id": "p2"})
GRANTS = {
    "alice": {"chat": frozenset({"p1"})},
    "bob": {"canvas": frozenset({"p1"})},
    "mallory": {"chat": frozenset({"p2"})},
}
decider = EntityDecider(BLACKBOARD)


def command(payload: Any, scope: Scope = ALICE) -> Command[Any]:
    assert scope.user_id is not None
    return Command[Any](scope=scope, payload=payload, grants=GRANTS[scope.user_id])


def put(value: Any, create: Creation, scope: Scope = ALICE, path: tuple[str, ...] = PATH) -> Any:
    return command(PutBlackboardKey(path=path, body={"value": value}, create=create), scope)


def delete(scope: Scope = ALICE) -> Command[Any]:
    return command(DeleteBlackboardKey(path=PATH), scope)


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


def test_a_key_is_one_stream_per_tenant_mode_project_run_and_key() -> None:
    (event,) = history(put(1, "must"))

    assert event.stream_id == "blackboard/t1/lab/p1/r1/plan"
    assert event.event_type == "blackboard.key_created"
    assert event.payload == {"value": 1}
    assert (event.tenant_id, event.mode, event.user_id) == ("t1", "lab", "alice")
    assert (event.surface_id, event.project_id) == ("chat", "p1")


def test_a_deleted_key_is_created_again_on_the_same_stream_with_its_versions_counting() -> None:
    events = history(put("a", "must"), delete(), put("b", "must", BOB))

    assert [e.event_type for e in events] == [
        "blackboard.key_created",
        "blackboard.key_deleted",
        "blackboard.key_created",
    ]
    assert [e.seq for e in events] == [1, 2, 3]
    state = fold(decider, events)
    assert (state.version, state.live) == (3, True)
    assert state.scope is not None
    assert state.scope.user_id == "bob"  # the new life is its creator's


def test_a_create_of_a_live_key_is_a_conflict() -> None:
    state = fold(decider, history(put("a", "must")))

    with pytest.raises(ConcurrencyError):
        decider.decide(state, put("b", "must", BOB))


@pytest.mark.parametrize("events", [(), ("created", "deleted")])
def test_a_replace_never_creates_an_absent_or_deleted_key(events: tuple[str, ...]) -> None:
    commands = {"created": put("a", "must"), "deleted": delete()}
    state = fold(decider, history(*(commands[name] for name in events)))

    with pytest.raises(NotFound):
        decider.decide(state, put("b", "never"))


def test_a_delete_of_an_absent_or_deleted_key_is_not_found() -> None:
    with pytest.raises(NotFound):
        decider.decide(decider.initial(), delete())
    state = fold(decider, history(put("a", "must"), delete()))
    with pytest.raises(NotFound):
        decider.decide(state, delete())


def test_anyone_granted_the_project_replaces_and_deletes_and_the_event_names_them() -> None:
    events = history(put("a", "must"), put("b", "never", BOB), delete(BOB))

    assert [(e.user_id, e.surface_id, e.project_id) for e in events] == [
        ("alice", "chat", "p1"),
        ("bob", "canvas", "p1"),
        ("bob", "canvas", "p1"),
    ]


def test_a_command_whose_scope_is_in_another_project_than_the_key_is_refused() -> None:
    state = fold(decider, history(put("a", "must")))

    with pytest.raises(ScopeMismatch, match="'p1'"):
        decider.decide(state, put("mine", "never", MALLORY))
    with pytest.raises(ScopeMismatch):
        decider.decide(decider.initial(), put("mine", "must", MALLORY))


def test_a_caller_not_granted_the_project_does_not_see_its_keys() -> None:
    state = fold(decider, history(put("a", "must")))
    outsider = Command[Any](
        scope=ALICE.model_copy(update={"user_id": "mallory"}),
        payload=PutBlackboardKey(path=PATH, body={"value": "x"}, create="never"),
        grants=GRANTS["mallory"],
    )

    with pytest.raises(NotFound):
        decider.decide(state, outsider)


def test_a_path_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidField, match="project_id, run_id, key"):
        decider.stream_id(put(1, "must", path=("p1", "plan")))


def test_the_same_value_again_appends_nothing() -> None:
    state = fold(decider, history(put({"a": 1, "b": 2}, "must")))

    assert decider.decide(state, put({"b": 2, "a": 1}, "never", BOB)) == []


def test_a_value_up_to_the_limit_fits_and_one_byte_over_is_too_large() -> None:
    check_value_size("x" * 8, 10)  # ten bytes encoded, quotes included

    with pytest.raises(ValueTooLarge, match="at most 10 bytes"):
        check_value_size("x" * 9, 10)


def test_without_a_route_limit_the_default_ceiling_applies() -> None:
    check_value_size("x" * (DEFAULT_MAX_VALUE_BYTES - 2), None)

    with pytest.raises(ValueTooLarge, match=str(DEFAULT_MAX_VALUE_BYTES)):
        check_value_size("x" * (DEFAULT_MAX_VALUE_BYTES - 1), None)


@pytest.mark.parametrize("body", [{}, {"value": 1, "extra": 2}])
def test_a_body_is_exactly_a_value(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BlackboardBody.model_validate(body)


def test_null_is_a_value() -> None:
    assert BlackboardBody.model_validate({"value": None}).value is None
