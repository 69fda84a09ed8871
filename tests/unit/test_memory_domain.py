"""Session memory as pure functions: validation, fold and decide, the projector; no I/O.

Time is given, never read: each command carries its ``at`` and each event its
``recorded_at``, so expiry is tested at exact instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from commands.envelope import Command, CommandResult
from commands.handler import fold
from commands.memory import (
    MAX_VALUE_BYTES,
    DeleteMemory,
    MemoryDecider,
    SetMemory,
    expiry,
    memory_command_id,
    memory_stream,
    same_request_or_refuse,
)
from projections.memory import MemoryProjector, record_key
from projections.views import MAX_KEY, ViewRecord
from spine.codec import seal, timestamp_text
from spine.errors import (
    AlreadyExists,
    ConcurrencyError,
    InvalidField,
    NotFound,
    ScopeMismatch,
    ValueTooLarge,
)
from spine.events import GENESIS_HASH, EventEnvelope, Provenance, Scope

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")
IN_P1 = ALICE.model_copy(update={"project_id": "p1"})
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
decider = MemoryDecider()
projector = MemoryProjector()


def put(key: str = "k", value: Any = "v", *, at: datetime = T0, **fields: Any) -> SetMemory:
    return SetMemory(session_id="s1", key=key, value=value, at=at, **fields)


def delete(key: str = "k", *, at: datetime = T0, **fields: Any) -> DeleteMemory:
    return DeleteMemory(session_id="s1", key=key, at=at, **fields)


def command(payload: Any, scope: Scope = ALICE, **fields: Any) -> Command[Any]:
    return Command[Any](scope=scope, payload=payload, **fields)


def history(
    *steps: tuple[Command[Any], datetime], events: list[EventEnvelope] | None = None
) -> list[EventEnvelope]:
    """Run each command through decide and seal its events as recorded at the time given
    with it, as the store would."""
    events = list(events or [])
    for cmd, recorded_at in steps:
        for new in decider.decide(fold(decider, events), cmd):
            env, _ = seal(
                new,
                stream_id=decider.stream_id(cmd),
                seq=len(events) + 1,
                prev_hash=events[-1].hash if events else GENESIS_HASH,
                recorded_at=recorded_at,
            )
            events.append(env)
    return events


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- streams ----------------------------------------------------------------------------


def test_a_session_stream_is_per_user_and_names_the_project_only_when_scoped_to_one() -> None:
    assert memory_stream(ALICE, "s1") == "memory/t1/lab/alice/s1"
    assert memory_stream(IN_P1, "s1") == "memory/t1/lab/alice/s1/p1"
    bob = ALICE.model_copy(update={"user_id": "bob"})
    assert memory_stream(bob, "s1") != memory_stream(ALICE, "s1")


def test_a_scope_without_a_user_has_no_session_memory() -> None:
    with pytest.raises(InvalidField):
        memory_stream(ALICE.model_copy(update={"user_id": None}), "s1")


# -- set and delete ---------------------------------------------------------------------


def test_set_and_delete_produce_one_event_each_carrying_key_value_and_ttl() -> None:
    events = history(
        (command(put("a", {"x": [1, 2]})), at(0)),
        (command(put("b", 7, ttl_seconds=60)), at(1)),
        (command(delete("a", at=at(2))), at(2)),
    )

    assert [e.event_type for e in events] == ["memory.set", "memory.set", "memory.deleted"]
    assert {e.stream_id for e in events} == {"memory/t1/lab/alice/s1"}
    assert [e.payload for e in events] == [
        {"key": "a", "value": {"x": [1, 2]}, "ttl_seconds": None},
        {"key": "b", "value": 7, "ttl_seconds": 60},
        {"key": "a"},
    ]
    state = fold(decider, events)
    assert state.version == 3
    assert (state.version_of("a", at(3)), state.version_of("b", at(3))) == (0, 2)


def test_events_carry_the_commands_scope_and_provenance() -> None:
    provenance = Provenance(agent_id="planner", run_id="run-9", trace_id="abc")
    cmd = command(put(), scope=IN_P1, source="agent", provenance=provenance)

    (event,) = history((cmd, at(0)))

    assert (event.tenant_id, event.mode, event.user_id) == ("t1", "lab", "alice")
    assert (event.surface_id, event.project_id) == ("chat", "p1")
    assert (event.source, event.command_id) == ("agent", cmd.command_id)
    assert (event.agent_id, event.run_id, event.trace_id) == ("planner", "run-9", "abc")


def test_a_key_version_is_the_seq_of_its_last_event_not_the_streams() -> None:
    events = history(
        (command(put("a")), at(0)),
        (command(put("b")), at(0)),
        (command(put("b", 2)), at(0)),
    )
    state = fold(decider, events)

    assert (state.version, state.version_of("a", at(1)), state.version_of("b", at(1))) == (3, 1, 3)


def test_every_set_appends_even_with_the_same_value() -> None:
    events = history((command(put()), at(0)))

    assert len(decider.decide(fold(decider, events), command(put()))) == 1


def test_deleting_an_absent_key_is_not_found() -> None:
    with pytest.raises(NotFound):
        decider.decide(fold(decider, []), command(delete()))
    gone = history((command(put()), at(0)), (command(delete()), at(0)))
    with pytest.raises(NotFound):
        decider.decide(fold(decider, gone), command(delete()))


def test_a_value_over_the_limit_is_refused() -> None:
    big = "x" * MAX_VALUE_BYTES  # plus its quotes
    with pytest.raises(ValueTooLarge, match=str(MAX_VALUE_BYTES)):
        decider.decide(fold(decider, []), command(put(value=big)))
    assert decider.decide(fold(decider, []), command(put(value=big[:-2])))


def test_a_command_needs_a_surface_within_its_grants() -> None:
    with pytest.raises(InvalidField):
        decider.decide(
            fold(decider, []), command(put(), scope=ALICE.model_copy(update={"surface_id": None}))
        )
    with pytest.raises(ScopeMismatch):
        decider.decide(fold(decider, []), command(put(), grants={"other": frozenset()}))
    assert decider.decide(fold(decider, []), command(put(), grants={"chat": frozenset()}))


@pytest.mark.parametrize("ttl", [0, -1, 1.0, 1.5, True, "5", 2**31])
def test_ttl_seconds_must_be_a_positive_whole_number(ttl: Any) -> None:
    with pytest.raises(ValidationError):
        put(ttl_seconds=ttl)


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValidationError):
        put(at=datetime(2030, 1, 1))  # naive: no time zone


# -- per-key preconditions --------------------------------------------------------------


def test_if_match_compares_the_keys_version_not_the_streams() -> None:
    state = fold(decider, history((command(put("a")), at(0)), (command(put("b")), at(0))))

    assert decider.decide(state, command(put("a", expected_key_version=1)))
    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(put("a", expected_key_version=2)))
    assert decider.decide(state, command(delete("a", expected_key_version=1)))
    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(delete("b", expected_key_version=1)))


def test_if_match_on_an_absent_key_fails_and_if_none_match_asks_for_absence() -> None:
    state = fold(decider, history((command(put("a")), at(0))))

    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(put("new", expected_key_version=1)))
    assert decider.decide(state, command(put("new", expected_key_version=0)))
    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(put("a", expected_key_version=0)))


def test_if_match_star_needs_a_live_key() -> None:
    state = fold(decider, history((command(put("a")), at(0))))

    assert decider.decide(state, command(put("a", require_live=True)))
    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(put("new", require_live=True)))


def test_not_found_wins_over_a_failed_precondition_on_delete() -> None:
    with pytest.raises(NotFound):
        decider.decide(fold(decider, []), command(delete(expected_key_version=0)))


# -- expiry -----------------------------------------------------------------------------


def test_expiry_counts_from_the_events_recorded_time() -> None:
    assert expiry(T0, 30) == at(30)
    assert expiry(T0, None) is None
    (event,) = history((command(put(ttl_seconds=30, at=at(-5))), at(0)))
    state = fold(decider, [event])

    assert state.keys["k"].expires_at == at(30)  # not at(25): the command's time is not it
    assert state.version_of("k", at(29.999)) == 1
    assert state.version_of("k", at(30)) == 0


def test_an_expired_key_is_absent_to_every_command() -> None:
    state = fold(decider, history((command(put(ttl_seconds=10)), at(0))))
    later = at(10)

    with pytest.raises(NotFound):
        decider.decide(state, command(delete(at=later)))
    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(put(expected_key_version=1, at=later)))
    with pytest.raises(ConcurrencyError):
        decider.decide(state, command(put(require_live=True, at=later)))
    assert decider.decide(state, command(put(expected_key_version=0, at=later)))


def test_a_later_write_renews_or_removes_the_expiry() -> None:
    events = history(
        (command(put(ttl_seconds=10)), at(0)),
        (command(put(ttl_seconds=10, at=at(5))), at(5)),
    )
    assert fold(decider, events).version_of("k", at(14)) == 2
    durable = history((command(put(at=at(6))), at(6)), events=events)
    assert fold(decider, durable).version_of("k", at(10**6)) == 3


def test_a_refold_gives_the_same_expiry_so_an_expired_key_stays_expired() -> None:
    events = history((command(put(ttl_seconds=1)), at(0)))

    again = fold(decider, list(events))

    assert again.keys == fold(decider, events).keys
    assert again.version_of("k", at(3600)) == 0


# -- idempotency ------------------------------------------------------------------------


def test_an_idempotency_key_names_one_command_per_user() -> None:
    bob = ALICE.model_copy(update={"user_id": "bob"})

    assert memory_command_id(ALICE, "k1") == memory_command_id(ALICE, "k1")
    assert memory_command_id(ALICE, "k1") != memory_command_id(ALICE, "k2")
    assert memory_command_id(ALICE, "k1") != memory_command_id(bob, "k1")
    assert memory_command_id(ALICE, None) != memory_command_id(ALICE, None)


@pytest.mark.parametrize(
    "retry",
    [put("k", "other"), put("other"), put(ttl_seconds=5), delete()],
    ids=["value", "key", "ttl", "delete"],
)
def test_an_idempotency_key_reused_for_another_request_is_refused(retry: Any) -> None:
    events = history((command(put()), at(0)))
    original = CommandResult(
        stream_id=events[0].stream_id, version=1, events=tuple(events), deduplicated=True
    )

    same_request_or_refuse(command(put(at=at(9))), original)  # the same request, later
    with pytest.raises(AlreadyExists, match="Idempotency-Key"):
        same_request_or_refuse(command(retry), original)


# -- the projector ----------------------------------------------------------------------


def project(events: list[EventEnvelope]) -> dict[str, ViewRecord]:
    """Apply ``events`` to an empty view, as a runner (or a rebuild) does."""
    view: dict[str, ViewRecord] = {}
    for event in events:
        for record in projector.apply(
            event, {k: view[k] for k in projector.keys(event) if k in view}
        ):
            view[record.key] = record
    return view


def test_the_view_holds_one_record_per_key_with_its_version_expiry_and_scope() -> None:
    events = history(
        (command(put("a", [1], ttl_seconds=30), scope=IN_P1), at(0)),
        (command(put("b", "x"), scope=IN_P1), at(1)),
    )

    view = project(events)

    a = view["memory/t1/lab/alice/s1/p1#a"]
    assert (a.version, a.expires_at, a.deleted) == (1, at(30), False)
    assert a.scope == IN_P1
    assert a.data == {
        "session_id": "s1",
        "key": "a",
        "value": [1],
        "ttl_seconds": 30,
        "stream_id": "memory/t1/lab/alice/s1/p1",
        "user_id": "alice",
        "surface_id": "chat",
        "project_id": "p1",
        "provenance": {"source": "ui"},
        "created_at": timestamp_text(at(0)),
        "updated_at": timestamp_text(at(0)),
    }
    b = view["memory/t1/lab/alice/s1/p1#b"]
    assert (b.version, b.expires_at, b.data["value"]) == (2, None, "x")


def test_the_projector_lists_the_record_it_writes() -> None:
    (event,) = history((command(put("a")), at(0)))

    (record,) = projector.apply(event, {})

    assert projector.keys(event) == (record.key,)


def test_an_update_keeps_created_at_and_a_delete_leaves_a_tombstone() -> None:
    events = history(
        (command(put(ttl_seconds=10)), at(0)),
        (command(put(value=2, at=at(5))), at(5)),
        (command(delete(at=at(6))), at(6)),
    )

    view = project(events[:2])
    record = view["memory/t1/lab/alice/s1#k"]
    assert (record.version, record.expires_at, record.data["value"]) == (2, None, 2)
    assert record.data["created_at"] == timestamp_text(at(0))
    assert record.data["updated_at"] == timestamp_text(at(5))
    tombstone = project(events)["memory/t1/lab/alice/s1#k"]
    assert (tombstone.version, tombstone.deleted) == (3, True)


def test_a_key_set_again_after_expiring_begins_a_new_life() -> None:
    events = history(
        (command(put(ttl_seconds=10)), at(0)),
        (command(put(value=2, at=at(20))), at(20)),
    )

    record = project(events)["memory/t1/lab/alice/s1#k"]

    assert record.data["created_at"] == timestamp_text(at(20))


def test_a_rebuild_gives_every_record_the_expiry_it_had() -> None:
    """Recorded long ago with a short TTL: the rebuilt record is expired as it was, not
    revived with a fresh TTL counted from the rebuild."""
    past = datetime.now(UTC) - timedelta(days=1)
    events = history((command(put(ttl_seconds=60, at=past)), past))

    first, rebuilt = project(events), project(events)

    assert first == rebuilt
    assert rebuilt["memory/t1/lab/alice/s1#k"].expires_at == past + timedelta(seconds=60)


def test_ids_too_long_together_for_a_record_key_get_a_digest_key() -> None:
    long = "x" * 128
    scope = Scope(tenant_id=long, mode="enterprise", user_id=long, surface_id="c", project_id=long)
    stream = memory_stream(scope, long)

    short, hashed = record_key("memory/t1/lab/u/s", "k"), record_key(stream, long)

    assert short == "memory/t1/lab/u/s#k"
    assert len(hashed) <= MAX_KEY
    assert hashed.startswith("memory#")
    assert hashed != record_key(stream, long[:-1] + "y")
    (event,) = history(
        (command(SetMemory(session_id=long, key=long, value=1, at=T0), scope=scope), T0)
    )
    (record,) = projector.apply(event, {})
    assert record.key == hashed
