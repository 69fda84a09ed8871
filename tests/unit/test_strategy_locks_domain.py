"""Strategy locks as pure functions: the snapshot body, and fold and decide on the
entity core, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from commands.entities import DeleteEntity, EntityDecider
from commands.envelope import Command
from commands.handler import fold
from commands.strategy_locks import (
    MAX_ENTRIES,
    MAX_SNAPSHOT_BYTES,
    STRATEGY_LOCKS,
    StrategyLockBody,
    TakeStrategySnapshot,
)
from spine.codec import seal
from spine.errors import InvalidField, NotFound, ScopeMismatch
from spine.events import GENESIS_HASH, EventEnvelope, Scope

ADMIN = Scope(tenant_id="t1", mode="lab", user_id="admin", surface_id="chat", project_id="p1")
OTHER_ADMIN = ADMIN.model_copy(update={"user_id": "ops", "surface_id": "canvas"})
GRANTS = {"chat": frozenset({"p1"}), "canvas": frozenset({"p1"})}
decider = EntityDecider(STRATEGY_LOCKS)
BODY = {"toggles": {"hedging": True, "rebalance": False}, "flags": {"max_leverage": 2.5}}


def snapshot(
    body: dict[str, Any] = BODY,
    scope: Scope = ADMIN,
    grants: dict[str, frozenset[str]] | None = None,
    strategy: str = "momentum",
) -> Command[Any]:
    assert scope.project_id is not None
    payload = TakeStrategySnapshot(path=(scope.project_id, strategy), body=body)
    return Command[Any](scope=scope, payload=payload, grants=GRANTS if grants is None else grants)


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


# -- decide ----------------------------------------------------------------------------


def test_every_snapshot_is_appended_even_one_that_changes_nothing() -> None:
    events = history(snapshot(), snapshot())

    assert [e.seq for e in events] == [1, 2]
    assert {e.event_type for e in events} == {"strategy_lock.snapshot_taken"}
    assert {e.family for e in events} == {"strategy_lock"}
    assert {e.stream_id for e in events} == {"strategy_lock/t1/lab/p1/momentum"}
    assert [e.payload for e in events] == [BODY, BODY]
    assert fold(decider, events).version == 2


def test_a_snapshot_is_recorded_with_its_writers_scope_on_the_locks_project() -> None:
    first, second = history(snapshot(), snapshot(scope=OTHER_ADMIN))

    assert (first.user_id, first.surface_id, first.project_id) == ("admin", "chat", "p1")
    assert (second.user_id, second.surface_id, second.project_id) == ("ops", "canvas", "p1")


def test_a_first_snapshot_on_a_project_the_caller_is_not_granted_is_refused() -> None:
    with pytest.raises(ScopeMismatch):
        history(snapshot(grants={"chat": frozenset({"p2"})}))


def test_a_caller_not_granted_the_project_finds_no_lock_to_add_to() -> None:
    events = history(snapshot())

    with pytest.raises(NotFound, match="strategy lock 'p1/momentum' not found"):
        decider.decide(fold(decider, events), snapshot(grants={"chat": frozenset({"p2"})}))


def test_each_strategy_of_each_project_is_its_own_stream() -> None:
    elsewhere = ADMIN.model_copy(update={"project_id": "p2"})

    ids = {
        decider.stream_id(snapshot()),
        decider.stream_id(snapshot(strategy="carry")),
        decider.stream_id(snapshot(scope=elsewhere)),
    }

    assert ids == {
        "strategy_lock/t1/lab/p1/momentum",
        "strategy_lock/t1/lab/p1/carry",
        "strategy_lock/t1/lab/p2/momentum",
    }


def test_a_strategy_lock_is_never_deleted() -> None:
    events = history(snapshot())
    delete = Command[Any](scope=ADMIN, payload=DeleteEntity(path=("p1", "momentum")))

    with pytest.raises(InvalidField, match="cannot be deleted"):
        decider.decide(fold(decider, events), delete)


# -- the snapshot body ------------------------------------------------------------------


def test_a_full_snapshot_keeps_every_toggle_and_flag_as_given() -> None:
    raw = {
        "toggles": {"hedging": True, "rebalance": False},
        "flags": {
            "max_leverage": 2.5,
            "lookback_days": 30,
            "venue": "xnas",
            "paper": True,
            "limits": {"per_asset": [0.1, 0.2], "note": None},
        },
        "note": "before the rollout",
    }

    body = StrategyLockBody.model_validate_json(orjson.dumps(raw))

    assert body.model_dump(mode="json", exclude_unset=True) == raw


def test_an_empty_snapshot_says_there_are_no_toggles_and_no_flags() -> None:
    body = StrategyLockBody.model_validate_json(b'{"toggles": {}, "flags": {}}')

    assert body.model_dump(mode="json", exclude_unset=True) == {"toggles": {}, "flags": {}}


def errors(raw: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        StrategyLockBody.model_validate_json(orjson.dumps(raw))
    return [(tuple(e["loc"]), e["type"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"toggles": {"hedging": 1}, "flags": {}}, ("toggles", "hedging")),
        ({"toggles": {"hedging": "true"}, "flags": {}}, ("toggles", "hedging")),
        ({"toggles": {"hedging": None}, "flags": {}}, ("toggles", "hedging")),
        ({"toggles": {"1st": True}, "flags": {}}, ("toggles", "1st", "[key]")),
        ({"toggles": {"has space": True}, "flags": {}}, ("toggles", "has space", "[key]")),
        ({"toggles": {}, "flags": {"x": None}}, ("flags", "x")),
        ({"toggles": {}, "flags": {"x": [1, 2]}}, ("flags", "x")),
        ({"toggles": {}, "flags": {"n" * 65: 1}}, ("flags", "n" * 65, "[key]")),
        ({"toggles": {}, "flags": {}, "note": None}, ("note",)),
        ({"toggles": {}, "flags": {}, "note": ""}, ("note",)),
        ({"toggles": {}, "flags": {}, "owner": "me"}, ("owner",)),
        ({"flags": {}}, ("toggles",)),
        ({"toggles": {}}, ("flags",)),
        ({"toggles": [], "flags": {}}, ("toggles",)),
    ],
    ids=[
        "toggle-number",
        "toggle-string",
        "toggle-null",
        "name-not-an-identifier",
        "name-with-space",
        "flag-null",
        "flag-array",
        "name-too-long",
        "note-null",
        "note-empty",
        "unknown-field",
        "no-toggles",
        "no-flags",
        "toggles-not-an-object",
    ],
)
def test_a_snapshot_that_is_not_exactly_the_shape_is_refused_naming_the_field(
    raw: dict[str, Any], loc: tuple[str, ...]
) -> None:
    assert [found for found, _ in errors(raw)] == [loc]


def test_a_snapshot_holds_at_most_so_many_toggles_and_flags() -> None:
    many = {f"t{i}": True for i in range(MAX_ENTRIES + 1)}

    assert errors({"toggles": many, "flags": {}}) == [(("toggles",), "too_long")]
    assert errors({"toggles": {}, "flags": many}) == [(("flags",), "too_long")]
    StrategyLockBody.model_validate({"toggles": dict(list(many.items())[:-1]), "flags": {}})


def test_a_snapshot_over_the_size_limit_is_refused() -> None:
    big = {"toggles": {}, "flags": {"blob": "x" * MAX_SNAPSHOT_BYTES}}

    assert errors(big) == [((), "value_error")]
