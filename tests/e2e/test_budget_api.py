"""Budgets over HTTP, end to end: the contract of ``/budgets`` and the spine beneath it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from spine.codec import verify_chain
from spine.errors import MissingRoutes
from tests.e2e.support import (
    SURFACE,
    TENANT,
    USER,
    AppClient,
    Mint,
    audit_events,
    client_for,
    close_refusal_intervals,
    lock_timeout,
    problem,
    spine_events,
)

BUDGET_FIELDS = {
    "budget_id",
    "tenant_id",
    "mode",
    "limit",
    "spent",
    "remaining",
    "limit_minor",
    "spent_minor",
    "remaining_minor",
    "scale",
    "currency",
    "version",
    "updated_at",
}


def budget_stream_id(budget_id: str, tenant_id: str = TENANT) -> str:
    return f"budget/{tenant_id}/lab/{budget_id}"


async def budget_events(runtime: Runtime) -> int:
    return await spine_events(runtime, "budget/")


@pytest.fixture
async def admin(runtime: Runtime, mint: Mint) -> AsyncIterator[AppClient]:
    """An HTTP client for an admin of the default tenant."""
    async with client_for(runtime, mint(user_id="boss", roles=["admin"])) as c:
        yield c


async def set_limit(admin: httpx.AsyncClient, budget_id: str = "b1", **body: Any) -> Any:
    response = await admin.put(f"/budgets/{budget_id}/limit", json=body or {"amount_minor": 100})
    assert response.status_code == 200, response.text
    return response.json()


async def ledger(client: httpx.AsyncClient, budget_id: str = "b1") -> list[dict[str, Any]]:
    """Every line of the budget's ledger, walking the pages."""
    lines: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        response = await client.get(f"/budgets/{budget_id}/ledger", params=params)
        assert response.status_code == 200, response.text
        lines += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return lines


# -- limit, debit, credit, read -----------------------------------------------------------


