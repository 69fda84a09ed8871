"""Every domain's commands on the Kafka command bus, checked as their HTTP paths check a
request (issue 10, item 3): one accepted command per domain whose effect shows in its
view, and each refusal its HTTP path has, answered with HTTP's status and with nothing
written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from commands.blackboard import PutBlackboardKey
from commands.budget import CreditBudget, DebitBudget, SetLimit
from commands.memory import DeleteMemory, SetMemory
from commands.seo_config import PutSeoConfig
from commands.strategy_locks import TakeStrategySnapshot
from commands.tabular import PutFlow
from commands.telemetry import EmitEvents
from engines.auth import mint_lab_token
from engines.client import CommandClient, message_for
from engines.runtime import Runtime
from engines.worker import CommandWorker
from projections.entities import latest_key
from projections.memory import record_key
from routing.backends.kafka.bus import Accepted, Refused
from tests.e2e.kafka.conftest import ANSWER_SECONDS
from tests.e2e.support import PROJECT, SURFACE, TENANT, USER, audit_events

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

#: The time to live the routes give session memory here.
ROUTE_TTL = 60
#: What the lab routes let a blackboard key hold.
BLACKBOARD_BYTES = 65536


@pytest.fixture
def routes_file(routes_file: Path) -> Path:
    """The bus's routes, with a time to live on session memory."""
    text = routes_file.read_text(encoding="utf-8")
    old = "{backend: sqlite, name: session_memory, lab: true}"
    new = old.replace("}", f", options: {{ttl_seconds: {ROUTE_TTL}}}}}")
    assert old in text
    routes_file.write_text(text.replace(old, new), encoding="utf-8")
    return routes_file


def token(data_dir: Path, *roles: str, projects: tuple[str, ...] = (PROJECT,)) -> str:
    return mint_lab_token(
        data_dir,
        tenant_id=TENANT,
        user_id=USER,
        surfaces=[SURFACE],
        projects=list(projects),
        roles=roles,
        ttl_seconds=600,
    )


async def send(
    client: CommandClient,
    data_dir: Path,
    payload: BaseModel,
    command_id: str,
    *roles: str,
    **fields: Any,
) -> Accepted | Refused:
    message = message_for(payload, token=token(data_dir, *roles), command_id=command_id, **fields)
    return await client.send_and_wait(message, timeout=ANSWER_SECONDS)


async def events_of(runtime: Runtime, stream_id: str) -> list[str]:
    return [e.event_type async for e in runtime.spine.scan() if e.stream_id == stream_id]


async def entries_on(runtime: Runtime, prefix: str) -> int:
    return len([e async for e in runtime.spine.scan() if e.stream_id.startswith(prefix)])


async def shown(runtime: Runtime, view: str, answer: Accepted | Refused, key: str) -> Any:
    """The record ``key`` of ``view`` once it reflects ``answer``."""
    assert isinstance(answer, Accepted), answer
    assert await runtime.wait_for(view, answer.stream_id, answer.version, 5)
    record = await runtime.view_of(view).get(key)
    assert record is not None
    return record


def refused(answer: Accepted | Refused, code: str, status: int) -> None:
    assert isinstance(answer, Refused), answer
    assert (answer.code, answer.http_status) == (code, status), answer.message


async def role_refusal_is_audited(runtime: Runtime) -> None:
    (audit,) = await audit_events(runtime)
    assert audit.event_type == "audit.access_denied"
    assert (audit.payload["reason_code"], audit.user_id) == ("RoleRequired", USER)


# -- strategy locks (admin) ------------------------------------------------------------


def snapshot(unique: str, **body: Any) -> TakeStrategySnapshot:
    return TakeStrategySnapshot(
        path=(PROJECT, f"st-{unique}"), body={"toggles": {"fast": True}, "flags": {}, **body}
    )


async def test_a_strategy_snapshot_by_an_admin_is_taken_and_shows_in_the_view(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, snapshot(unique), f"c-{unique}", "admin")
    record = await shown(runtime, "strategy_locks", answer, latest_key(answer.stream_id))
    assert record.data["toggles"] == {"fast": True}
    assert (record.scope.surface_id, record.scope.project_id) == (SURFACE, PROJECT)


async def test_a_strategy_snapshot_without_the_admin_role_is_refused_audited_and_not_taken(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, snapshot(unique), f"c-{unique}")
    refused(answer, "RoleRequired", 403)
    await role_refusal_is_audited(runtime)
    assert await entries_on(runtime, "strategy_lock/") == 0


