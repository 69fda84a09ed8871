"""Session memory over HTTP, end to end: the contract of ``/memory`` and the spine
beneath it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from routing.config import RouteOptions
from spine.codec import timestamp_text, verify_chain
from spine.errors import MissingRoutes
from tests.e2e.support import (
    PROJECT,
    SURFACE,
    TENANT,
    USER,
    AppClient,
    Mint,
    client_for,
    field_paths,
    problem,
    spine_events,
)

#: The default caller's session stream: the token grants one surface with one project.
STREAM = f"memory/{TENANT}/lab/{USER}/s1/{PROJECT}"
KEY_FIELDS = {
    "session_id",
    "key",
    "value",
    "version",
    "ttl_seconds",
    "expires_at",
    "tenant_id",
    "mode",
    "user_id",
    "surface_id",
    "project_id",
    "provenance",
    "timestamps",
}


async def put(
    client: httpx.AsyncClient, key: str, value: Any, session: str = "s1", **kw: Any
) -> httpx.Response:
    body = {"value": value, **({"ttl_seconds": kw.pop("ttl")} if "ttl" in kw else {})}
    return await client.put(f"/memory/{session}/{key}", json=body, **kw)


async def stored(runtime: Runtime, stream: str = STREAM) -> int:
    return len(await runtime.spine.read_stream(stream))


def with_memory_route(settings: Settings, **options: Any) -> Settings:
    """``settings`` with the memory_store route given ``options`` (or another table)."""
    route = settings.routes["memory_store"]
    name = options.pop("name", route.name)
    changed = route.model_copy(update={"name": name, "options": RouteOptions(**options)})
    return settings.model_copy(update={"routes": {**settings.routes, "memory_store": changed}})


@asynccontextmanager
async def serving(settings: Settings, tmp_path: Path, token: str) -> AsyncIterator[AppClient]:
    async with bootstrap(settings, tmp_path) as runtime, client_for(runtime, token) as client:
        yield client


# -- put, get, list, delete ---------------------------------------------------------------


async def test_put_answers_the_key_with_its_version_as_etag_and_get_reads_it_back(
    client: httpx.AsyncClient,
) -> None:
    response = await put(client, "plan", {"steps": ["a", "b"], "done": False})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() == KEY_FIELDS
    assert (body["session_id"], body["key"], body["version"]) == ("s1", "plan", 1)
    assert body["value"] == {"steps": ["a", "b"], "done": False}
    assert (body["ttl_seconds"], body["expires_at"]) == (None, None)  # durable by default
    assert (body["tenant_id"], body["mode"], body["user_id"]) == (TENANT, "lab", USER)
    assert (body["surface_id"], body["project_id"]) == (SURFACE, PROJECT)
    assert body["timestamps"]["created_at"] == body["timestamps"]["updated_at"]
    assert response.headers["ETag"] == '"1"'

    fetched = await client.get("/memory/s1/plan")
    assert fetched.status_code == 200
    assert fetched.json() == body
    assert fetched.headers["ETag"] == '"1"'


@pytest.mark.parametrize("value", [None, 0, -1.5, "text", [], {"deep": {"er": [1, None]}}, True])
async def test_any_json_value_is_kept_as_given(client: httpx.AsyncClient, value: Any) -> None:
    assert (await put(client, "k", value)).status_code == 200

    assert (await client.get("/memory/s1/k")).json()["value"] == value


async def test_a_keys_version_is_the_seq_of_its_own_last_write(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await put(client, "a", 1)
    await put(client, "b", 1)
    second = await put(client, "b", 2)

    assert (second.json()["version"], second.headers["ETag"]) == (3, '"3"')
    a = await client.get("/memory/s1/a")
    assert (a.json()["version"], a.headers["ETag"]) == (1, '"1"')
    assert second.json()["timestamps"]["created_at"] < second.json()["timestamps"]["updated_at"]
    assert await stored(runtime) == 3


async def test_put_delete_are_chained_events_on_the_sessions_stream_with_scope_and_provenance(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"X-Agent-Id": "planner", "X-Run-Id": "run-7"}
    await client.put("/memory/s1/k", json={"value": 1, "ttl_seconds": 60}, headers=headers)
    await client.delete("/memory/s1/k", headers=headers)

    events = await runtime.spine.read_stream(STREAM)

    assert [e.event_type for e in events] == ["memory.set", "memory.deleted"]
    assert [e.payload for e in events] == [
        {"key": "k", "value": 1, "ttl_seconds": 60},
        {"key": "k"},
    ]
    for event in events:
        assert (event.tenant_id, event.mode, event.user_id) == (TENANT, "lab", USER)
        assert (event.surface_id, event.project_id) == (SURFACE, PROJECT)
        assert (event.agent_id, event.run_id, event.source) == ("planner", "run-7", "ui")
    assert verify_chain(events) == 2


async def test_delete_answers_deleted_and_the_key_is_gone(client: httpx.AsyncClient) -> None:
    await put(client, "k", "v")

    response = await client.delete("/memory/s1/k")

    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "s1", "key": "k", "version": 2, "deleted": True}
    assert response.headers["ETag"] == '"2"'
    problem(await client.get("/memory/s1/k"), 404)
    problem(await client.delete("/memory/s1/k"), 404)
    assert (await client.get("/memory/s1")).json()["items"] == []


async def test_an_absent_key_answers_404_to_get_and_delete(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for response in (await client.get("/memory/s1/nope"), await client.delete("/memory/s1/nope")):
        assert problem(response, 404)["type"] == "urn:engines:problem:not-found"
    assert await spine_events(runtime, "memory/") == 0


async def test_list_pages_through_the_sessions_live_keys_in_key_order(
    client: httpx.AsyncClient,
) -> None:
    for key in ["d", "a", "e", "c", "b", "f", "g"]:
        await put(client, key, {"big": "not listed"})
    await put(client, "other-session-key", 1, session="s2")
    await client.delete("/memory/s1/f")

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/memory/s1", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["session_id"] == "s1"
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [item["key"] for item in seen] == ["a", "b", "c", "d", "e", "g"]
    assert seen[0].keys() == {
        "key",
        "version",
        "ttl_seconds",
        "expires_at",
        "surface_id",
        "timestamps",
    }
    assert seen[0]["version"] == 2  # "a" was the second write of the session


async def test_a_session_never_written_lists_no_keys(client: httpx.AsyncClient) -> None:
    response = await client.get("/memory/never")

    assert response.status_code == 200
    assert response.json() == {"session_id": "never", "items": [], "next_cursor": None}


# -- scope: the project, the user, the tenant -------------------------------------------


async def test_a_session_in_a_project_and_one_without_are_different_streams(
    runtime: Runtime, mint: Mint
) -> None:
    token = mint(surfaces=["s1", "s2"], projects={"s1": ["p1"], "s2": []})
    async with client_for(runtime, token) as client:
        in_p1 = {"X-Surface-Id": "s1"}
        no_project = {"X-Surface-Id": "s2"}
        await put(client, "k", "in p1", headers=in_p1)
        await put(client, "k", "no project", headers=no_project)
        await put(client, "only-here", 1, headers=no_project)

        assert (await client.get("/memory/s1/k", headers=in_p1)).json()["value"] == "in p1"
        assert (await client.get("/memory/s1/k", headers=no_project)).json()["value"] == (
            "no project"
        )
        listed = (await client.get("/memory/s1", params={"surface_id": "s1"})).json()["items"]
        assert [i["key"] for i in listed] == ["k"]
        problem(await client.get("/memory/s1/only-here", headers=in_p1), 404)

    assert await stored(runtime, f"memory/{TENANT}/lab/{USER}/s1/p1") == 1
    assert await stored(runtime, f"memory/{TENANT}/lab/{USER}/s1") == 2


async def test_a_surface_not_granted_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await put(client, "k", 1, headers={"X-Surface-Id": "elsewhere"})

    problem(response, 403)
    assert await spine_events(runtime, "memory/") == 0


@pytest.mark.parametrize(
    "other",
    [{"user_id": "u2"}, {"tenant_id": "t2"}],
    ids=["another user", "another tenant"],
)
async def test_another_callers_keys_are_absent_to_them_and_untouched_by_them(
    client: httpx.AsyncClient, runtime: Runtime, mint: Mint, other: dict[str, str]
) -> None:
    await put(client, "secret", "mine")
    async with client_for(runtime, mint(**other)) as them:
        get = await them.get("/memory/s1/secret")
        listed = await them.get("/memory/s1")
        delete = await them.delete("/memory/s1/secret")
        pinned = await put(them, "secret", "theirs", headers={"If-Match": '"1"'})
        own = await put(them, "secret", "theirs")

    problem(get, 404)
    assert listed.json()["items"] == []
    problem(delete, 404)
    problem(pinned, 412)  # no key of theirs is at version 1
    assert (own.status_code, own.json()["version"]) == (200, 1)  # a session of their own
    mine = await client.get("/memory/s1/secret")
    assert (mine.json()["value"], mine.json()["version"]) == ("mine", 1)
    assert await stored(runtime) == 1


# -- input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, ("body", "value")),
        ({"value": 1, "ttl_seconds": 0}, ("body", "ttl_seconds")),
        ({"value": 1, "ttl_seconds": -5}, ("body", "ttl_seconds")),
        ({"value": 1, "ttl_seconds": 1.5}, ("body", "ttl_seconds")),
        ({"value": 1, "ttl_seconds": 2.0}, ("body", "ttl_seconds")),
        ({"value": 1, "ttl_seconds": True}, ("body", "ttl_seconds")),
        ({"value": 1, "ttl_seconds": "60"}, ("body", "ttl_seconds")),
        ({"value": 1, "extra": 2}, ("body", "extra")),
    ],
    ids=["no value", "zero", "negative", "fraction", "float", "bool", "string", "unknown"],
)
async def test_bad_input_answers_422_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], field: tuple[str, ...]
) -> None:
    response = await client.put("/memory/s1/k", json=body)

    assert field in field_paths(response)
    assert await spine_events(runtime, "memory/") == 0


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/memory/s1/a%2Fb", ("path", "key")),
        ("/memory/s1/has space", ("path", "key")),
        ("/memory/-bad/k", ("path", "session_id")),
        ("/memory/s1/" + "k" * 129, ("path", "key")),
    ],
    ids=["slash", "space", "leading dash", "too long"],
)
async def test_a_malformed_session_or_key_answers_422_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, url: str, field: tuple[str, ...]
) -> None:
    response = await client.put(url, json={"value": 1})

    assert field in field_paths(response)
    assert await spine_events(runtime, "memory/") == 0


async def test_a_value_over_256_kib_answers_413_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    fits = await put(client, "k", "x" * (256 * 1024 - 2))  # with its quotes: the limit
    too_big = await put(client, "k", "x" * (256 * 1024 - 1))

    assert fits.status_code == 200
    assert "262144" in problem(too_big, 413)["detail"]
    assert await stored(runtime) == 1


# -- time to live -------------------------------------------------------------------------


async def test_a_ttl_sets_expires_at_from_the_recorded_time(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await put(client, "k", 1, ttl=90)

    body = response.json()
    (event,) = await runtime.spine.read_stream(STREAM)
    assert body["ttl_seconds"] == 90
    assert body["expires_at"] == timestamp_text(event.recorded_at + timedelta(seconds=90))


async def test_the_routes_ttl_is_the_default_and_the_most_a_write_may_ask(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with (
        bootstrap(with_memory_route(settings, ttl_seconds=600), tmp_path) as runtime,
        client_for(runtime, mint()) as client,
    ):
        default = await put(client, "a", 1)
        explicit_null = await client.put("/memory/s1/b", json={"value": 1, "ttl_seconds": None})
        shorter = await put(client, "c", 1, ttl=60)
        at_most = await put(client, "d", 1, ttl=600)
        before = await spine_events(runtime)
        longer = await put(client, "e", 1, ttl=601)

        assert default.json()["ttl_seconds"] == 600
        assert explicit_null.json()["ttl_seconds"] == 600
        assert shorter.json()["ttl_seconds"] == 60
        assert at_most.json()["ttl_seconds"] == 600
        assert ("body", "ttl_seconds") in field_paths(longer)
        assert "600" in problem(longer, 422)["detail"]
        assert await spine_events(runtime) == before


async def test_a_retry_after_its_key_expired_answers_410_never_the_expired_value(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "once"}
    first = await put(client, "brief", "soon gone", ttl=1, headers=headers)
    await asyncio.sleep(1.05)
    before = await spine_events(runtime)

    retry = await put(client, "brief", "soon gone", ttl=1, headers=headers)

    assert first.status_code == 200
    assert "expired" in problem(retry, 410)["detail"]
    assert await spine_events(runtime) == before


async def test_an_expired_key_is_absent_at_once_and_a_rebuild_never_revives_it(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with (
        bootstrap(settings, tmp_path) as runtime,
        client_for(runtime, mint()) as client,
    ):
        short = await put(client, "short", "soon gone", ttl=1)
        kept = await put(client, "kept", "durable")
        long = await put(client, "long", "stays", ttl=3600)
        assert (short.status_code, kept.status_code, long.status_code) == (200, 200, 200)
        await asyncio.sleep(1.05)

        problem(await client.get("/memory/s1/short"), 404)
        listed = (await client.get("/memory/s1")).json()["items"]
        assert [i["key"] for i in listed] == ["kept", "long"]
        before = await spine_events(runtime)
        problem(await client.delete("/memory/s1/short"), 404)
        problem(await put(client, "short", "x", headers={"If-Match": '"1"'}), 412)
        assert await spine_events(runtime) == before

    # A rebuild: a fresh view (another table) filled from a scan of the same spine.
    rebuilt = with_memory_route(settings, name="session_memory_rebuilt")
    async with (
        bootstrap(rebuilt, tmp_path, run_projectors=False) as runtime,
        client_for(runtime, mint()) as client,
    ):
        assert (await client.get("/memory/s1/kept")).status_code == 404  # empty, truly fresh
        events = [e async for e in runtime.spine.scan(domain="memory")]
        assert await runtime.runners["memory"].apply(events) == 3

        problem(await client.get("/memory/s1/short"), 404)
        again = await client.get("/memory/s1/long")
        assert again.json()["expires_at"] == long.json()["expires_at"]  # not renewed
        listed = (await client.get("/memory/s1")).json()["items"]
        assert [i["key"] for i in listed] == ["kept", "long"]

        # once expired, the key may be set again as new
        fresh = await put(client, "short", "again", headers={"If-None-Match": "*"})
        assert (fresh.status_code, fresh.json()["version"]) == (202, 4)  # no projector runs


async def test_a_write_renews_the_expiry_and_a_durable_write_removes_it(
    client: httpx.AsyncClient,
) -> None:
    first = (await put(client, "k", 1, ttl=60)).json()
    renewed = (await put(client, "k", 1, ttl=60)).json()
    durable = (await put(client, "k", 1)).json()

    assert renewed["version"] == 2
    assert renewed["expires_at"] > first["expires_at"]
    assert (durable["ttl_seconds"], durable["expires_at"]) == (None, None)


# -- preconditions ----------------------------------------------------------------------


async def test_if_match_compares_the_keys_own_version(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await put(client, "a", 1)
    await put(client, "b", 1)  # the stream moves to 2; "a" stays at 1

    ok = await put(client, "a", 2, headers={"If-Match": '"1"'})
    stale = await put(client, "a", 3, headers={"If-Match": '"1"'})
    stale_delete = await client.delete("/memory/s1/a", headers={"If-Match": '"1"'})

    assert (ok.status_code, ok.json()["version"]) == (200, 3)
    problem(stale, 412)
    problem(stale_delete, 412)
    assert await stored(runtime) == 3
    assert (await client.get("/memory/s1/a")).json()["value"] == 2
    deleted = await client.delete("/memory/s1/a", headers={"If-Match": '"3"'})
    assert deleted.status_code == 200


@pytest.mark.parametrize("tag", ['W/"1"', '"01"', '"v1"'])
async def test_an_etag_that_is_not_the_keys_own_never_matches(
    client: httpx.AsyncClient, runtime: Runtime, tag: str
) -> None:
    await put(client, "k", 1)

    problem(await put(client, "k", 2, headers={"If-Match": tag}), 412)
    problem(await client.delete("/memory/s1/k", headers={"If-Match": tag}), 412)
    assert await stored(runtime) == 1


async def test_if_none_match_star_writes_only_an_absent_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    star = {"If-None-Match": "*"}

    created = await put(client, "k", 1, headers=star)
    again = await put(client, "k", 2, headers=star)
    delete = await client.delete("/memory/s1/k", headers=star)

    assert created.status_code == 200
    problem(again, 412)
    problem(delete, 412)
    assert await stored(runtime) == 1


async def test_if_match_star_writes_only_a_live_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    star = {"If-Match": "*"}

    missing = await put(client, "k", 1, headers=star)
    await put(client, "k", 1)
    present = await put(client, "k", 2, headers=star)

    problem(missing, 412)
    assert (present.status_code, present.json()["version"]) == (200, 2)


@pytest.mark.parametrize(
    "headers",
    [{"If-None-Match": '"1"'}, {"If-None-Match": "*", "If-Match": '"1"'}, {"If-Match": "1"}],
    ids=["etag in if-none-match", "both", "unquoted"],
)
async def test_malformed_preconditions_answer_422_and_write_nothing(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str]
) -> None:
    await put(client, "k", 1)

    problem(await put(client, "k", 2, headers=headers), 422)
    problem(await client.delete("/memory/s1/k", headers=headers), 422)
    assert await stored(runtime) == 1


# -- idempotency --------------------------------------------------------------------------


async def test_the_same_idempotency_key_twice_writes_once_and_answers_alike(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "op-1"}

    first = await put(client, "k", {"v": 1}, headers=headers)
    second = await put(client, "k", {"v": 1}, headers=headers)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert await stored(runtime) == 1


async def test_a_delete_retried_with_its_idempotency_key_answers_as_it_did(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await put(client, "k", 1)
    headers = {"Idempotency-Key": "del-1"}

    first = await client.delete("/memory/s1/k", headers=headers)
    retry = await client.delete("/memory/s1/k", headers=headers)

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert await stored(runtime) == 2


async def test_an_idempotency_key_reused_for_another_request_answers_409(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "once"}
    await put(client, "k", 1, headers=headers)

    other_value = await put(client, "k", 2, headers=headers)
    other_key = await put(client, "j", 1, headers=headers)
    a_delete = await client.delete("/memory/s1/k", headers=headers)

    for response in (other_value, other_key, a_delete):
        assert "Idempotency-Key" in problem(response, 409)["detail"]
    assert await stored(runtime) == 1


async def test_a_replayed_put_after_the_key_was_deleted_answers_410(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "made"}
    await put(client, "k", 1, headers=headers)
    await client.delete("/memory/s1/k")

    problem(await put(client, "k", 1, headers=headers), 410)


# -- concurrency --------------------------------------------------------------------------


async def test_concurrent_puts_with_the_same_if_match_let_exactly_one_win(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await put(client, "k", "start")

    responses = await asyncio.gather(
        *(put(client, "k", f"writer {i}", headers={"If-Match": '"1"'}) for i in range(2))
    )

    assert sorted(r.status_code for r in responses) == [200, 412]
    events = await runtime.spine.read_stream(STREAM)
    assert [e.seq for e in events] == [1, 2]
    (winner,) = [r for r in responses if r.status_code == 200]
    assert events[1].payload["value"] == winner.json()["value"]


async def test_ten_concurrent_puts_with_the_same_if_match_let_exactly_one_win(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await put(client, "k", "start")
    await put(client, "other", 1)

    responses = await asyncio.gather(
        *(put(client, "k", i, headers={"If-Match": '"1"'}) for i in range(10))
    )

    assert sorted(r.status_code for r in responses) == [200] + [412] * 9
    assert await stored(runtime) == 3


async def test_twenty_concurrent_puts_to_distinct_keys_of_one_session_all_succeed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses = await asyncio.gather(*(put(client, f"key-{i:02}", i) for i in range(20)))

    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    events = await runtime.spine.read_stream(STREAM)
    assert [e.seq for e in events] == list(range(1, 21))
    assert verify_chain(events) == 20
    for response in responses:
        body = response.json()
        assert response.headers["ETag"] == f'"{body["version"]}"'
        assert events[body["version"] - 1].payload["key"] == body["key"]
    listed = (await client.get("/memory/s1", params={"limit": 50})).json()["items"]
    assert [i["key"] for i in listed] == [f"key-{i:02}" for i in range(20)]


# -- deployment -------------------------------------------------------------------------


async def test_without_a_memory_store_route_the_service_refuses_to_start(
    settings: Settings, tmp_path: Path
) -> None:
    routes = {k: v for k, v in settings.routes.items() if k != "memory_store"}
    missing = settings.model_copy(update={"routes": routes})

    with pytest.raises(MissingRoutes, match="memory_store") as info:
        async with bootstrap(missing, tmp_path):
            pass
    assert info.value.kinds == ["memory_store"]


async def test_a_locked_database_answers_503_writes_nothing_and_the_service_recovers(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    sqlite_settings = settings.connections.sqlite.model_copy(update={"busy_timeout_ms": 200})
    connections = settings.connections.model_copy(update={"sqlite": sqlite_settings})
    locked = settings.model_copy(update={"connections": connections})
    async with bootstrap(locked, tmp_path) as runtime, client_for(runtime, mint()) as client:
        await put(client, "k", "before")
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            down_put = await put(client, "k", "during")
            down_delete = await client.delete("/memory/s1/k")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await stored(runtime) == 1
        assert (await client.get("/memory/s1/k")).json()["value"] == "before"
        up = await put(client, "k", "after")

    for down in (down_put, down_delete):
        assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert (up.status_code, up.json()["version"]) == (200, 2)


def test_the_cli_lists_keys_and_shows_one(
    settings: Settings, tmp_path: Path, mint: Mint, capsys: pytest.CaptureFixture[str]
) -> None:
    async def write() -> None:
        async with serving(settings, tmp_path, mint()) as client:
            assert (await put(client, "plan", {"step": 1}, ttl=3600)).status_code == 200
            assert (await put(client, "mood", "\x1b[31mred")).status_code == 200

    asyncio.run(write())
    data_dir = ["--data-dir", str(tmp_path)]

    assert main(["memory", "list", "--tenant", TENANT, "--session", "s1", *data_dir]) == 0
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header.split()[:6] == ["user", "session", "project", "key", "version", "expires_at"]
    assert sorted(r.split()[3] for r in rows) == ["mood", "plan"]
    assert "\x1b" not in out
    assert "[LAB]" in err

    show = ["memory", "show", "--tenant", TENANT, "--user", USER, "--session", "s1"]
    assert main([*show, "--project", PROJECT, "--key", "plan", *data_dir]) == 0
    out, _ = capsys.readouterr()
    fields = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert (fields["key"], fields["version"], fields["ttl_seconds"]) == ("plan", "1", "3600")
    assert fields["value"] == '{"step":1}'
    assert fields["stream"] == STREAM

    assert main([*show, "--key", "plan", *data_dir]) == 3  # no project: another session
    assert "not found" in capsys.readouterr().err


async def test_openapi_documents_the_memory_endpoints_headers_and_bodies(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    item = spec["paths"]["/memory/{session_id}/{key}"]

    for method in ("put", "delete"):
        headers = {p["name"].lower() for p in item[method]["parameters"] if p["in"] == "header"}
        assert {"if-match", "if-none-match", "idempotency-key"} <= headers, method
    queries = {p["name"] for p in item["get"]["parameters"] if p["in"] == "query"}
    assert {"surface_id", "project_id"} <= queries
    body = item["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/MemoryIn")
    assert item["get"]["security"] == [{"HTTPBearer": []}]
    assert "412" in item["put"]["responses"]
    assert "413" in item["put"]["responses"]


async def test_a_key_says_who_set_it_and_from_where(runtime: Runtime, mint: Mint) -> None:
    async with client_for(runtime, mint(kind="agent")) as agent:
        await agent.put("/memory/s1/plan", json={"value": 1}, headers={"X-Agent-Id": "planner"})
        got = (await agent.get("/memory/s1/plan")).json()

    assert (got["provenance"]["source"], got["provenance"]["agent_id"]) == ("agent", "planner")