async def test_an_admin_sets_a_limit_and_the_budget_reads_limit_spent_remaining_and_version(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    response = await admin.put(
        "/budgets/b1/limit", json={"amount": "250.5", "currency": "EUR", "scale": 2}
    )

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"1"'
    budget = response.json()
    assert budget.keys() == BUDGET_FIELDS
    fetched = await client.get("/budgets/b1")
    assert fetched.status_code == 200
    assert fetched.json() == budget
    assert fetched.headers["ETag"] == '"1"'
    assert {k: budget[k] for k in BUDGET_FIELDS - {"updated_at"}} == {
        "budget_id": "b1",
        "tenant_id": TENANT,
        "mode": "lab",
        "limit": "250.50",
        "spent": "0.00",
        "remaining": "250.50",
        "limit_minor": 25050,
        "spent_minor": 0,
        "remaining_minor": 25050,
        "scale": 2,
        "currency": "EUR",
        "version": 1,
    }


async def test_setting_a_limit_needs_the_admin_role_and_the_refusal_is_audited(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.put("/budgets/b1/limit", json={"amount_minor": 100})

    assert "'admin' role" in problem(response, 403)["detail"]
    assert await budget_events(runtime) == 0
    await close_refusal_intervals(client)  # type: ignore[arg-type]
    reasons = [e.payload.get("reason_code") for e in await audit_events(runtime)]
    assert "RoleRequired" in reasons


async def test_a_debit_answers_201_with_the_totals_and_what_it_recorded(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await set_limit(admin, amount="10.00")

    response = await client.post("/budgets/b1/debits", json={"amount": "2.5", "reason": "gpu"})

    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/budgets/b1"
    assert response.headers["ETag"] == '"2"'
    body = response.json()
    assert (body["spent"], body["remaining"], body["version"]) == ("2.50", "7.50", 2)
    entry = body["entry"]
    assert (entry["seq"], entry["kind"], entry["amount"], entry["amount_minor"]) == (
        2,
        "debit",
        "2.50",
        250,
    )
    assert entry["reason"] == "gpu"
    after = await client.post("/budgets/b1/debits", json={"amount_minor": 1, "reason": "gpu"})
    assert after.json()["spent_minor"] == 251


async def test_a_debit_over_the_limit_answers_402_and_is_recorded_as_a_budget_event(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)
    await client.post("/budgets/b1/debits", json={"amount_minor": 60, "reason": "first"})

    response = await client.post("/budgets/b1/debits", json={"amount": "0.41", "reason": "more"})

    refusal = problem(response, 402)
    assert refusal["type"] == "urn:engines:problem:limit-exceeded"
    assert "0.41" in refusal["detail"]
    assert "0.60" in refusal["detail"]
    assert "1.00" in refusal["detail"]
    assert (refusal["limit"], refusal["spent"], refusal["requested"]) == ("1.00", "0.60", "0.41")
    assert (refusal["limit_minor"], refusal["spent_minor"], refusal["requested_minor"]) == (
        100,
        60,
        41,
    )
    events = await runtime.spine.read_stream(budget_stream_id("b1"))
    assert [e.event_type for e in events] == [
        "budget.limit_set",
        "budget.debited",
        "budget.debit_refused",
    ]
    assert {e.family for e in events} == {"budget"}
    assert events[2].payload == {
        "amount_minor": 41,
        "scale": 2,
        "reason": "more",
        "limit_minor": 100,
        "spent_minor": 60,
    }
    assert (await client.get("/budgets/b1")).json()["spent_minor"] == 60
    lines = await ledger(client)
    assert [(line["kind"], line["spent_minor"]) for line in lines] == [
        ("limit", 0),
        ("debit", 60),
        ("debit_refused", 60),
    ]
    spec = (await client.get("/openapi.json")).json()
    declared = spec["paths"]["/budgets/{budget_id}/debits"]["post"]["responses"]["402"]
    ref = declared["content"]["application/problem+json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert refusal.keys() <= schema["properties"].keys()  # every member documented


async def test_a_credit_gives_back_and_a_credit_of_more_than_is_spent_is_409_writing_nothing(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)
    await client.post("/budgets/b1/debits", json={"amount_minor": 70, "reason": "run"})

    credited = await client.post("/budgets/b1/credits", json={"amount_minor": 30, "reason": "r"})
    before = await spine_events(runtime)
    too_much = await client.post("/budgets/b1/credits", json={"amount": "0.41", "reason": "r"})

    assert credited.status_code == 201, credited.text
    assert (credited.json()["spent_minor"], credited.json()["entry"]["kind"]) == (40, "credit")
    assert "more than is spent" in problem(too_much, 409)["detail"]
    assert await spine_events(runtime) == before
    assert (await client.get("/budgets/b1")).json()["spent_minor"] == 40


@pytest.mark.parametrize("kind", ["debits", "credits"])
async def test_a_debit_or_credit_on_a_budget_without_a_limit_is_404_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, kind: str
) -> None:
    response = await client.post(f"/budgets/b1/{kind}", json={"amount_minor": 1, "reason": "r"})

    assert "not found" in problem(response, 404)["detail"]
    assert await spine_events(runtime) == 0
    problem(await client.get("/budgets/b1"), 404)
    problem(await client.get("/budgets/b1/ledger"), 404)


async def test_a_later_limit_keeps_scale_and_currency_and_cannot_change_them(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100, currency="USD", scale=3)

    raised = await admin.put("/budgets/b1/limit", json={"amount": "2.5"})
    before = await spine_events(runtime)
    rescaled = await admin.put("/budgets/b1/limit", json={"amount_minor": 5, "scale": 2})
    recurrenced = await admin.put("/budgets/b1/limit", json={"amount_minor": 5, "currency": "EUR"})

    assert raised.status_code == 200
    assert (raised.json()["limit"], raised.json()["currency"]) == ("2.500", "USD")
    assert "scale 3, fixed by its first limit" in problem(rescaled, 409)["detail"]
    assert "is in USD" in problem(recurrenced, 409)["detail"]
    assert await spine_events(runtime) == before


async def test_the_same_limit_again_records_nothing_and_keeps_the_version(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)

    again = await admin.put("/budgets/b1/limit", json={"amount": "1.00"})

    assert (again.status_code, again.json()["version"]) == (200, 1)
    assert await budget_events(runtime) == 1


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 1.5, "reason": "r"}, "amount"),
        ({"amount_minor": 150.0, "reason": "r"}, "amount_minor"),
        ({"amount_minor": True, "reason": "r"}, "amount_minor"),
        ({"amount": "-1.00", "reason": "r"}, "amount"),
        ({"amount_minor": -5, "reason": "r"}, "amount_minor"),
        ({"amount_minor": 0, "reason": "r"}, None),
        ({"amount": "0.00", "reason": "r"}, None),
        ({"amount": "1.005", "reason": "r"}, "amount"),
        ({"amount": "1e2", "reason": "r"}, "amount"),
        ({"amount_minor": "100", "reason": "r"}, "amount_minor"),
        ({"amount": "1.00", "amount_minor": 100, "reason": "r"}, None),
        ({"reason": "r"}, None),
        ({"amount_minor": 1}, "reason"),
        ({"amount_minor": 10**18 + 1, "reason": "r"}, "amount_minor"),
        ({"amount_minor": 1, "reason": "r", "extra": 1}, "extra"),
    ],
    ids=[
        "float",
        "float-minor",
        "bool",
        "negative",
        "negative-minor",
        "zero-minor",
        "zero",
        "too-many-decimals",
        "exponent",
        "minor-as-string",
        "both",
        "neither",
        "no-reason",
        "too-large",
        "unknown-field",
    ],
)
async def test_a_bad_amount_is_422_naming_it_and_writes_nothing(
    admin: httpx.AsyncClient,
    client: httpx.AsyncClient,
    runtime: Runtime,
    body: dict[str, Any],
    field: str | None,
) -> None:
    await set_limit(admin, amount_minor=10_000)
    before = await spine_events(runtime)

    response = await client.post("/budgets/b1/debits", json=body)

    errors = problem(response, 422)["errors"]
    if field is not None:
        assert any(field in err["loc"] for err in errors), errors
    assert await spine_events(runtime) == before