async def test_a_strategy_snapshot_naming_another_project_than_its_path_is_refused_audited(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, snapshot(unique), f"c-{unique}", "admin", project_id="p9")
    refused(answer, "ScopeMismatch", 403)
    (audit,) = await audit_events(runtime)
    assert audit.payload["reason_code"] == "ScopeMismatch"
    assert await entries_on(runtime, "strategy_lock/") == 0


async def test_a_strategy_snapshot_whose_body_breaks_its_model_is_refused(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    bad = snapshot(unique, toggles={"fast": "yes"})
    answer = await send(client, tmp_path, bad, f"c-{unique}", "admin")
    refused(answer, "InvalidPayload", 422)  # as HTTP answers a body that breaks its model
    assert "payload.toggles" in answer.message
    assert await entries_on(runtime, "strategy_lock/") == 0


# -- SEO config (admin) ----------------------------------------------------------------


def config(**body: Any) -> PutSeoConfig:
    return PutSeoConfig(path=(SURFACE,), body={"title": "Home", **body})


async def test_an_seo_config_by_an_admin_is_put_on_its_surface_in_no_project(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, config(), f"c-{unique}", "admin")
    record = await shown(runtime, "seo_config", answer, latest_key(answer.stream_id))
    assert record.data["title"] == "Home"
    assert (record.scope.surface_id, record.scope.project_id) == (SURFACE, None)


async def test_an_seo_config_without_the_admin_role_is_refused_audited_and_not_put(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, config(), f"c-{unique}")
    refused(answer, "RoleRequired", 403)
    await role_refusal_is_audited(runtime)
    assert await entries_on(runtime, "seo_config/") == 0


# -- budgets ---------------------------------------------------------------------------


async def test_a_budget_limit_debit_and_credit_are_carried_out_and_show_in_the_view(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    budget = f"b-{unique}"
    limit = await send(client, tmp_path, SetLimit(budget_id=budget, amount="10.00"), "l", "admin")
    assert isinstance(limit, Accepted)
    debit = await send(
        client, tmp_path, DebitBudget(budget_id=budget, amount="4.00", reason="r"), "d"
    )
    credit = await send(
        client, tmp_path, CreditBudget(budget_id=budget, amount="1.50", reason="r"), "c"
    )
    assert isinstance(debit, Accepted)
    record = await shown(runtime, "budgets", credit, limit.stream_id)
    assert (record.data["limit_minor"], record.data["spent_minor"]) == (1000, 250)


async def test_a_budget_limit_without_the_admin_role_is_refused_audited_and_not_set(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, SetLimit(budget_id=f"b-{unique}", amount="10"), "l")
    refused(answer, "RoleRequired", 403)
    await role_refusal_is_audited(runtime)
    assert await entries_on(runtime, "budget/") == 0


async def test_a_debit_over_the_limit_is_refused_with_402_recorded_and_spends_nothing(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    budget = f"b-{unique}"
    limit = await send(client, tmp_path, SetLimit(budget_id=budget, amount="10"), "l", "admin")
    assert isinstance(limit, Accepted)
    answer = await send(
        client, tmp_path, DebitBudget(budget_id=budget, amount="10.01", reason="r"), "d"
    )
    refused(answer, "LimitExceeded", 402)
    assert "over the limit of 10.00" in answer.message
    # as over HTTP: the refusal is recorded (an event), the debit is not
    assert await events_of(runtime, limit.stream_id) == ["budget.limit_set", "budget.debit_refused"]
    assert await runtime.wait_for("budgets", limit.stream_id, 2, 5)
    record = await runtime.view_of("budgets").get(limit.stream_id)
    assert record is not None
    assert record.data["spent_minor"] == 0
    # the same command again is answered as the first time, and records nothing more
    again = await send(
        client, tmp_path, DebitBudget(budget_id=budget, amount="10.01", reason="r"), "d"
    )
    refused(again, "LimitExceeded", 402)
    assert len(await events_of(runtime, limit.stream_id)) == 2


# -- session memory --------------------------------------------------------------------


async def test_a_memory_key_is_set_with_the_routes_ttl_and_deleted(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    session = f"m-{unique}"
    at = "2001-01-01T00:00:00+00:00"  # the sender's time is not the server's: replaced
    put = SetMemory.model_validate({"session_id": session, "key": "k", "value": [1], "at": at})
    answer = await send(client, tmp_path, put, "s")
    assert isinstance(answer, Accepted)
    record = await shown(runtime, "memory", answer, record_key(answer.stream_id, "k"))
    assert (record.data["value"], record.data["ttl_seconds"]) == ([1], ROUTE_TTL)
    assert record.expires_at is not None  # from the server's time, so not expired
    gone = DeleteMemory.model_validate({"session_id": session, "key": "k", "at": at})
    deleted = await send(client, tmp_path, gone, "d")
    assert isinstance(deleted, Accepted)
    assert (deleted.version, deleted.deduplicated) == (2, False)


async def test_a_memory_ttl_above_the_routes_is_refused_and_nothing_is_written(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    put = SetMemory.model_validate(
        {
            "session_id": f"m-{unique}",
            "key": "k",
            "value": 1,
            "ttl_seconds": ROUTE_TTL + 1,
            "at": "2001-01-01T00:00:00+00:00",
        }
    )
    answer = await send(client, tmp_path, put, "s")
    refused(answer, "InvalidField", 422)
    assert "at most 60 seconds" in answer.message
    assert await entries_on(runtime, "memory/") == 0


# -- the blackboard --------------------------------------------------------------------


def blackboard_key(unique: str, value: Any = "v", project: str = PROJECT) -> PutBlackboardKey:
    return PutBlackboardKey(path=(project, f"r-{unique}", "k"), body={"value": value})


async def test_a_blackboard_key_is_created_then_replaced_at_its_version(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    created = await send(client, tmp_path, blackboard_key(unique), "c", expected_version=0)
    assert isinstance(created, Accepted)
    replaced = await send(
        client, tmp_path, blackboard_key(unique, "w"), "r", expected_version=created.version
    )
    record = await shown(runtime, "blackboard", replaced, latest_key(created.stream_id))
    assert (record.data["value"], record.version) == ("w", 2)
    assert (record.scope.surface_id, record.scope.project_id) == (SURFACE, PROJECT)


async def test_a_blackboard_write_naming_no_version_is_refused_428_and_writes_nothing(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(client, tmp_path, blackboard_key(unique), "c")
    refused(answer, "PreconditionRequired", 428)
    assert await entries_on(runtime, "blackboard/") == 0


async def test_a_blackboard_write_at_a_stale_version_is_refused_and_writes_nothing(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    created = await send(client, tmp_path, blackboard_key(unique), "c", expected_version=0)
    assert isinstance(created, Accepted)
    stale = await send(client, tmp_path, blackboard_key(unique, "w"), "r", expected_version=7)
    refused(stale, "ConcurrencyError", 409)
    again = await send(client, tmp_path, blackboard_key(unique, "w"), "a", expected_version=0)
    refused(again, "ConcurrencyError", 409)
    assert len(await events_of(runtime, created.stream_id)) == 1


async def test_a_blackboard_value_over_the_routes_size_is_refused_413_and_writes_nothing(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    big = blackboard_key(unique, "x" * BLACKBOARD_BYTES)
    answer = await send(client, tmp_path, big, "c", expected_version=0)
    refused(answer, "ValueTooLarge", 413)
    assert await entries_on(runtime, "blackboard/") == 0


async def test_a_blackboard_write_to_a_project_not_granted_is_refused_403_and_audited(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await send(
        client, tmp_path, blackboard_key(unique, project="p9"), "c", expected_version=0
    )
    refused(answer, "ScopeMismatch", 403)
    (audit,) = await audit_events(runtime)
    assert audit.payload["reason_code"] == "ScopeMismatch"
    assert await entries_on(runtime, "blackboard/") == 0


# -- flows (graphs and overlays are taken the same way) ---------------------------------


async def test_a_flow_is_created_on_the_callers_surface_and_shows_in_the_view(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    flow = PutFlow(path=(f"f-{unique}",), body={"json_blob": {"steps": [1]}}, create="must")
    answer = await send(client, tmp_path, flow, "c")
    record = await shown(runtime, "flows", answer, latest_key(answer.stream_id))
    assert record.data["json_blob"] == {"steps": [1]}
    assert (record.scope.user_id, record.scope.surface_id) == (USER, SURFACE)


async def test_a_flow_whose_body_breaks_its_model_is_refused_and_not_created(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    flow = PutFlow(path=(f"f-{unique}",), body={"json_blob": 1, "nope": 1}, create="must")
    answer = await send(client, tmp_path, flow, "c")
    refused(answer, "InvalidPayload", 422)  # as HTTP answers a body that breaks its model
    assert await entries_on(runtime, "flows/") == 0


# -- telemetry -------------------------------------------------------------------------


async def test_telemetry_is_still_not_taken_on_the_bus(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    # refused by its type, before its payload is read
    emit = EmitEvents.model_construct(family="analytics", run_id="r1", events=())
    answer = await send(client, tmp_path, emit, "e")
    refused(answer, "NotOnBus", 422)
