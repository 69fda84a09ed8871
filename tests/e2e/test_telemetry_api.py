"""Telemetry over HTTP, end to end: emit onto the spine, query through the routed views
(``/events``, ``/audit``, ``/analytics/counts``) and ``engines audit query``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from spine.codec import verify_chain
from spine.errors import MissingRoutes
from tests.e2e.support import (
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


async def telemetry_events(runtime: Runtime) -> int:
    """How many events the spine holds in the emitted families, counted by a scan."""
    families = ("analytics", "safety", "rl", "rlha", "tuning")
    return sum([await spine_events(runtime, f"{family}/") for family in families])


def deep(levels: int) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for _ in range(levels - 1):
        nested = {"a": nested}
    return nested


def event(
    event_type: str = "rl.reward", run_id: str = "r1", step_id: str = "s1", **fields: Any
) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "run_id": run_id,
        "step_id": step_id,
        "payload": fields.pop("payload", {"reward": 1}),
        **fields,
    }


DECISION = {
    "run_id": "r1",
    "step_id": "gate-1",
    "decision": "denied",
    "justification": "the tool call would send PII off the tenant",
    "action": "http.post",
    "gates": [
        {"gate": "auth", "passed": True},
        {"gate": "pii", "passed": False, "reason": "an e-mail address in the body"},
    ],
    "failure": {"code": "pii-egress", "message": "PII in an outbound call", "gate": "pii"},
}


@pytest.fixture
async def agent(runtime: Runtime, mint: Mint) -> AsyncIterator[AppClient]:
    """An agent of tenant t1 (user u1) with the ``safety`` role."""
    async with client_for(runtime, mint(kind="agent", roles=["safety"])) as c:
        yield c


@pytest.fixture
async def auditor(runtime: Runtime, mint: Mint) -> AsyncIterator[AppClient]:
    """An auditor of tenant t1 (user a1)."""
    async with client_for(runtime, mint(user_id="a1", roles=["auditor"])) as c:
        yield c


async def emit(client: httpx.AsyncClient, body: Any, **kwargs: Any) -> dict[str, Any]:
    response = await client.post("/events", json=body, **kwargs)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


# -- emitting ---------------------------------------------------------------------------


async def test_one_event_is_appended_to_its_runs_stream_with_identity_from_the_token(
    agent: AppClient, runtime: Runtime
) -> None:
    at = "2026-01-01T10:00:00+01:00"
    answer = await emit(
        agent,
        event(payload={"reward": 0.25, "obs": [1, [2.5, None]]}, occurred_at=at),
        headers={"X-Agent-Id": "planner", "X-Thread-Id": "th1"},
    )

    (written,) = answer["events"]
    assert (answer["status"], answer["deduplicated"]) == ("recorded", False)
    assert (written["stream_id"], written["seq"]) == (f"rl/{TENANT}/lab/r1", 1)
    (stored,) = await runtime.spine.read_stream(written["stream_id"])
    assert stored.event_id == written["event_id"]
    assert (stored.tenant_id, stored.mode, stored.user_id) == (TENANT, "lab", USER)
    assert (stored.surface_id, stored.project_id, stored.source) == ("s1", "p1", "agent")
    assert (stored.family, stored.event_type) == ("rl", "rl.reward")
    assert (stored.run_id, stored.step_id, stored.agent_id, stored.thread_id) == (
        "r1",
        "s1",
        "planner",
        "th1",
    )
    assert stored.payload == {"reward": 0.25, "obs": [1, [2.5, None]]}  # kept as given
    assert stored.occurred_at == "2026-01-01T09:00:00.000000Z"  # the client's clock, in UTC
    assert verify_chain([stored]) == 1


async def test_a_batch_is_one_append_per_run_and_family_answered_in_the_order_given(
    agent: AppClient, runtime: Runtime
) -> None:
    body = {
        "events": [
            event("rl.reward", "r1", "a"),
            event("analytics.tool_used", "r1", "b"),
            event("rl.reward", "r2", "c"),
            event("rl.action", "r1", "d", parent_event_id="e0"),
        ]
    }
    answer = await emit(agent, body)

    assert [(e["family"], e["run_id"], e["step_id"], e["seq"]) for e in answer["events"]] == [
        ("rl", "r1", "a", 1),
        ("analytics", "r1", "b", 1),
        ("rl", "r2", "c", 1),
        ("rl", "r1", "d", 2),
    ]
    r1 = await runtime.spine.read_stream(f"rl/{TENANT}/lab/r1")
    assert [(e.step_id, e.parent_event_id) for e in r1] == [("a", None), ("d", "e0")]
    assert len({e.command_id for e in r1}) == 1  # one append: all or nothing


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"event_type": "audit.access_denied"}, "written by the server"),
        ({"event_type": "budget.debited"}, "budget endpoints"),
        ({"event_type": "strategy_lock.snapshotted"}, "strategy-lock endpoints"),
        ({"event_type": "note.created"}, "must begin with its family"),
        ({"event_type": "rl.reward", "family": "tuning"}, "disagrees"),
        ({"event_type": "rl.reward", "family": "audit"}, "disagrees"),
        ({"run_id": "r1/../r2"}, "run_id"),
        ({"step_id": None}, "step_id"),
        ({"payload": [1, 2]}, "payload"),
        ({"payload": {"big": "x" * 70_000}}, "the limit is 65536"),
        ({"occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),
        ({"tenant_id": "t2"}, "tenant_id"),
        ({"recorded_at": "2020-01-01T00:00:00Z"}, "recorded_at"),
        ({"payload": deep(80)}, "nests deeper than 64 levels"),
        ({"occurred_at": "0001-01-01T00:00:00+14:00"}, "between the years 1 and 9999"),
        ({"occurred_at": "9999-12-31T23:59:59-14:00"}, "between the years 1 and 9999"),
        ({"occurred_at": 1700000000}, "RFC 3339"),
        ({"occurred_at": "1700000000"}, "RFC 3339"),
        ({"occurred_at": "2026-01-01T10:00:00.1234567Z"}, "six decimals"),
        ({"occurred_at": "2026-01-01T10:00:00+00:60"}, "RFC 3339"),
        ({"occurred_at": "2026-01-01T10:00:00+24:00"}, "RFC 3339"),
        ({"occurred_at": "2026-12-31T23:59:60Z"}, "leap second"),
        ({"occurred_at": "2026-13-01T10:00:00Z"}, "not a time of the calendar"),
        ({"occurred_at": "２０２６-01-01T10:00:00Z"}, "RFC 3339"),
        ({"event_type": "safety.decision"}, "POST /safety/decisions"),
        ({"family": "Z" * 5000}, "at most 32"),
    ],
)
async def test_a_batch_with_one_invalid_event_writes_nothing(
    runtime: Runtime, mint: Mint, bad: dict[str, Any], says: str
) -> None:
    before = await spine_events(runtime)
    async with client_for(runtime, mint(kind="agent", roles=["safety"])) as agent:
        # the bad event in a stream of its own: the good one's append must not happen
        invalid = {**event(run_id="r2", step_id="bad"), **bad}
        response = await agent.post("/events", json={"events": [event(step_id="ok"), invalid]})

    assert says in problem(response, 422)["detail"]
    assert await spine_events(runtime) == before


async def test_a_batch_over_the_limit_is_refused_whole(agent: AppClient, runtime: Runtime) -> None:
    before = await spine_events(runtime)
    response = await agent.post("/events", json={"events": [event()] * 101})

    problem(response, 422)
    assert await spine_events(runtime) == before


async def test_audit_events_cannot_be_forged_by_a_client(
    agent: AppClient, auditor: AppClient, runtime: Runtime
) -> None:
    forged = {
        "event_type": "audit.access_denied",
        "run_id": "r1",
        "step_id": "s",
        "payload": {"status": 403, "caller": "someone-else"},
    }
    single = await agent.post("/events", json=forged)
    as_safety = await agent.post("/events", json={**forged, "event_type": "safety.x"})

    problem(single, 422)
    assert as_safety.status_code == 201  # another family: never an audit event
    assert await audit_events(runtime) == []
    assert await items(auditor, "/audit", family="audit") == []


async def test_a_source_other_than_the_tokens_is_refused_and_audited(
    agent: AppClient, runtime: Runtime
) -> None:
    response = await agent.post("/events", json=event(source="ui"))
    await close_refusal_intervals(agent)

    assert "does not match the token" in problem(response, 403)["detail"]
    assert await telemetry_events(runtime) == 0
    (refusal,) = await audit_events(runtime)
    assert refusal.payload["reason_code"] == "ScopeMismatch"
    same = await agent.post("/events", json=event(source="agent"))
    assert same.status_code == 201


async def test_safety_events_need_the_safety_role(
    client: AppClient, runtime: Runtime, mint: Mint
) -> None:
    by_event = await client.post("/events", json=event("safety.gate_failed"))
    by_decision = await client.post("/safety/decisions", json=DECISION)
    mixed = await client.post(
        "/events", json={"events": [event("rl.reward"), event("safety.gate_failed")]}
    )

    for refused in (by_event, by_decision, mixed):
        assert "'safety' role" in problem(refused, 403)["detail"]
    assert await telemetry_events(runtime) == 0


async def test_a_retry_with_the_same_idempotency_key_writes_nothing_again(
    agent: AppClient, runtime: Runtime
) -> None:
    body = {"events": [event("rl.reward", "r1", "a"), event("tuning.trial", "r1", "b")]}
    key = {"Idempotency-Key": "batch-1"}
    first = await emit(agent, body, headers=key)
    again = await emit(agent, body, headers=key)
    other = await agent.post(
        "/events", json={"events": [event("rl.reward", "r1", "z")]}, headers=key
    )

    assert again["deduplicated"] is True
    assert [e["event_id"] for e in again["events"]] == [e["event_id"] for e in first["events"]]
    assert await telemetry_events(runtime) == 2
    assert "different request" in problem(other, 409)["detail"]
    assert await telemetry_events(runtime) == 2


async def test_concurrent_emitters_of_one_run_each_get_their_own_seq(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(kind="agent")) as c:
        answers = await asyncio.gather(*(emit(c, event(step_id=f"s{i}")) for i in range(30)))

    seqs = sorted(a["events"][0]["seq"] for a in answers)
    assert seqs == list(range(1, 31))
    stream = await runtime.spine.read_stream(f"rl/{TENANT}/lab/r1")
    assert verify_chain(stream) == 30


async def test_a_locked_store_answers_503_and_writes_nothing(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with (
        bootstrap(lock_timeout(settings, 200), tmp_path) as runtime,
        client_for(runtime, mint(kind="agent", roles=["safety"])) as client,
    ):
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            down = await client.post("/events", json={"events": [event(), event("rl.other")]})
            decision = await client.post("/safety/decisions", json=DECISION)
        finally:
            other.execute("ROLLBACK")
            other.close()
        written = await telemetry_events(runtime)
        up = await client.post("/events", json=event())

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    problem(decision, 503)
    assert written == 0
    assert up.status_code == 201


@pytest.mark.parametrize("kind", ["analytics_store", "telemetry_store", "audit_store"])
def test_a_routes_file_without_a_telemetry_store_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    packaged = yaml.safe_load(
        (Path(__file__).parents[2] / "engines" / "lab.yaml").read_text(encoding="utf-8")
    )
    del packaged["routes"][kind]
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(packaged), encoding="utf-8")
    unrouted, _ = load_settings(routes)

    async def start() -> None:
        async with bootstrap(unrouted, tmp_path / "data"):
            pytest.fail(f"the service started without a {kind} route")

    with pytest.raises(MissingRoutes, match=kind):
        asyncio.run(start())
    assert main(["serve", "--routes", str(routes), "--data-dir", str(tmp_path / "data")]) == 2
    assert kind in capsys.readouterr().err


# -- safety decisions -------------------------------------------------------------------


async def test_a_denied_decision_is_recorded_and_queryable_right_after_the_201(
    agent: AppClient, auditor: AppClient
) -> None:
    response = await agent.post("/safety/decisions", json=DECISION)
    assert response.status_code == 201, response.text
    (written,) = response.json()["events"]

    (in_audit,) = await items(auditor, "/audit", run_id="r1")
    (own,) = await items(agent, "/events", family="safety")
    assert in_audit["event_id"] == own["event_id"] == written["event_id"]
    assert in_audit["event_type"] == "safety.decision"
    assert in_audit["payload"] == {
        k: v for k, v in DECISION.items() if k not in ("run_id", "step_id")
    }
    assert (in_audit["run_id"], in_audit["step_id"]) == ("r1", "gate-1")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"failure": None}, "needs `failure`"),
        ({"decision": "maybe"}, "decision"),
        ({"justification": "  "}, "visible"),
        ({"justification": "ok\u202eevil"}, "one line"),
    ],
)
async def test_a_malformed_decision_is_refused_and_writes_nothing(
    agent: AppClient, runtime: Runtime, change: dict[str, Any], says: str
) -> None:
    body = {k: v for k, v in {**DECISION, **change}.items() if v is not None}
    response = await agent.post("/safety/decisions", json=body)

    assert says in problem(response, 422)["detail"]
    assert await telemetry_events(runtime) == 0


async def test_an_allowed_decision_needs_no_failure(agent: AppClient, auditor: AppClient) -> None:
    allowed = {k: v for k, v in DECISION.items() if k != "failure"} | {"decision": "allowed"}
    response = await agent.post("/safety/decisions", json=allowed)

    assert response.status_code == 201, response.text
    (found,) = await items(auditor, "/audit", event_type="safety.decision")
    assert found["payload"]["decision"] == "allowed"


# -- querying ---------------------------------------------------------------------------


@pytest.fixture
async def two_tenants(runtime: Runtime, mint: Mint) -> None:
    """t1: u1 and u2 emit into run r1 (rl, analytics); t2: u1 emits into run r1."""
    for tenant, user in (("t1", "u1"), ("t1", "u2"), ("t2", "u1")):
        async with client_for(runtime, mint(tenant_id=tenant, user_id=user, kind="agent")) as c:
            await emit(
                c,
                {
                    "events": [
                        event("rl.reward", step_id=f"{tenant}-{user}-1"),
                        event("analytics.tool_used", step_id=f"{tenant}-{user}-2"),
                    ]
                },
            )


def steps(found: list[dict[str, Any]]) -> list[str]:
    return [e["step_id"] for e in found]


async def test_a_caller_sees_only_their_own_events(
    two_tenants: None, runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(user_id="u2")) as u2:
        mine = await items(u2, "/events", run_id="r1")
        claimed = await u2.get("/events", params={"user_id": "u1"})
        by_header = await u2.get("/events", headers={"X-User-Id": "u1"})

    # one request's events share their recorded time: within it, by stream, then seq
    assert sorted(steps(mine)) == ["t1-u2-1", "t1-u2-2"]
    assert "'auditor' role" in problem(claimed, 403)["detail"]
    problem(by_header, 403)


async def test_an_auditor_sees_the_tenant_and_no_other(
    two_tenants: None, runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(user_id="a1", roles=["auditor"])) as a1:
        tenant = await items(a1, "/events", run_id="r1")
        one_user = await items(a1, "/events", user_id="u2")
        rl_only = await items(a1, "/events", family="rl")
        other_tenant = await a1.get("/events", params={"tenant_id": "t2"})

    assert sorted(steps(tenant)) == ["t1-u1-1", "t1-u1-2", "t1-u2-1", "t1-u2-2"]
    assert sorted(steps(one_user)) == ["t1-u2-1", "t1-u2-2"]
    assert sorted(steps(rl_only)) == ["t1-u1-1", "t1-u2-1"]
    problem(other_tenant, 403)


async def test_events_outside_the_callers_grants_are_not_shown(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(surfaces=["s1", "s2"], projects=[])) as both:
        await emit(both, event(step_id="on-s1"), headers={"X-Surface-Id": "s1"})
        await emit(both, event(step_id="on-s2"), headers={"X-Surface-Id": "s2"})
    async with client_for(runtime, mint(surfaces=["s2"], projects=[])) as narrowed:
        seen = await items(narrowed, "/events")

    assert steps(seen) == ["on-s2"]


async def test_events_are_paged_in_time_order_and_filtered_by_time(
    agent: AppClient,
) -> None:
    for i in range(5):
        await emit(agent, event(step_id=f"s{i}"))
    everything = await items(agent, "/events")
    middle = everything[2]["recorded_at"]

    first = await agent.get("/events", params={"limit": 2})
    rest = await agent.get("/events", params={"limit": 2, "cursor": first.json()["next_cursor"]})
    newest = await items(agent, "/events", order="desc", limit=1)
    since = await items(agent, "/events", since=middle)
    until = await items(agent, "/events", until=middle)

    assert steps(everything) == ["s0", "s1", "s2", "s3", "s4"]
    assert steps(first.json()["items"]) == ["s0", "s1"]
    assert steps(rest.json()["items"]) == ["s2", "s3"]
    assert steps(newest) == ["s4"]
    assert steps(since) == ["s2", "s3", "s4"]
    assert steps(until) == ["s0", "s1"]
    naive = await agent.get("/events", params={"since": "2026-01-01T00:00:00"})
    problem(naive, 422)
    problem(await agent.get("/events", params={"cursor": "not-a-cursor"}), 422)


async def test_rl_events_are_indexed_by_run_and_step(agent: AppClient) -> None:
    await emit(
        agent,
        {
            "events": [
                event("rl.reward", "r1", "1", payload={"reward": 1.0}),
                event("rlha.feedback", "r1", "1", payload={"rating": "good", "by": "h1"}),
                event("rl.reward", "r2", "1", payload={"reward": -1}),
                event("rl.reward", "r1", "2", payload={"reward": 0.5}),
            ]
        },
    )
    rl = await items(agent, "/events", family="rl", run_id="r1")
    feedback = await items(agent, "/events", family="rlha", run_id="r1")

    assert [(e["step_id"], e["payload"]) for e in rl] == [
        ("1", {"reward": 1.0}),
        ("2", {"reward": 0.5}),
    ]
    assert [e["payload"] for e in feedback] == [{"rating": "good", "by": "h1"}]


async def test_a_non_auditor_gets_403_on_audit_and_is_audited(
    client: AppClient, runtime: Runtime
) -> None:
    response = await client.get("/audit")
    await close_refusal_intervals(client)

    assert "'auditor' role" in problem(response, 403)["detail"]
    (refusal,) = await audit_events(runtime)
    assert refusal.payload["reason_code"] == "RoleRequired"


async def test_the_audit_view_holds_refusals_budget_and_strategy_lock_events(
    runtime: Runtime, mint: Mint, auditor: AppClient
) -> None:
    async with client_for(runtime, mint(roles=["admin"])) as admin:
        await admin.put("/budgets/b1/limit", json={"amount": "10", "currency": "EUR"})
        lock = await admin.post(
            "/strategy-locks/st1/snapshots",
            json={"toggles": {"explore": False}, "flags": {"model": "m1"}, "note": "freeze"},
            headers={"X-Project-Id": "p1"},
        )
        assert lock.status_code == 201, lock.text
    async with client_for(runtime, mint()) as plain:
        await plain.get("/audit")  # refused: recorded
        await close_refusal_intervals(plain)
    async with client_for(runtime, mint(tenant_id="t2", roles=["admin"])) as other:
        await other.put("/budgets/b9/limit", json={"amount": "1", "currency": "EUR"})

    await runtime.catch_up()
    trail = await items(auditor, "/audit")
    in_events = await items(auditor, "/events", family="budget")

    assert [e["family"] for e in trail] == ["budget", "strategy_lock", "audit"]
    assert trail[2]["payload"]["reason_code"] == "RoleRequired"
    assert [e["event_type"] for e in in_events] == ["budget.limit_set"]


async def test_analytics_counts_per_day_for_the_caller_and_the_tenant(
    two_tenants: None, runtime: Runtime, mint: Mint, agent: AppClient
) -> None:
    await emit(agent, {"events": [event("analytics.tool_used", step_id=str(i)) for i in range(3)]})
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    async with client_for(runtime, mint(user_id="a1", roles=["auditor"])) as a1:
        tenant = await a1.get("/analytics/counts", params={"name": "analytics.tool_used"})
        u2 = await a1.get(
            "/analytics/counts", params={"name": "analytics.tool_used", "user_id": "u2"}
        )
    own = await agent.get("/analytics/counts", params={"name": "analytics.tool_used"})
    none_yet = await agent.get(
        "/analytics/counts",
        params={"name": "analytics.tool_used", "since": tomorrow.isoformat()},
    )
    other = await agent.get("/analytics/counts", params={"name": "analytics.page_viewed"})

    day = today.isoformat()
    assert tenant.json()["items"] == [{"day": day, "count": 5}]  # t1: u1 4, u2 1; not t2
    assert (tenant.json()["counted_for"], tenant.json()["total"]) == ("*", 5)
    assert u2.json()["items"] == [{"day": day, "count": 1}]
    assert own.json()["items"] == [{"day": day, "count": 4}]
    assert none_yet.json()["items"] == []
    assert other.json()["items"] == []


async def test_analytics_events_are_kept_in_the_analytics_store(
    agent: AppClient, runtime: Runtime
) -> None:
    answer = await emit(agent, event("analytics.page_viewed", payload={"path": "/x"}))

    (written,) = answer["events"]
    view = runtime.view_of("analytics")
    key = f"{written['stream_id']}#{written['seq']:012d}"
    record = await view.get(key)
    assert record is not None
    assert record.data["payload"] == {"path": "/x"}
    assert record.data["event_id"] == written["event_id"]


async def test_telemetry_is_not_written_to_the_operational_log(
    agent: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "reward-payload-marker-7f3a"
    with caplog.at_level("DEBUG"):
        await emit(agent, event(payload={"note": secret}))
        await items(agent, "/events")

    assert secret not in caplog.text


# -- the operator's command -------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, tmp_path: Path, mint: Mint) -> Path:
    """A data directory as `engines serve` leaves it: safety decisions of two tenants."""

    async def setup() -> None:
        async with bootstrap(settings, tmp_path) as rt:
            for tenant in ("t1", "t2"):
                token = mint(tenant_id=tenant, kind="agent", roles=["safety"])
                async with client_for(rt, token) as c:
                    for run in ("r1", "r2"):
                        body = {**DECISION, "run_id": run, "step_id": f"{tenant}-{run}"}
                        response = await c.post("/safety/decisions", json=body)
                        assert response.status_code == 201, response.text

    asyncio.run(setup())
    return tmp_path


def test_audit_query_prints_one_tenants_trail_as_a_table(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "query", "--tenant", "t1", "--data-dir", str(served)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()

    assert header.split()[:5] == ["recorded_at", "event_type", "user", "run", "step"]
    assert [row.split()[1:5] for row in rows] == [
        ["safety.decision", "u1", "r1", "t1-r1"],
        ["safety.decision", "u1", "r2", "t1-r2"],
    ]


def test_audit_query_filters_and_prints_json_lines(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "query", "--tenant", "t2", "--run", "r2", "--format", "jsonl"]
    assert main([*args, "--data-dir", str(served)]) == 0
    (line,) = capsys.readouterr().out.splitlines()

    found = orjson.loads(line)
    assert (found["tenant_id"], found["run_id"], found["step_id"]) == ("t2", "r2", "t2-r2")
    assert found["payload"]["failure"]["code"] == "pii-egress"


def test_audit_query_by_time_and_type(served: Path, capsys: pytest.CaptureFixture[str]) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    base = ["audit", "query", "--tenant", "t1", "--data-dir", str(served), "--format", "jsonl"]
    assert main([*base, "--since", future]) == 0
    assert capsys.readouterr().out == ""
    assert main([*base, "--until", future, "--type", "safety.decision", "--user", "u1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main([*base, "--type", "budget.debited"]) == 0
    assert capsys.readouterr().out == ""


def test_audit_query_refuses_a_time_without_an_offset(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "query", "--tenant", "t1", "--since", "2026-01-01T00:00:00"])
    assert exit_.value.code == 2
    assert "RFC 3339 time with an offset" in capsys.readouterr().err


# -- what a hostile probe found -----------------------------------------------------------


async def test_a_key_reused_with_other_provenance_or_payload_types_is_refused(
    agent: AppClient, runtime: Runtime
) -> None:
    key = {"Idempotency-Key": "k1"}
    await emit(agent, event(payload={"a": True}), headers=key)
    changes: list[tuple[dict[str, Any], dict[str, str]]] = [
        (event(payload={"a": 1}), {}),  # 1 is not true
        (event(payload={"a": True}, parent_event_id="e9"), {}),
        (event(payload={"a": True}, causality={"trace_id": "t9"}), {}),
        (event(payload={"a": True}), {"X-Agent-Id": "someone"}),
        (event(payload={"a": True}, occurred_at="2026-01-01T00:00:00Z"), {}),
    ]
    for body, headers in changes:
        response = await agent.post("/events", json=body, headers={**key, **headers})
        assert "different request" in problem(response, 409)["detail"], body
    assert await telemetry_events(runtime) == 1


async def test_provenance_headers_fill_what_an_event_leaves_out_and_may_not_disagree(
    agent: AppClient, runtime: Runtime
) -> None:
    answer = await emit(agent, event(), headers={"X-Parent-Event-Id": "p-1", "X-Trace-Id": "t-1"})
    disagree = await agent.post(
        "/events", json=event(causality={"trace_id": "t-2"}), headers={"X-Trace-Id": "t-1"}
    )

    (stored,) = await runtime.spine.read_stream(answer["events"][0]["stream_id"])
    assert (stored.parent_event_id, stored.trace_id) == ("p-1", "t-1")
    assert "trace_id disagrees" in problem(disagree, 422)["detail"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"gates": [{"gate": "g", "passed": "yes"}]}, "passed"),
        ({"gates": [{"gate": "g", "passed": 1}]}, "passed"),
        (
            {"gates": [{"gate": "g" * 128, "passed": True, "reason": "r" * 2000}] * 64},
            "the limit is 65536",
        ),
        ({"failure": {"code": "c", "message": "m", "details": deep(80)}}, "nests deeper"),
        ({"occurred_at": "0001-01-01T00:00:00+14:00"}, "between the years"),
    ],
)
async def test_a_decision_the_spine_would_refuse_is_a_422_before_anything(
    agent: AppClient, runtime: Runtime, change: dict[str, Any], says: str
) -> None:
    response = await agent.post("/safety/decisions", json={**DECISION, **change})

    assert says in problem(response, 422)["detail"]
    assert await telemetry_events(runtime) == 0


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/events", {"since": "0001-01-01T00:00:00+14:00"}, "between the years"),
        ("/events", {"until": "1700000000"}, "RFC 3339"),
        ("/events", {"since": "2026-01-01T00:00:00"}, "RFC 3339"),
        ("/analytics/counts", {"name": "analytics.x", "since": "2026-12-07T00:00:00Z"}, "YYYY"),
        ("/analytics/counts", {"name": "analytics.x", "since": "1796601600"}, "YYYY"),
        ("/analytics/counts", {"name": "analytics.x", "until": "2026-02-30"}, "calendar"),
        ("/analytics/counts", {"name": "analytics.x", "since": "2020-01-01"}, "366 days"),
        (
            "/analytics/counts",
            {"name": "analytics.x", "since": "2026-02-02", "until": "2026-02-01"},
            "since is after until",
        ),
        ("/events", {"limit": "201"}, "200"),
    ],
)
async def test_query_times_are_rfc_3339_and_days_are_days(
    agent: AppClient, path: str, params: dict[str, str], says: str
) -> None:
    assert says in problem(await agent.get(path, params=params), 422)["detail"]


async def test_a_named_surface_or_project_narrows_a_query(runtime: Runtime, mint: Mint) -> None:
    token = mint(surfaces=["chat", "canvas"], projects={"chat": ["p1"], "canvas": ["p2"]})
    async with client_for(runtime, token) as both:
        await emit(both, event(step_id="chat"), headers={"X-Surface-Id": "chat"})
        await emit(both, event(step_id="canvas"), headers={"X-Surface-Id": "canvas"})
        on_canvas = await items(both, "/events", surface_id="canvas")
        in_p1 = await items(both, "/events", project_id="p1")
        by_header = await both.get("/events", headers={"X-Surface-Id": "chat"})
        not_granted = await both.get("/events", params={"surface_id": "builder"})

    assert steps(on_canvas) == ["canvas"]
    assert steps(in_p1) == ["chat"]
    assert steps(by_header.json()["items"]) == ["chat"]
    problem(not_granted, 403)


async def test_analytics_counts_stay_within_the_callers_grants(
    runtime: Runtime, mint: Mint
) -> None:
    token = mint(surfaces=["chat", "canvas"], projects={"chat": ["p1"], "canvas": ["p2"]})
    async with client_for(runtime, token) as both:
        for surface, times in (("chat", 2), ("canvas", 3)):
            body = {"events": [event("analytics.opened", step_id=str(i)) for i in range(times)]}
            await emit(both, body, headers={"X-Surface-Id": surface})
        everything = await both.get("/analytics/counts", params={"name": "analytics.opened"})
    narrowed = mint(surfaces=["canvas"], projects={"canvas": ["p2"]})
    async with client_for(runtime, narrowed) as canvas_only:
        some = await canvas_only.get("/analytics/counts", params={"name": "analytics.opened"})
    async with client_for(runtime, mint(surfaces=[], projects=[])) as nothing:
        none = await nothing.get("/analytics/counts", params={"name": "analytics.opened"})

    assert everything.json()["total"] == 5
    assert some.json()["total"] == 3
    assert none.json()["total"] == 0


async def test_a_422_names_a_bounded_number_of_fields(agent: AppClient) -> None:
    body = {**event(), **{f"extra{i}": i for i in range(5000)}}
    response = await agent.post("/events", json=body)

    found = problem(response, 422)
    assert len(found["errors"]) == 50
    assert "and 4995 more" in found["detail"]
    assert len(response.content) < 20_000


async def test_a_refusal_made_while_the_store_is_locked_is_recorded_once_it_is_back(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with (
        bootstrap(lock_timeout(settings, 100), tmp_path) as runtime,
        client_for(runtime, mint()) as client,
    ):
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            refused = [await client.get("/audit") for _ in range(3)]
            await close_refusal_intervals(client)  # the store is still locked
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await audit_events(runtime) == []
        await close_refusal_intervals(client)
        recorded = await audit_events(runtime)

    assert [r.status_code for r in refused] == [403, 403, 403]
    first, summary = recorded
    assert first.payload["reason_code"] == "RoleRequired"
    assert summary.payload["count"] == 3
    assert verify_chain(recorded) == 2


def test_audit_query_checks_the_tenant_before_printing_and_filters_by_family(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "query", "--tenant", "a b", "--data-dir", str(served)]) == 3
    assert capsys.readouterr().out == ""
    args = ["audit", "query", "--tenant", "t1", "--user", "x y", "--data-dir", str(served)]
    assert main(args) == 3
    assert capsys.readouterr().out == ""
    base = ["audit", "query", "--tenant", "t1", "--data-dir", str(served), "--format", "jsonl"]
    assert main([*base, "--family", "safety"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main([*base, "--family", "budget"]) == 0
    assert capsys.readouterr().out == ""


def test_audit_query_refuses_a_time_beyond_the_calendar(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "query", "--tenant", "t1", "--since", "9999-12-31T23:59:59-14:00"])
    assert exit_.value.code == 2
    assert "between the years 1 and 9999" in capsys.readouterr().err


async def test_a_reused_key_is_refused_before_any_stream_is_written(
    agent: AppClient, runtime: Runtime
) -> None:
    key = {"Idempotency-Key": "k"}
    first = {"events": [event(run_id="i1", payload={"v": 1}), event(run_id="i2")]}
    await emit(agent, first, headers=key)
    reused = {"events": [event(run_id="i1", payload={"v": 99}), event(run_id="i3")]}
    refused = await agent.post("/events", json=reused, headers=key)
    racing = await asyncio.gather(
        *(
            agent.post(
                "/events", json={"events": [event(run_id="i1"), event(run_id=f"x{i}")]}, headers=key
            )
            for i in range(10)
        )
    )

    problem(refused, 409)
    assert {r.status_code for r in racing} == {409}
    assert await telemetry_events(runtime) == 2  # i1 and i2 of the first request only


async def test_counts_narrow_to_a_named_surface_and_take_any_until(
    runtime: Runtime, mint: Mint
) -> None:
    token = mint(surfaces=["chat", "canvas"], projects={"chat": ["p1"], "canvas": ["p9"]})
    async with client_for(runtime, token) as both:
        for surface, times in (("chat", 2), ("canvas", 3)):
            body = {"events": [event("analytics.opened", step_id=str(i)) for i in range(times)]}
            await emit(both, body, headers={"X-Surface-Id": surface})
        name = {"name": "analytics.opened"}
        on_chat = await both.get("/analytics/counts", params={**name, "surface_id": "chat"})
        in_p9 = await both.get("/analytics/counts", params={**name, "project_id": "p9"})
        ancient = await both.get("/analytics/counts", params={**name, "until": "0001-01-01"})
    async with client_for(runtime, mint(user_id="a1", roles=["auditor"], **GRANTS)) as a1:
        tenant_chat = await a1.get("/analytics/counts", params={**name, "surface_id": "chat"})
        tenant = await a1.get("/analytics/counts", params=name)

    assert on_chat.json()["total"] == 2
    assert in_p9.json()["total"] == 3
    assert (ancient.status_code, ancient.json()["items"]) == (200, [])
    assert tenant_chat.json()["total"] == 2
    assert (tenant.json()["counted_for"], tenant.json()["total"]) == ("*", 5)


GRANTS: dict[str, Any] = {
    "surfaces": ["chat", "canvas"],
    "projects": {"chat": ["p1"], "canvas": ["p9"]},
}