@pytest.mark.parametrize(
    "body",
    [
        {"amount_minor": 1.0},
        {"amount": "1.5", "scale": 7},
        {"amount_minor": 1, "currency": "eu"},
        {"amount_minor": -1},
        {"amount": "0.001"},
    ],
)
async def test_a_bad_limit_is_422_and_writes_nothing(
    admin: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any]
) -> None:
    response = await admin.put("/budgets/b1/limit", json=body)

    problem(response, 422)
    assert await spine_events(runtime) == 0


async def test_a_budget_id_that_is_not_an_identifier_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/budgets/a%2Fb/ledger")

    assert ("path", "budget_id") in [tuple(e["loc"]) for e in problem(response, 422)["errors"]]


# -- idempotency ----------------------------------------------------------------------------


async def test_a_retried_debit_with_the_same_key_answers_the_same_and_appends_nothing(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)
    headers = {"Idempotency-Key": "run-7-step-2"}
    first = await client.post(
        "/budgets/b1/debits", json={"amount_minor": 30, "reason": "r"}, headers=headers
    )
    before = await spine_events(runtime)

    again = await client.post(
        "/budgets/b1/debits", json={"amount": "0.30", "reason": "r"}, headers=headers
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["entry"] == first.json()["entry"]
    assert again.json()["spent_minor"] == 30
    assert await spine_events(runtime) == before


async def test_a_retried_refused_debit_answers_402_again_and_appends_nothing(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)
    headers = {"Idempotency-Key": "big-one"}
    body = {"amount_minor": 101, "reason": "r"}
    first = await client.post("/budgets/b1/debits", json=body, headers=headers)
    before = await spine_events(runtime)

    again = await client.post("/budgets/b1/debits", json=body, headers=headers)

    assert problem(first, 402)["seq"] == problem(again, 402)["seq"] == 2
    assert await spine_events(runtime) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("debits", {"amount_minor": 31, "reason": "r"}),
        ("debits", {"amount_minor": 30, "reason": "other"}),
        ("credits", {"amount_minor": 30, "reason": "r"}),
    ],
    ids=["amount", "reason", "kind"],
)
async def test_a_key_reused_for_a_different_request_is_409_and_appends_nothing(
    admin: httpx.AsyncClient,
    client: httpx.AsyncClient,
    runtime: Runtime,
    path: str,
    body: dict[str, Any],
) -> None:
    await set_limit(admin, amount_minor=100)
    headers = {"Idempotency-Key": "once"}
    await client.post(
        "/budgets/b1/debits", json={"amount_minor": 30, "reason": "r"}, headers=headers
    )
    before = await spine_events(runtime)

    reused = await client.post(f"/budgets/b1/{path}", json=body, headers=headers)

    assert "Idempotency-Key" in problem(reused, 409)["detail"]
    assert await spine_events(runtime) == before


