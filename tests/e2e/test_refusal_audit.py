"""Refusals are audited without growing the spine per request (DESIGN §7): one event per
caller and reason per interval, a summary counting the rest, bounded memory, capped
request details, and a client address that only trusted proxies can vouch for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from engines.audit import Refusal, RefusalAudit
from engines.auth import lab_secret
from engines.http import create_app
from engines.runtime import Runtime, bootstrap
from engines.settings import AuditSettings, HttpSettings, Settings
from spine.errors import BackendUnavailable
from tests.e2e.support import (
    TENANT,
    UNAUTHENTICATED,
    AppClient,
    Mint,
    audit_events,
    bearer,
    client_for,
    close_refusal_intervals,
    spine_events,
)


def bad_token(i: int, tmp_path: Path) -> str:
    """One of a few kinds of token that do not verify."""
    now = int(time.time())
    claims = {"sub": f"u{i}", "tenant_id": "t1", "exp": now + 600}
    kinds = [
        f"garbage-{i}",
        jwt.encode(claims, f"wrong-secret-{i}-" + "x" * 32, algorithm="HS256"),
        jwt.encode({**claims, "exp": now - 600}, lab_secret(tmp_path), algorithm="HS256"),
        jwt.encode({**claims, "kind": "robot"}, lab_secret(tmp_path), algorithm="HS256"),
    ]
    return kinds[i % len(kinds)]


async def test_a_thousand_requests_with_bad_tokens_append_only_a_handful_of_events(
    anonymous: AppClient, runtime: Runtime, tmp_path: Path
) -> None:
    tokens = [bad_token(i, tmp_path) for i in range(1000)]

    statuses = set()
    for token in tokens:
        response = await anonymous.post("/notes", json={"title": "x"}, headers=bearer(token))
        statuses.add(response.status_code)
    during = await spine_events(runtime)
    await close_refusal_intervals(anonymous)  # as shutdown does

    assert statuses == {401}
    assert during == 1
    first, summary = await audit_events(runtime)
    assert (first.event_type, first.tenant_id) == ("audit.access_denied", UNAUTHENTICATED)
    assert (summary.event_type, summary.stream_id) == (
        "audit.access_denied_summary",
        first.stream_id,
    )
    assert summary.payload["count"] == 1000
    assert summary.payload["first_at"] <= summary.payload["last_at"]


async def test_each_caller_and_reason_has_an_interval_of_its_own(
    runtime: Runtime, mint: Mint, anonymous: AppClient
) -> None:
    async with (
        client_for(runtime, mint(user_id="alice")) as alice,
        client_for(runtime, mint(user_id="bob")) as bob,
    ):
        for _ in range(3):
            await alice.get("/notes", headers={"X-Tenant-Id": "other"})  # 403
            await bob.get("/notes", headers={"X-Tenant-Id": "other"})  # 403
            await bob.get("/notes", params={"surface_id": "nope"})  # 403, another reason
        await anonymous.get("/notes")  # 401

    firsts = await audit_events(runtime)

    assert sorted((e.user_id or "-", e.payload["reason_code"]) for e in firsts) == [
        ("-", "Unauthenticated"),
        ("alice", "ScopeMismatch"),
        ("bob", "ScopeMismatch"),
    ]
    assert {e.tenant_id for e in firsts if e.user_id} == {TENANT}


@pytest.fixture
def short_intervals(settings: Settings) -> Settings:
    return settings.model_copy(update={"audit": AuditSettings(refusal_interval_seconds=0.2)})


@pytest.fixture
async def brief(short_intervals: Settings, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with bootstrap(short_intervals, tmp_path) as rt:
        yield rt


async def test_a_refusal_after_the_interval_ends_closes_it_and_opens_another(
    brief: Runtime,
) -> None:
    async with client_for(brief) as anonymous:
        await anonymous.get("/notes")
        await anonymous.get("/notes")
        await asyncio.sleep(0.3)
        await anonymous.get("/notes")

        events = await audit_events(brief)

    kinds = sorted(e.event_type for e in events)
    assert kinds == ["audit.access_denied", "audit.access_denied", "audit.access_denied_summary"]
    (summary,) = [e for e in events if e.event_type.endswith("summary")]
    assert summary.payload["count"] == 2


async def test_the_callers_tracked_at_once_are_bounded(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    three = settings.model_copy(update={"audit": AuditSettings(refusal_max_keys=3)})
    async with bootstrap(three, tmp_path) as runtime, client_for(runtime) as client:
        for i in range(10):
            token = mint(user_id=f"user{i}")
            response = await client.get("/notes", headers={**bearer(token), "X-Mode": "saas"})
            assert response.status_code == 403
            assert client.app.state.refusals.open_intervals <= 4  # three, and the overflow
        firsts = await audit_events(runtime)
        await close_refusal_intervals(client)
        everything = await audit_events(runtime)

    assert len(firsts) == 4  # three callers, then one overflow event for the other seven
    (overflow,) = [e for e in firsts if "overflow" in e.payload]
    assert (overflow.tenant_id, overflow.user_id) == ("t1", None)  # in the tenant's own trail
    (summary,) = [e for e in everything if e.stream_id == overflow.stream_id][1:]
    assert summary.payload["count"] == 7
    # the callers counted under the overflow are still named, a few at least
    sampled = {s["user_id"] for s in summary.payload["others"]}
    assert {f"user{i}" for i in range(4, 10)} <= sampled
    assert summary.payload["others_left_out"] == 0


async def test_a_summary_names_the_later_refusals_that_differed_bounded(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with bootstrap(settings, tmp_path) as runtime, client_for(runtime, mint()) as client:
        for i in range(30):
            response = await client.get("/notes", params={"project_id": f"nope{i}"})
            assert response.status_code == 403
        await close_refusal_intervals(client)
        events = await audit_events(runtime)

    _first, summary = events
    assert summary.payload["count"] == 30
    assert len(summary.payload["others"]) == 8
    assert summary.payload["others_left_out"] == 21
    assert "nope1" in summary.payload["others"][0]["reason"]


async def test_intervals_close_on_their_own_while_the_service_runs_and_on_shutdown(
    short_intervals: Settings, tmp_path: Path
) -> None:
    app = create_app(
        short_intervals.model_copy(update={"audit": AuditSettings(refusal_interval_seconds=30)}),
        tmp_path,
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as anonymous:
            for _ in range(3):
                assert (await anonymous.get("/notes")).status_code == 401
        runtime: Runtime = app.state.runtime
        assert len(await audit_events(runtime)) == 1
    async with bootstrap(short_intervals, tmp_path, run_projectors=False) as after:
        events = await audit_events(after)

    assert [e.payload.get("count") for e in events] == [None, 3]

    ticking = create_app(short_intervals, tmp_path / "ticking")
    async with ticking.router.lifespan_context(ticking):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ticking), base_url="http://test"
        ) as anonymous:
            await anonymous.get("/notes")
            await anonymous.get("/notes")
        runtime = ticking.state.runtime
        for _ in range(100):  # no further request: the interval closes by itself
            if len(await audit_events(runtime)) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(await audit_events(runtime)) == 2


async def test_the_placeholder_tenant_of_unknown_callers_is_no_tenant_a_token_can_name(
    anonymous: AppClient, runtime: Runtime, tmp_path: Path
) -> None:
    claims = {"sub": "u1", "tenant_id": UNAUTHENTICATED, "surfaces": ["s1"], "exp": 2**40}
    token = jwt.encode(claims, lab_secret(tmp_path), algorithm="HS256")

    response = await anonymous.post("/notes", json={"title": "x"}, headers=bearer(token))

    assert response.status_code == 401
    assert "tenant_id" in response.json()["detail"]
    assert await spine_events(runtime, f"notes/{UNAUTHENTICATED}/") == 0
    (event,) = await audit_events(runtime)
    assert (event.tenant_id, event.user_id) == (UNAUTHENTICATED, None)


# -- what a refusal records of the request -------------------------------------------------


async def test_a_refusal_records_a_capped_summary_of_the_clients_headers(
    client: AppClient, runtime: Runtime
) -> None:
    headers = [("X-Tenant-Id", "t" * 4000 + str(i)) for i in range(4)]
    headers += [("X-User-Id", "u" * 4000), ("X-Mode", "m" * 4000), ("X-Engines-Mode", "e" * 4000)]
    headers += [("X-Tenant-Id", "extra")] * 10

    response = await client.get("/notes/" + "n" * 5000, headers=headers)

    assert response.status_code == 403
    (event,) = await audit_events(runtime)
    assert len(orjson.dumps(event.payload)) < 2_500
    request = event.payload["request"]
    assert len(request["path"]) < 300
    assert len(request["claimed"]["tenant_id"]) == 4
    assert all(len(v) < 100 for vs in request["claimed"].values() for v in vs)
    assert request["claimed_values_left_out"] == 10
    assert len(event.payload["reason"]) < 400


async def peer_recorded(runtime: Runtime, headers: dict[str, str]) -> Any:
    async with client_for(runtime) as anonymous:
        await anonymous.get("/notes", headers=headers)
    events = await audit_events(runtime)
    return events[-1].payload["request"]["client"]


async def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(runtime: Runtime) -> None:
    assert await peer_recorded(runtime, {"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"


@pytest.mark.parametrize(
    ("trusted", "forwarded", "client"),
    [
        (["127.0.0.1"], "203.0.113.9", "203.0.113.9"),
        (["127.0.0.1"], "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        (["127.0.0.0/8", "10.0.0.0/8"], "203.0.113.9, 10.1.2.3", "203.0.113.9"),
        (["127.0.0.1"], "not-an-address", "127.0.0.1"),
        (["10.0.0.0/8"], "203.0.113.9", "127.0.0.1"),
    ],
    ids=["one-hop", "spoofed-left-entry", "two-proxies", "garbage", "peer-not-trusted"],
)
async def test_a_trusted_proxys_forwarded_for_names_the_client(
    settings: Settings, tmp_path: Path, trusted: list[str], forwarded: str, client: str
) -> None:
    http = HttpSettings.model_validate({"trusted_proxies": trusted})
    async with bootstrap(settings.model_copy(update={"http": http}), tmp_path) as runtime:
        assert await peer_recorded(runtime, {"X-Forwarded-For": forwarded}) == client


def refusal(caller: str, *, tenant_id: str | None = None, user_id: str | None = None) -> Refusal:
    return Refusal(
        status=403 if tenant_id else 401,
        reason_code="RoleRequired" if tenant_id else "Unauthenticated",
        reason="no",
        request={"method": "GET", "path": "/audit", "client": caller, "claimed": {}},
        tenant_id=tenant_id,
        user_id=user_id,
        caller=user_id or caller,
    )


async def test_a_flood_of_unknown_callers_never_moves_a_tenants_refusal_out_of_its_trail(
    runtime: Runtime,
) -> None:
    audit = RefusalAudit(runtime.spine, "lab", AuditSettings(refusal_max_keys=3))
    for i in range(10):  # more unknown callers than the audit tracks
        await audit.refused(refusal(f"10.0.0.{i}"))
    await audit.refused(refusal("-", tenant_id="t1", user_id="alice"))
    await audit.aclose()
    events = await audit_events(runtime)

    (alice,) = [e for e in events if e.tenant_id == "t1"]
    assert (alice.user_id, alice.payload["reason_code"]) == ("alice", "RoleRequired")
    assert "refused_at" in alice.payload
    assert {e.tenant_id for e in events} == {"t1", UNAUTHENTICATED}


async def test_refusals_the_spine_never_took_are_logged_as_lost_at_shutdown(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    class Down:
        async def append(self, *args: Any) -> Any:
            raise BackendUnavailable("event_spine", "sqlite", "locked")

    audit = RefusalAudit(Down(), "lab", AuditSettings())  # type: ignore[arg-type]
    for _ in range(3):
        await audit.refused(refusal("-", tenant_id="t1", user_id="alice"))
    await audit.refused(refusal("10.0.0.1"))
    with caplog.at_level("ERROR"):
        await audit.aclose()

    assert "4 refusals (2 intervals) are not on the spine" in caplog.text


async def test_a_refusal_does_not_wait_behind_another_close(runtime: Runtime) -> None:
    audit = RefusalAudit(runtime.spine, "lab", AuditSettings())
    async with audit._closing:  # another close is appending (a locked store, say)
        appended = await asyncio.wait_for(audit.flush(wait=False), timeout=1)
    assert appended == 0
