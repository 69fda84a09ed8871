"""The budget domain as pure functions: amounts, fold and decide, the projector; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from commands.budget import (
    MAX_MINOR,
    BudgetConflict,
    BudgetDecider,
    CreditBudget,
    DebitBudget,
    SetLimit,
    budget_command,
    format_minor,
    same_request_or_refuse,
    to_minor,
)
from commands.envelope import Command, CommandResult
from commands.handler import fold
from projections.budget import BudgetProjector, ledger_key
from projections.views import ViewRecord
from spine.codec import seal
from spine.errors import AlreadyExists, InvalidField, NotFound
from spine.events import GENESIS_HASH, EventEnvelope, Provenance, Scope

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat")
BOB = ALICE.model_copy(update={"user_id": "bob", "surface_id": None})
decider = BudgetDecider()
projector = BudgetProjector()


def command(payload: Any, scope: Scope = ALICE, **fields: Any) -> Command[Any]:
    return Command[Any](scope=scope, payload=payload, **fields)


def limit(minor: int = 100, **fields: Any) -> SetLimit:
    return SetLimit(budget_id="b1", amount_minor=minor, **fields)


def debit(minor: int, reason: str = "tokens") -> DebitBudget:
    return DebitBudget(budget_id="b1", amount_minor=minor, reason=reason)


def credit(minor: int, reason: str = "refund") -> CreditBudget:
    return CreditBudget(budget_id="b1", amount_minor=minor, reason=reason)


def sealed(events: list[EventEnvelope], cmd: Command[Any]) -> list[EventEnvelope]:
    """``events`` with what ``cmd`` decides on their fold, sealed as the store would."""
    events = list(events)
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


def history(*commands: Command[Any]) -> list[EventEnvelope]:
    events: list[EventEnvelope] = []
    for cmd in commands:
        events = sealed(events, cmd)
    return events


def projected(events: list[EventEnvelope]) -> dict[str, ViewRecord]:
    """The view the projector builds from ``events``."""
    view: dict[str, ViewRecord] = {}
    for event in events:
        for record in projector.apply(
            event, {k: view[k] for k in projector.keys(event) if k in view}
        ):
            view[record.key] = record
    return view


# -- the envelope's family ---------------------------------------------------------------


def test_every_budget_event_is_of_the_budget_family() -> None:
    events = history(
        command(limit(100)), command(debit(60)), command(credit(10)), command(debit(99))
    )

    assert [e.event_type for e in events] == [
        "budget.limit_set",
        "budget.debited",
        "budget.credited",
        "budget.debit_refused",
    ]
    assert {e.family for e in events} == {"budget"}
    assert {e.stream_id for e in events} == {"budget/t1/lab/b1"}


def test_a_commands_event_is_of_the_domain_family_unless_it_names_another() -> None:
    cmd = command(limit())
    assert cmd.event("budget.limit_set", {}).family == "domain"
    assert cmd.event("budget.limit_set", {}, family="budget").family == "budget"
    with pytest.raises(ValueError, match="not an event family"):
        cmd.event("budget.limit_set", {}, family="nonsense")  # type: ignore[arg-type]


def test_events_carry_the_writers_scope_and_provenance() -> None:
    provenance = Provenance(agent_id="planner", run_id="r1", step_id="s3", trace_id="ab" * 16)
    events = history(
        command(limit(100)), command(debit(5), scope=BOB, source="agent", provenance=provenance)
    )

    debited = events[1]
    assert (debited.tenant_id, debited.mode, debited.user_id, debited.surface_id) == (
        "t1",
        "lab",
        "bob",
        None,
    )
    assert (debited.source, debited.agent_id, debited.run_id, debited.step_id) == (
        "agent",
        "planner",
        "r1",
        "s3",
    )
    assert debited.trace_id == "ab" * 16


# -- amounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scale", "minor"),
    [
        ("12.50", 2, 1250),
        ("12.5", 2, 1250),
        ("12", 2, 1200),
        ("0.01", 2, 1),
        ("7", 0, 7),
        ("1.000001", 6, 1_000_001),
    ],
)
def test_a_decimal_amount_becomes_exact_minor_units(text: str, scale: int, minor: int) -> None:
    assert to_minor(text, scale) == minor


def test_more_decimals_than_the_scale_are_refused_naming_the_amount() -> None:
    with pytest.raises(InvalidField, match="3 decimals; this budget's scale is 2") as info:
        to_minor("1.005", 2)
    assert info.value.loc == ("body", "amount")


def test_an_amount_over_the_largest_is_refused() -> None:
    with pytest.raises(InvalidField, match="over the largest"):
        to_minor("10000000000000000.01", 2)


@pytest.mark.parametrize(
    ("minor", "scale", "text"), [(1250, 2, "12.50"), (-5, 2, "-0.05"), (7, 0, "7")]
)
def test_minor_units_are_shown_as_a_decimal_string(minor: int, scale: int, text: str) -> None:
    assert format_minor(minor, scale) == text


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": 12.5},
        {"amount_minor": 12.5},
        {"amount_minor": 1.0},
        {"amount_minor": True},
        {"amount": True},
        {"amount_minor": "100"},
        {"amount_minor": -1},
        {"amount_minor": 0},
        {"amount": "0.00"},
        {"amount": "-1.00"},
        {"amount": "1e3"},
        {"amount": " 1.00"},
        {"amount": "01.00"},
        {"amount": "1."},
        {"amount": "1.0000001"},
        {"amount_minor": MAX_MINOR + 1},
        {"amount": "1.00", "amount_minor": 100},
        {},
    ],
)
def test_a_float_bool_negative_zero_or_malformed_amount_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DebitBudget.model_validate({"budget_id": "b1", "reason": "r", **fields})


@pytest.mark.parametrize("reason", ["", "   ", "two\nlines", "x" * 501, "bidi\u202e"])
def test_a_movement_needs_a_one_line_reason(reason: str) -> None:
    with pytest.raises(ValidationError):
        DebitBudget(budget_id="b1", amount_minor=1, reason=reason)


@pytest.mark.parametrize(
    "fields", [{"currency": "eur"}, {"currency": "EURO"}, {"scale": 7}, {"scale": -1}]
)
def test_a_limits_currency_is_three_capitals_and_its_scale_0_to_6(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SetLimit.model_validate({"budget_id": "b1", "amount_minor": 1, **fields})


# -- decide ------------------------------------------------------------------------------


def test_the_first_limit_fixes_scale_and_currency_and_a_decimal_limit_uses_them() -> None:
    events = history(command(SetLimit(budget_id="b1", amount="10.5", scale=3, currency="EUR")))

    assert events[0].payload == {
        "limit_minor": 10_500,
        "scale": 3,
        "currency": "EUR",
        "reason": None,
    }
    state = fold(decider, events)
    assert (state.limit_minor, state.scale, state.currency, state.version) == (10_500, 3, "EUR", 1)


def test_scale_defaults_to_two_and_a_later_limit_keeps_scale_and_currency() -> None:
    events = history(
        command(SetLimit(budget_id="b1", amount="1", currency="USD")),
        command(SetLimit(budget_id="b1", amount="2.25")),
    )

    assert events[1].payload == {"limit_minor": 225, "scale": 2, "currency": "USD", "reason": None}


@pytest.mark.parametrize(
    ("change", "message"),
    [({"scale": 3}, "scale 2, fixed by its first limit"), ({"currency": "GBP"}, "is in USD")],
)
def test_a_later_limit_cannot_change_scale_or_currency(
    change: dict[str, Any], message: str
) -> None:
    events = history(command(limit(100, currency="USD")))

    with pytest.raises(BudgetConflict, match=message):
        decider.decide(fold(decider, events), command(limit(200, **change)))


def test_the_same_limit_again_records_nothing() -> None:
    events = history(command(limit(100, currency="USD")))

    assert decider.decide(fold(decider, events), command(limit(100, scale=2))) == []


def test_a_debit_within_the_limit_is_recorded_and_spends() -> None:
    events = history(command(limit(100)), command(debit(60)), command(debit(40)))

    assert events[1].payload == {"amount_minor": 60, "scale": 2, "reason": "tokens"}
    state = fold(decider, events)
    assert (state.spent_minor, state.version) == (100, 3)


def test_a_debit_over_the_limit_is_a_recorded_refusal_naming_limit_and_spent() -> None:
    events = history(command(limit(100)), command(debit(60)), command(debit(41, "too much")))

    refused = events[2]
    assert refused.event_type == "budget.debit_refused"
    assert refused.payload == {
        "amount_minor": 41,
        "scale": 2,
        "reason": "too much",
        "limit_minor": 100,
        "spent_minor": 60,
    }
    state = fold(decider, events)
    assert (state.spent_minor, state.version) == (60, 3)


def test_a_decimal_debit_with_more_decimals_than_the_scale_is_refused_and_records_nothing() -> None:
    state = fold(decider, history(command(limit(100))))
    cmd = command(DebitBudget(budget_id="b1", amount="0.001", reason="r"))

    with pytest.raises(InvalidField, match="scale is 2"):
        decider.decide(state, cmd)


def test_a_lowered_limit_refuses_every_debit_and_zero_freezes_the_budget() -> None:
    events = history(command(limit(100)), command(debit(80)), command(limit(50)), command(debit(1)))
    assert events[-1].event_type == "budget.debit_refused"
    frozen = history(command(limit(0)), command(debit(1)))
    assert frozen[-1].event_type == "budget.debit_refused"


def test_a_credit_gives_back_what_was_spent() -> None:
    events = history(command(limit(100)), command(debit(70)), command(credit(30)))

    assert events[2].event_type == "budget.credited"
    assert fold(decider, events).spent_minor == 40


def test_a_credit_of_more_than_is_spent_is_refused_and_records_nothing() -> None:
    state = fold(decider, history(command(limit(100)), command(debit(20))))

    with pytest.raises(BudgetConflict, match="more than is spent"):
        decider.decide(state, command(credit(21)))


@pytest.mark.parametrize("payload", [debit(1), credit(1)])
def test_a_debit_or_credit_on_a_budget_without_a_limit_is_not_found(payload: Any) -> None:
    with pytest.raises(NotFound, match="no limit has been set"):
        decider.decide(decider.initial(), command(payload))


# -- idempotency -------------------------------------------------------------------------


def test_an_idempotency_key_names_one_command_per_tenant_mode_budget_and_user() -> None:
    a = budget_command(ALICE, debit(1), "k")
    assert budget_command(ALICE, credit(5), "k").command_id == a.command_id  # kind: no part
    assert budget_command(BOB, debit(1), "k").command_id != a.command_id
    other_budget = DebitBudget(budget_id="b2", amount_minor=1, reason="tokens")
    assert budget_command(ALICE, other_budget, "k").command_id != a.command_id
    assert budget_command(ALICE, debit(1)).command_id != budget_command(ALICE, debit(1)).command_id


def replayed(original: Command[Any]) -> CommandResult:
    events = history(command(limit(100)), original)
    return CommandResult(
        stream_id=events[-1].stream_id, version=2, events=(events[-1],), deduplicated=True
    )


@pytest.mark.parametrize(
    "again",
    [
        DebitBudget(budget_id="b1", amount="0.05", reason="tokens"),
        DebitBudget(budget_id="b1", amount_minor=5, reason="tokens"),
    ],
)
def test_a_replay_of_the_same_request_is_answered(again: DebitBudget) -> None:
    result = replayed(budget_command(ALICE, debit(5), "k"))

    same_request_or_refuse(budget_command(ALICE, again, "k"), result)


@pytest.mark.parametrize(
    "again",
    [
        debit(6),
        debit(5, "other"),
        credit(5, "tokens"),
        limit(5),
        DebitBudget(budget_id="b1", amount="0.051", reason="tokens"),
    ],
    ids=["amount", "reason", "kind", "limit", "decimals"],
)
def test_a_key_reused_for_a_different_request_is_refused(again: Any) -> None:
    result = replayed(budget_command(ALICE, debit(5), "k"))

    with pytest.raises(AlreadyExists, match="Idempotency-Key"):
        same_request_or_refuse(budget_command(ALICE, again, "k"), result)


def test_a_replayed_refusal_is_the_same_request_too() -> None:
    result = replayed(budget_command(ALICE, debit(500), "k"))
    assert result.events[0].event_type == "budget.debit_refused"

    same_request_or_refuse(budget_command(ALICE, debit(500), "k"), result)


# -- the projector -----------------------------------------------------------------------


def test_the_view_holds_totals_and_one_ledger_line_per_event() -> None:
    events = history(
        command(limit(100, currency="EUR")),
        command(debit(60), scope=BOB),
        command(debit(50, "over")),
        command(credit(10)),
    )

    view = projected(events)

    totals = view["budget/t1/lab/b1"]
    assert totals.version == 4
    assert totals.scope.user_id == "alice"  # the last writer
    assert totals.data | {"created_at": None, "updated_at": None} == {
        "entry": "totals",
        "budget_id": "b1",
        "limit_minor": 100,
        "spent_minor": 50,
        "scale": 2,
        "currency": "EUR",
        "seq": 4,
        "created_at": None,
        "updated_at": None,
    }
    lines = [view[ledger_key("budget/t1/lab/b1", seq)] for seq in range(1, 5)]
    assert [r.version for r in lines] == [1, 1, 1, 1]
    assert [(r.data["kind"], r.data["amount_minor"], r.data["spent_minor"]) for r in lines] == [
        ("limit", 100, 0),
        ("debit", 60, 60),
        ("debit_refused", 50, 60),
        ("credit", 10, 50),
    ]
    assert (lines[1].scope.user_id, lines[1].data["user_id"]) == ("bob", "bob")
    assert lines[2].data["reason"] == "over"


def test_a_ledger_key_cannot_be_a_budgets_key() -> None:
    assert ledger_key("budget/t1/lab/b1", 7) == "budget/t1/lab/b1#000000000007"
    with pytest.raises(ValidationError):
        SetLimit(budget_id="b1#000000000007", amount_minor=1)