async def test_an_idempotency_key_is_per_user(
    admin: httpx.AsyncClient, runtime: Runtime, mint: Mint
) -> None:
    await set_limit(admin, amount_minor=100)
    headers = {"Idempotency-Key": "shared"}
    for user in ("u1", "u2"):
        async with client_for(runtime, mint(user_id=user)) as c:
            r = await c.post(
                "/budgets/b1/debits", json={"amount_minor": 10, "reason": "r"}, headers=headers
            )
            assert r.status_code == 201

    assert (await admin.get("/budgets/b1")).json()["spent_minor"] == 20


# -- identity, provenance, isolation --------------------------------------------------------


async def test_every_event_and_ledger_line_records_the_writer_and_provenance(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)
    headers = {"X-Agent-Id": "planner", "X-Run-Id": "run-1", "X-Step-Id": "step-4"}
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    await client.post(
        "/budgets/b1/debits",
        json={"amount_minor": 5, "reason": "r", "provenance": {"trace_id": trace}},
        headers=headers,
    )

    limit_set, debited = await runtime.spine.read_stream(budget_stream_id("b1"))
    assert (limit_set.user_id, limit_set.surface_id) == ("boss", SURFACE)
    assert (debited.tenant_id, debited.mode, debited.user_id, debited.surface_id) == (
        TENANT,
        "lab",
        USER,
        SURFACE,
    )
    assert (debited.agent_id, debited.run_id, debited.step_id, debited.trace_id) == (
        "planner",
        "run-1",
        "step-4",
        trace,
    )
    line = (await ledger(client))[1]
    assert (line["user_id"], line["surface_id"], line["agent_id"], line["run_id"]) == (
        USER,
        SURFACE,
        "planner",
        "run-1",
    )
    assert (line["step_id"], line["trace_id"]) == ("step-4", trace)


async def test_a_token_granting_several_surfaces_writes_the_named_one_or_none(
    admin: httpx.AsyncClient, runtime: Runtime, mint: Mint
) -> None:
    await set_limit(admin, amount_minor=100)
    async with client_for(runtime, mint(surfaces=["chat", "canvas"], projects=[])) as c:
        await c.post("/budgets/b1/debits", json={"amount_minor": 1, "reason": "r"})
        await c.post(
            "/budgets/b1/debits",
            json={"amount_minor": 1, "reason": "r"},
            headers={"X-Surface-Id": "canvas"},
        )
        refused = await c.post(
            "/budgets/b1/debits",
            json={"amount_minor": 1, "reason": "r"},
            headers={"X-Surface-Id": "builder"},
        )

    events = await runtime.spine.read_stream(budget_stream_id("b1"))
    assert [e.surface_id for e in events[1:]] == [None, "canvas"]
    problem(refused, 403)


async def test_another_tenant_sees_nothing_of_a_budget_and_keeps_its_own(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime, mint: Mint
) -> None:
    await set_limit(admin, amount_minor=100)
    await client.post("/budgets/b1/debits", json={"amount_minor": 40, "reason": "mine"})
    other_admin = mint(tenant_id="t2", user_id="boss", roles=["admin"])

    async with client_for(runtime, other_admin) as other:
        read = await other.get("/budgets/b1")
        lines = await other.get("/budgets/b1/ledger")
        spend = await other.post("/budgets/b1/debits", json={"amount_minor": 1, "reason": "r"})
        own = await set_limit(other, amount_minor=5)
        own_lines = await ledger(other)

    problem(read, 404)
    problem(lines, 404)
    problem(spend, 404)
    assert (own["limit_minor"], own["spent_minor"], own["tenant_id"]) == (5, 0, "t2")
    assert [line["kind"] for line in own_lines] == ["limit"]
    assert (await client.get("/budgets/b1")).json()["spent_minor"] == 40
    assert [line["kind"] for line in await ledger(client)] == ["limit", "debit"]


