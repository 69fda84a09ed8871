"""Identity over HTTP (DESIGN §7): who may see and write what, and every refusal audited."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from engines.auth import lab_secret
from engines.runtime import Runtime
from spine.codec import verify_chain
from tests.e2e.support import (
    TENANT,
    UNAUTHENTICATED,
    USER,
    AppClient,
    Mint,
    audit_events,
    bearer,
    client_for,
    close_refusal_intervals,
    create,
    note_stream_id,
    problem,
    spine_events,
)


def signed(claims: dict[str, Any], key: str, **kwargs: Any) -> str:
    return jwt.encode(claims, key, algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": USER,
        "tenant_id": TENANT,
        "surfaces": ["s1"],
        "projects": ["p1"],
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


# -- isolation ----------------------------------------------------------------------------


async def test_another_users_note_answers_404(runtime: Runtime, mint: Mint) -> None:
    async with client_for(runtime, mint(user_id="alice")) as alice:
        note = await create(alice, title="alice's secret")
    stream = note_stream_id(note["note_id"])
    before = await runtime.spine.read_stream(stream)

    async with client_for(runtime, mint(user_id="mallory")) as mallory:
        get = await mallory.get(f"/notes/{note['note_id']}")
        put = await mallory.put(f"/notes/{note['note_id']}", json={"title": "mine now"})
        delete = await mallory.delete(f"/notes/{note['note_id']}")
        put_pinned = await mallory.put(
            f"/notes/{note['note_id']}", json={"title": "mine now"}, headers={"If-Match": '"1"'}
        )

    assert [r.status_code for r in (get, put, delete, put_pinned)] == [404] * 4
    assert "alice's secret" not in get.text
    assert await runtime.spine.read_stream(stream) == before
    async with client_for(runtime, mint(user_id="alice")) as alice:
        still = (await alice.get(f"/notes/{note['note_id']}")).json()
    assert (still["title"], still["version"]) == ("alice's secret", 1)


async def test_another_users_note_answers_404_even_with_a_stale_if_match(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(user_id="alice")) as alice:
        note = await create(alice)

    async with client_for(runtime, mint(user_id="mallory")) as mallory:
        put = await mallory.put(
            f"/notes/{note['note_id']}", json={"title": "x"}, headers={"If-Match": '"7"'}
        )
        delete = await mallory.delete(f"/notes/{note['note_id']}", headers={"If-Match": '"7"'})

    assert [put.status_code, delete.status_code] == [404, 404]


async def test_another_tenants_token_cannot_see_the_note(runtime: Runtime, mint: Mint) -> None:
    async with client_for(runtime, mint(tenant_id="acme")) as acme:
        note = await create(acme, title="acme only")

    # Same user id, other tenant: a different world.
    async with client_for(runtime, mint(tenant_id="globex")) as globex:
        get = await globex.get(f"/notes/{note['note_id']}")
        put = await globex.put(f"/notes/{note['note_id']}", json={"title": "x"})
        listed = (await globex.get("/notes")).json()["items"]

    assert (get.status_code, put.status_code) == (404, 404)
    assert listed == []
    assert await runtime.spine.read_stream(f"notes/globex/lab/{note['note_id']}") == []
    assert len(await runtime.spine.read_stream(f"notes/acme/lab/{note['note_id']}")) == 1


async def test_the_list_shows_only_the_callers_own_notes(runtime: Runtime, mint: Mint) -> None:
    async with client_for(runtime, mint(user_id="alice")) as alice:
        mine = {(await create(alice, title=f"a{i}"))["note_id"] for i in range(3)}
    async with client_for(runtime, mint(user_id="bob")) as bob:
        theirs = {(await create(bob, title=f"b{i}"))["note_id"] for i in range(2)}
    async with client_for(runtime, mint(tenant_id="other", user_id="alice")) as elsewhere:
        await create(elsewhere, title="same user id, other tenant")

    async with client_for(runtime, mint(user_id="alice")) as alice:
        listed = {n["note_id"] for n in (await alice.get("/notes")).json()["items"]}
    async with client_for(runtime, mint(user_id="bob")) as bob:
        bobs = {n["note_id"] for n in (await bob.get("/notes")).json()["items"]}

    assert listed == mine
    assert bobs == theirs


# -- 401: no identity ----------------------------------------------------------------------


def bad_tokens(tmp_path: Path) -> dict[str, str]:
    secret = lab_secret(tmp_path)
    return {
        "garbage": "not-a-jwt",
        "three garbage parts": "aaa.bbb.ccc",
        "wrong signature": signed(claims(), "another-secret-another-secret-another"),
        "expired": signed(claims(exp=int(time.time()) - 600), secret),
        "no expiry": signed({k: v for k, v in claims().items() if k != "exp"}, secret),
        "no subject": signed({k: v for k, v in claims().items() if k != "sub"}, secret),
        "malformed tenant": signed(claims(tenant_id="../etc"), secret),
        "surfaces not a list": signed(claims(surfaces="s1"), secret),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
    }


BAD_TOKEN_NAMES = [
    "garbage",
    "three garbage parts",
    "wrong signature",
    "expired",
    "no expiry",
    "no subject",
    "malformed tenant",
    "surfaces not a list",
    "alg none",
]


async def test_a_request_without_a_token_answers_401_and_is_audited(
    anonymous: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await anonymous.get("/notes")

    assert problem(response, 401)["type"] == "urn:engines:problem:unauthenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    (event,) = await audit_events(runtime)
    assert event.event_type == "audit.access_denied"
    assert event.family == "audit"
    assert event.stream_id.startswith(f"audit/{UNAUTHENTICATED}/lab/")
    assert event.payload["status"] == 401
    assert event.payload["request"]["method"] == "GET"
    assert event.payload["request"]["path"] == "/notes"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/notes"),
        ("GET", "/notes/some-note"),
        ("PUT", "/notes/some-note"),
        ("DELETE", "/notes/some-note"),
    ],
)
async def test_every_notes_endpoint_requires_a_token(
    anonymous: httpx.AsyncClient, runtime: Runtime, method: str, path: str
) -> None:
    body = {"title": "x"} if method in {"POST", "PUT"} else None
    before = await spine_events(runtime)

    response = await anonymous.request(method, path, json=body)

    problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    (event,) = await audit_events(runtime)
    assert (event.payload["request"]["method"], event.payload["request"]["path"]) == (
        method,
        path,
    )
    assert await spine_events(runtime) == before + 1  # the audit event, nothing else


async def test_a_basic_authorization_header_answers_401(
    anonymous: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await anonymous.get("/notes", headers={"Authorization": "Basic dTpw"})

    assert response.status_code == 401
    assert len(await audit_events(runtime)) == 1


@pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
async def test_a_token_that_does_not_verify_answers_401_and_is_audited(
    anonymous: httpx.AsyncClient, runtime: Runtime, tmp_path: Path, name: str
) -> None:
    token = bad_tokens(tmp_path)[name]

    response = await anonymous.post("/notes", json={"title": "x"}, headers=bearer(token))

    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    (event,) = await audit_events(runtime)
    assert event.event_type == "audit.access_denied"
    assert event.payload["status"] == 401
    assert event.tenant_id == UNAUTHENTICATED
    assert [e async for e in runtime.spine.scan(domain="notes")] == []


async def test_an_expired_token_within_the_leeway_is_still_accepted(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(ttl_seconds=-5)) as client:
        assert (await client.get("/notes")).status_code == 200


# -- 403: a client claim that disagrees with the token ------------------------------------


@pytest.mark.parametrize(
    ("headers", "params", "field", "value"),
    [
        ({"X-Tenant-Id": "globex"}, {}, "tenant_id", "globex"),
        ({"X-User-Id": "root"}, {}, "user_id", "root"),
        ({"X-Mode": "saas"}, {}, "mode", "saas"),
        ({"X-Engines-Mode": "enterprise"}, {}, "mode", "enterprise"),
        ({}, {"mode": "system"}, "mode", "system"),
        ({}, {"user_id": "someone-else"}, "user_id", "someone-else"),
        ({}, {"tenant_id": "globex"}, "tenant_id", "globex"),
    ],
)
async def test_a_header_or_query_that_disagrees_with_the_token_answers_403_and_is_audited(
    client: httpx.AsyncClient,
    runtime: Runtime,
    headers: dict[str, str],
    params: dict[str, str],
    field: str,
    value: str,
) -> None:
    response = await client.get("/notes", headers=headers, params=params)

    assert problem(response, 403)["type"] == "urn:engines:problem:scope-mismatch"
    assert field in response.json()["detail"]
    (event,) = await audit_events(runtime)
    assert event.payload["status"] == 403
    assert (event.tenant_id, event.user_id) == (TENANT, USER)
    assert event.stream_id.startswith(f"audit/{TENANT}/lab/")
    assert event.payload["request"]["claimed"][field] == [value]


async def test_a_disagreeing_header_on_a_write_answers_403_and_writes_no_note(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/notes", json={"title": "as someone else"}, headers={"X-User-Id": "victim"}
    )

    assert response.status_code == 403
    assert [e async for e in runtime.spine.scan(domain="notes")] == []
    assert len(await audit_events(runtime)) == 1


async def test_headers_that_agree_with_the_token_are_accepted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"X-Tenant-Id": TENANT, "X-User-Id": USER, "X-Mode": "lab"}

    created = await client.post("/notes", json={"title": "ok"}, headers=headers)
    listed = await client.get("/notes", headers=headers, params={"user_id": USER})

    assert created.status_code == 201
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 1
    assert await audit_events(runtime) == []


async def test_a_surface_not_granted_by_the_token_answers_403(
    client: AppClient, runtime: Runtime
) -> None:
    post = await client.post("/notes", json={"title": "x", "surface_id": "admin-console"})
    listed = await client.get("/notes", params={"surface_id": "admin-console"})
    read = await client.get("/notes/any-note", headers={"X-Surface-Id": "admin-console"})

    for response in (post, listed, read):
        problem(response, 403)
    assert "surface_id" in post.json()["detail"]
    assert await spine_events(runtime, "notes/") == 0
    # one caller, one reason: the first refusal is recorded, the rest counted
    (first,) = await audit_events(runtime)
    assert first.payload["status"] == 403
    await close_refusal_intervals(client)
    first, summary = await audit_events(runtime)
    assert (summary.event_type, summary.payload["count"]) == ("audit.access_denied_summary", 3)


async def test_a_project_not_granted_by_the_token_answers_403(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    post = await client.post("/notes", json={"title": "x", "project_id": "secret-project"})
    listed = await client.get("/notes", params={"project_id": "secret-project"})

    problem(post, 403)
    problem(listed, 403)
    assert "project_id" in post.json()["detail"]
    assert await spine_events(runtime, "notes/") == 0
    assert len(await audit_events(runtime)) == 1


async def test_with_several_surfaces_granted_a_note_may_name_any_of_them(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(surfaces=["chat", "canvas"])) as client:
        chat = await create(client, surface_id="chat")
        canvas = await create(client, surface_id="canvas")
        by_header = await client.post(
            "/notes", json={"title": "t"}, headers={"X-Surface-Id": "canvas"}
        )

    assert (chat["surface_id"], canvas["surface_id"]) == ("chat", "canvas")
    assert by_header.json()["surface_id"] == "canvas"


async def test_a_token_for_saas_mode_is_refused_by_a_lab_server(
    anonymous: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    token = signed(claims(mode="saas"), lab_secret(tmp_path))

    response = await anonymous.get("/notes", headers=bearer(token))

    assert "saas" in problem(response, 403)["detail"]
    (event,) = await audit_events(runtime)
    assert event.payload["status"] == 403
    # the token verified, so the denial is recorded under its tenant and user
    assert (event.tenant_id, event.user_id) == (TENANT, USER)


async def test_a_token_that_says_lab_mode_is_accepted_by_a_lab_server(
    anonymous: httpx.AsyncClient, tmp_path: Path
) -> None:
    token = signed(claims(mode="lab"), lab_secret(tmp_path))

    assert (await anonymous.get("/notes", headers=bearer(token))).status_code == 200


async def test_audit_events_form_verified_chains_and_carry_no_token(
    anonymous: AppClient, runtime: Runtime, tmp_path: Path
) -> None:
    secret_token = signed(claims(), "another-secret-another-secret-another")
    await anonymous.get("/notes", headers=bearer(secret_token))
    await anonymous.get("/notes")
    await close_refusal_intervals(anonymous)

    events = await audit_events(runtime)

    assert [e.event_type for e in events] == ["audit.access_denied", "audit.access_denied_summary"]
    assert verify_chain(events) == 2
    for event in events:
        assert secret_token not in str(event.model_dump())


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"X-Tenant-Id": TENANT}, {"tenant_id": "evil"}),
        ({}, [("tenant_id", TENANT), ("tenant_id", "evil")]),
        ({"X-Mode": "lab", "X-Engines-Mode": "saas"}, {}),
    ],
    ids=["header-agrees-query-not", "repeated-query", "two-mode-headers"],
)
async def test_every_alias_and_repeat_of_a_claim_is_checked(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], params: Any
) -> None:
    response = await client.get("/notes", headers=headers, params=params)

    assert response.status_code == 403
    assert [e.event_type for e in await audit_events(runtime)] == ["audit.access_denied"]


async def test_a_surface_named_twice_differently_is_refused_and_writes_no_note(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(surfaces=["s1", "s2"])) as client:
        response = await client.post(
            "/notes", json={"title": "t", "surface_id": "s1"}, headers={"X-Surface-Id": "s2"}
        )
        listed = (await client.get("/notes")).json()["items"]

    assert response.status_code == 403
    assert listed == []


async def test_the_surface_header_filters_the_list(runtime: Runtime, mint: Mint) -> None:
    async with client_for(runtime, mint(surfaces=["s1", "s2"])) as client:
        await create(client, surface_id="s1", title="one")
        await create(client, surface_id="s2", title="two")
        by_header = await client.get("/notes", headers={"X-Surface-Id": "s2"})
        everything = await client.get("/notes")

    assert [n["title"] for n in by_header.json()["items"]] == ["two"]
    assert sorted(n["title"] for n in everything.json()["items"]) == ["one", "two"]
