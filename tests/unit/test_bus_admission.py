"""What the command bus takes and how (``Domain.bus``), as pure functions shared with the
HTTP write paths: the role, the place, entity preconditions and bodies; no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from commands.blackboard import DeleteBlackboardKey, PutBlackboardKey
from commands.entities import Creation
from commands.envelope import Command
from commands.strategy_locks import TakeStrategySnapshot
from commands.telemetry import EmitEvents
from engines.auth import Principal
from engines.domains import DOMAINS
from engines.http import blackboard, seo_config, strategy_locks
from engines.http.access import check_role, one_place
from spine.errors import PreconditionRequired, RoleRequired, ScopeMismatch
from spine.events import Scope

SCOPE = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s1", project_id="p1")
ALICE = Principal(user_id="u1", tenant_id="t1", grants={"s1": frozenset({"p1"})})


def test_every_command_but_telemetrys_is_taken_on_the_bus() -> None:
    left = {t for d in DOMAINS for t in d.commands if t not in d.bus}
    assert left == {EmitEvents}
    assert all(set(d.bus) <= set(d.commands) for d in DOMAINS)


def test_a_role_is_refused_unless_the_token_grants_it() -> None:
    check_role(Principal(user_id="u1", tenant_id="t1", roles=frozenset({"admin"})), "admin")
    with pytest.raises(RoleRequired, match="'admin' role"):
        check_role(ALICE, "admin")


@pytest.mark.parametrize(("stated", "named"), [(None, "p1"), ("p1", "p1")])
def test_a_place_stated_or_not_is_the_one_the_target_names(stated: str | None, named: str) -> None:
    assert one_place("project_id", stated, named) == named


def test_a_place_stated_differently_from_the_target_is_a_contradiction() -> None:
    with pytest.raises(ScopeMismatch, match="name one"):
        one_place("project_id", "p2", "p1")


@pytest.mark.parametrize(
    ("expected", "create", "matched", "absent", "settled"),
    [
        (None, "may", False, False, ("may", None)),  # no precondition: an upsert
        (3, "may", True, False, ("never", 3)),  # If-Match: "3" never creates
        (None, "may", True, False, ("never", None)),  # If-Match: *
        (0, "may", False, True, ("must", None)),  # If-None-Match: * creates only
        (0, "never", False, True, ("never", 0)),  # ... and never replaces
    ],
)
def test_entity_preconditions_settle_what_a_put_may_do(
    expected: int | None,
    create: Creation,
    matched: bool,
    absent: bool,
    settled: tuple[Creation, int | None],
) -> None:
    api = strategy_locks.STRATEGY_LOCKS_API
    assert api.settle(expected, create, matched, absent) == settled


def command(payload: Any, expected: int | None = None) -> Command[Any]:
    return Command[Any](scope=SCOPE, payload=payload, expected_version=expected)


def key(value: Any = "v") -> PutBlackboardKey:
    return PutBlackboardKey(path=("p1", "r1", "k"), body={"value": value})


def test_a_command_for_a_key_reads_its_expected_version_as_the_headers_would() -> None:
    created = blackboard.API.admit(command(key(), 0))
    assert (created.payload.create, created.expected_version) == ("must", None)
    replaced = blackboard.API.admit(command(key(), 4))
    assert (replaced.payload.create, replaced.expected_version) == ("never", 4)


@pytest.mark.parametrize("payload", [key(), DeleteBlackboardKey(path=("p1", "r1", "k"))])
def test_a_command_for_a_key_naming_no_version_is_refused(payload: Any) -> None:
    with pytest.raises(PreconditionRequired):
        blackboard.API.admit(command(payload))


def test_a_command_body_is_checked_and_stored_as_its_endpoint_stores_it() -> None:
    given = TakeStrategySnapshot(path=("p1", "st"), body={"toggles": {"a": True}, "flags": {}})
    admitted = strategy_locks.STRATEGY_LOCKS_API.admit(command(given))
    assert admitted.payload.body == {"toggles": {"a": True}, "flags": {}}  # note: not given
    wrong = TakeStrategySnapshot(path=("p1", "st"), body={"toggles": {"a": 1}, "flags": {}})
    with pytest.raises(ValidationError):
        strategy_locks.STRATEGY_LOCKS_API.admit(command(wrong))


def test_a_key_command_is_placed_in_its_paths_project_on_the_one_granting_surface() -> None:
    assert {t.require_surface for t in blackboard.ON_BUS.values()} == {True}
    (place,) = {t.place for t in blackboard.ON_BUS.values()}
    assert place is not None
    assert place(key(), ALICE, None, None) == ("s1", "p1")
    with pytest.raises(ScopeMismatch):
        place(key(), ALICE, None, "p2")


def test_a_config_command_needs_no_project_as_its_endpoint_needs_none() -> None:
    (taken,) = set(seo_config.ON_BUS.values())
    assert taken.require_surface is False
    assert taken.role == "admin"