# -- concurrency ----------------------------------------------------------------------------


async def test_fifty_concurrent_debits_never_overspend(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)

    responses = await asyncio.gather(
        *(
            client.post("/budgets/b1/debits", json={"amount_minor": 3, "reason": f"d{i}"})
            for i in range(50)
        )
    )

    statuses = [r.status_code for r in responses]
    assert (statuses.count(201), statuses.count(402)) == (33, 17), [r.text for r in responses]
    budget = (await client.get("/budgets/b1")).json()
    assert (budget["spent_minor"], budget["remaining_minor"], budget["version"]) == (99, 1, 51)
    events = await runtime.spine.read_stream(budget_stream_id("b1"))
    assert verify_chain(events) == 51
    debited = [e for e in events if e.event_type == "budget.debited"]
    refused = [e for e in events if e.event_type == "budget.debit_refused"]
    assert (len(debited), len(refused)) == (33, 17)
    assert sum(e.payload["amount_minor"] for e in debited) == 99
    # every refusal was decided on the stream as it stood: no room for 3 more
    assert all(e.payload["spent_minor"] + 3 > 100 for e in refused)
    lines = await ledger(client)
    assert [line["seq"] for line in lines] == list(range(1, 52))
    assert [line["kind"] for line in lines[1:]] == [
        "debit" if e.event_type == "budget.debited" else "debit_refused" for e in events[1:]
    ]
    assert lines[-1]["spent_minor"] == 99


async def test_concurrent_limit_puts_with_the_same_if_match_let_exactly_one_win(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)

    responses = await asyncio.gather(
        *(
            admin.put(
                "/budgets/b1/limit", json={"amount_minor": 200 + i}, headers={"If-Match": '"1"'}
            )
            for i in range(2)
        )
    )

    assert sorted(r.status_code for r in responses) == [200, 412]
    events = await runtime.spine.read_stream(budget_stream_id("b1"))
    assert [e.seq for e in events] == [1, 2]
    (winner,) = [r for r in responses if r.status_code == 200]
    assert winner.json()["limit_minor"] == events[1].payload["limit_minor"]


async def test_if_none_match_star_only_creates_a_budget(admin: httpx.AsyncClient) -> None:
    headers = {"If-None-Match": "*"}
    created = await admin.put("/budgets/b1/limit", json={"amount_minor": 1}, headers=headers)
    again = await admin.put("/budgets/b1/limit", json={"amount_minor": 2}, headers=headers)

    assert created.status_code == 200
    problem(again, 412)


# -- the store down ----------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ["*", '"0"', '"1"'])
async def test_if_match_never_creates_a_budget(
    admin: httpx.AsyncClient, runtime: Runtime, if_match: str
) -> None:
    response = await admin.put(
        "/budgets/new/limit", json={"amount_minor": 100}, headers={"If-Match": if_match}
    )

    problem(response, 412)  # If-Match names a version of a budget that does not exist
    assert await budget_events(runtime) == 0
    problem(await admin.get("/budgets/new"), 404)


async def test_a_debit_or_credit_honours_its_preconditions(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await set_limit(admin, amount_minor=100)
    body = {"amount_minor": 5, "reason": "pinned"}
    before = await budget_events(runtime)

    stale = await client.post("/budgets/b1/debits", json=body, headers={"If-Match": '"7"'})
    never = await client.post("/budgets/b1/debits", json=body, headers={"If-None-Match": "*"})
    assert await budget_events(runtime) == before
    pinned = await client.post("/budgets/b1/debits", json=body, headers={"If-Match": '"1"'})

    assert problem(stale, 412)["current_version"] == 1
    problem(never, 412)
    assert (pinned.status_code, pinned.json()["version"]) == (201, 2)
    # a stale version is what to say, before what the current state would refuse
    too_much = {"amount_minor": 999, "reason": "more than is spent"}
    stale_credit = await client.post(
        "/budgets/b1/credits", json=too_much, headers={"If-Match": '"1"'}
    )
    assert problem(stale_credit, 412)["current_version"] == 2
    problem(await client.post("/budgets/b1/credits", json=too_much), 409)


async def test_a_locked_database_refuses_a_debit_with_503_and_writes_nothing(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with (
        bootstrap(lock_timeout(settings, 200), tmp_path) as runtime,
        client_for(runtime, mint(roles=["admin"])) as client,
    ):
        await set_limit(client, amount_minor=100)
        before = await spine_events(runtime)
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            down = await client.post("/budgets/b1/debits", json={"amount_minor": 5, "reason": "r"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        written = await spine_events(runtime)
        up = await client.post("/budgets/b1/debits", json={"amount_minor": 5, "reason": "r"})

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert written == before
    assert (up.status_code, up.json()["spent_minor"]) == (201, 5)


async def test_a_budget_store_that_cannot_answer_is_503_never_a_default(
    admin: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    await set_limit(admin, amount_minor=100)
    other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
    try:
        other.execute('ALTER TABLE "budgets" RENAME TO "budgets_away"')  # the store is gone
        read = await admin.get("/budgets/b1")
        lines = await admin.get("/budgets/b1/ledger")
        other.execute('ALTER TABLE "budgets_away" RENAME TO "budgets"')
    finally:
        other.close()
    back = await admin.get("/budgets/b1")

    assert "route 'budgets'" in problem(read, 503)["detail"]
    problem(lines, 503)
    assert (back.status_code, back.json()["limit_minor"]) == (200, 100)


def test_a_routes_file_without_budget_store_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packaged = yaml.safe_load(
        (Path(__file__).parents[2] / "engines" / "lab.yaml").read_text(encoding="utf-8")
    )
    del packaged["routes"]["budget_store"]
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(packaged), encoding="utf-8")
    unrouted, _ = load_settings(routes)

    async def start() -> None:
        async with bootstrap(unrouted, tmp_path / "data"):
            pytest.fail("the service started without a budget_store route")

    with pytest.raises(MissingRoutes, match="budget_store"):
        asyncio.run(start())
    assert main(["serve", "--routes", str(routes), "--data-dir", str(tmp_path / "data")]) == 2
    assert "budget_store" in capsys.readouterr().err


# -- the operator's commands ------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, tmp_path: Path, mint: Mint) -> Path:
    """A data directory as `engines serve` leaves it: two tenants' budgets and spending."""

    async def setup() -> None:
        async with bootstrap(settings, tmp_path) as rt:
            for tenant, budgets in (("t1", ("gpu", "api")), ("t2", ("secret",))):
                async with client_for(rt, mint(tenant_id=tenant, roles=["admin"])) as c:
                    for budget in budgets:
                        await set_limit(c, budget, amount="12.50", currency="EUR")
                        await c.post(
                            f"/budgets/{budget}/debits", json={"amount": "2", "reason": "a"}
                        )
                        await c.post(
                            f"/budgets/{budget}/debits", json={"amount": "20", "reason": "big"}
                        )

    asyncio.run(setup())
    return tmp_path


def test_budgets_list_shows_one_tenants_budgets_as_a_table(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["budgets", "list", "--tenant", "t1", "--data-dir", str(served)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()

    assert header.split() == ["budget_id", "limit", "spent", "remaining", "cur", "version"]
    assert [row.split() for row in rows] == [
        ["api", "12.50", "2.00", "10.50", "EUR", "3"],
        ["gpu", "12.50", "2.00", "10.50", "EUR", "3"],
    ]


def test_budgets_show_and_ledger_print_one_budget(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["budgets", "show", "gpu", "--tenant", "t1", "--data-dir", str(served)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["gpu", "12.50", "2.00"]

    assert main(["budgets", "ledger", "gpu", "--tenant", "t1", "--data-dir", str(served)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["seq", "kind", "amount", "spent_after"]
    assert [row.split()[:4] for row in rows] == [
        ["1", "limit", "12.50", "0.00"],
        ["2", "debit", "2.00", "2.00"],
        ["3", "debit_refused", "20.00", "2.00"],
    ]


def test_budgets_show_of_another_tenants_budget_is_not_found(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["budgets", "ledger", "secret", "--tenant", "t1", "--data-dir", str(served)])

    assert code == 3
    assert "not found" in capsys.readouterr().err
