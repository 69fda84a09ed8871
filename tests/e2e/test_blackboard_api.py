"""The blackboard over HTTP, end to end: ``/blackboard/{project_id}/{run_id}[/{key}]``,
shared by everyone granted the project, and the spine beneath it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from routing.config import RouteOptions
from spine.errors import MissingRoutes
from tests.e2e.support import (
    PROJECT,
    SURFACE,
    TENANT,
    USER,
    AppClient,
    Mint,
    audit_events,
    client_for,
    close_refusal_intervals,
    field_paths,
    problem,
    spine_events,
)

RUN = "r1"
BOARD = f"/blackboard/{PROJECT}/{RUN}"
CREATE = {"If-None-Match": "*"}
KEY_FIELDS = {
    "project_id",
    "run_id",
    "key",
    "value",
    "version",
    "scope",
    "provenance",
    "timestamps",
}


def key_stream(key: str, run: str = RUN, project: str = PROJECT, tenant: str = TENANT) -> str:
    return f"blackboard/{tenant}/lab/{project}/{run}/{key}"


def at(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


async def put(
    client: httpx.AsyncClient, key: str, value: Any, headers: dict[str, str], board: str = BOARD
) -> httpx.Response:
    return await client.put(f"{board}/{key}", json={"value": value}, headers=headers)


async def created(client: httpx.AsyncClient, key: str, value: Any = "v") -> dict[str, Any]:
    response = await put(client, key, value, CREATE)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# -- create, read, replace, delete --------------------------------------------------------


async def test_if_none_match_star_creates_a_key_answering_201_with_etag_and_location(
    client: httpx.AsyncClient,
) -> None:
    response = await put(client, "plan", {"steps": [1, 2]}, CREATE)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body.keys() == KEY_FIELDS
    assert (body["project_id"], body["run_id"], body["key"]) == (PROJECT, RUN, "plan")
    assert (body["value"], body["version"]) == ({"steps": [1, 2]}, 1)
    assert body["scope"] == {
        "tenant_id": TENANT,
        "mode": "lab",
        "user_id": USER,
        "surface_id": SURFACE,
        "project_id": PROJECT,
    }
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"{BOARD}/plan"


async def test_get_returns_the_value_and_its_version_as_the_etag(
    client: httpx.AsyncClient,
) -> None:
    await created(client, "plan", [1, None, "x"])

    response = await client.get(f"{BOARD}/plan")

    assert response.status_code == 200
    assert (response.json()["value"], response.json()["version"]) == ([1, None, "x"], 1)
    assert response.headers["ETag"] == '"1"'


async def test_any_json_value_is_kept_as_given_null_included(client: httpx.AsyncClient) -> None:
    for i, value in enumerate([None, 0, -1.5, "", "text", True, [], {}, {"a": [{"b": None}]}]):
        await created(client, f"k{i}", value)
        assert (await client.get(f"{BOARD}/k{i}")).json()["value"] == value


async def test_put_with_the_current_if_match_replaces_the_value_and_bumps_the_version(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan", "first")

    response = await put(client, "plan", "second", at(1))

    assert response.status_code == 200, response.text
    assert (response.json()["value"], response.json()["version"]) == ("second", 2)
    assert response.headers["ETag"] == '"2"'
    events = await runtime.spine.read_stream(key_stream("plan"))
    assert [e.event_type for e in events] == ["blackboard.key_created", "blackboard.key_updated"]
    assert events[1].payload == {"value": "second"}


async def test_a_put_with_no_precondition_answers_428_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan")
    before = await spine_events(runtime)

    new = await put(client, "fresh", "v", {})
    existing = await put(client, "plan", "overwritten?", {})

    assert "If-Match" in problem(new, 428)["detail"]
    problem(existing, 428)
    assert await spine_events(runtime) == before
    assert (await client.get(f"{BOARD}/plan")).json()["value"] == "v"
    problem(await client.get(f"{BOARD}/fresh"), 404)


async def test_if_match_star_names_no_version_so_it_answers_428(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan")
    before = await spine_events(runtime)

    response = await put(client, "plan", "blind", {"If-Match": "*"})

    problem(response, 428)
    assert await spine_events(runtime) == before


async def test_a_stale_if_match_answers_412_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan", "first")
    await put(client, "plan", "second", at(1))
    before = await spine_events(runtime)

    stale = await put(client, "plan", "lost update", at(1))
    weak = await put(client, "plan", "weak", {"If-Match": 'W/"2"'})

    assert problem(stale, 412)["type"] == "urn:engines:problem:precondition-failed"
    problem(weak, 412)
    assert await spine_events(runtime) == before
    assert (await client.get(f"{BOARD}/plan")).json()["value"] == "second"


async def test_a_stale_if_match_fails_even_when_the_value_is_unchanged(
    client: httpx.AsyncClient,
) -> None:
    await created(client, "plan", "first")
    await put(client, "plan", "second", at(1))

    same = await put(client, "plan", "second", at(2))
    stale = await put(client, "plan", "second", at(1))

    assert (same.status_code, same.json()["version"]) == (200, 2)  # nothing appended
    problem(stale, 412)


async def test_if_none_match_star_on_a_key_that_exists_answers_412_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan", "mine")
    before = await spine_events(runtime)

    response = await put(client, "plan", "theirs", CREATE)

    problem(response, 412)
    assert await spine_events(runtime) == before
    assert (await client.get(f"{BOARD}/plan")).json()["value"] == "mine"


async def test_if_match_never_creates_a_key_so_an_absent_one_answers_404(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await put(client, "nope", "v", at(1))

    problem(response, 404)
    assert await spine_events(runtime, "blackboard/") == 0


async def test_delete_needs_if_match_and_a_stale_one_answers_412(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan")
    await put(client, "plan", "v2", at(1))
    before = await spine_events(runtime)

    bare = await client.delete(f"{BOARD}/plan")
    star = await client.delete(f"{BOARD}/plan", headers={"If-Match": "*"})
    stale = await client.delete(f"{BOARD}/plan", headers=at(1))

    assert "never deleted blindly" in problem(bare, 428)["detail"]
    assert "If-None-Match" not in problem(bare, 428)["detail"]  # no create to suggest
    problem(star, 428)
    assert problem(stale, 412)["current_version"] == 2
    assert await spine_events(runtime) == before
    assert (await client.get(f"{BOARD}/plan")).status_code == 200


async def test_delete_with_the_current_if_match_removes_the_key_from_reads_and_the_list(
    client: httpx.AsyncClient,
) -> None:
    await created(client, "plan")

    response = await client.delete(f"{BOARD}/plan", headers=at(1))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "project_id": PROJECT,
        "run_id": RUN,
        "key": "plan",
        "version": 2,
        "deleted": True,
    }
    problem(await client.get(f"{BOARD}/plan"), 404)
    assert (await client.get(BOARD)).json()["items"] == []
    problem(await put(client, "plan", "back?", at(2)), 404)  # If-Match never recreates


async def test_a_deleted_key_is_created_again_and_its_versions_keep_counting(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan", "first life")
    await client.delete(f"{BOARD}/plan", headers=at(1))

    again = await put(client, "plan", "second life", CREATE)

    assert again.status_code == 201, again.text
    assert (again.json()["value"], again.json()["version"]) == ("second life", 3)
    assert again.headers["ETag"] == '"3"'  # never "1" again: an old ETag cannot match
    problem(await put(client, "plan", "stale", at(1)), 412)
    events = await runtime.spine.read_stream(key_stream("plan"))
    assert [e.event_type for e in events] == [
        "blackboard.key_created",
        "blackboard.key_deleted",
        "blackboard.key_created",
    ]


async def test_the_history_keeps_every_version_and_a_past_version_reads_as_it_was(
    client: httpx.AsyncClient,
) -> None:
    await created(client, "plan", "a")
    await put(client, "plan", "b", at(1))
    await client.delete(f"{BOARD}/plan", headers=at(2))
    await put(client, "plan", "c", CREATE)

    history = await client.get(f"{BOARD}/plan/versions")
    first = await client.get(f"{BOARD}/plan", params={"version": 1})

    assert history.status_code == 200, history.text
    entries = [(e["version"], e["value"], e["deleted"]) for e in history.json()["items"]]
    assert entries == [(1, "a", False), (2, "b", False), (3, None, True), (4, "c", False)]
    assert (first.json()["value"], first.headers["ETag"]) == ("a", '"1"')


# -- the list -------------------------------------------------------------------------------


async def test_the_list_holds_a_runs_live_keys_in_key_order_with_values_and_versions(
    client: httpx.AsyncClient,
) -> None:
    for key in ("c", "a", "b", "gone"):
        await created(client, key, f"value of {key}")
    await put(client, "b", "b again", at(1))
    await client.delete(f"{BOARD}/gone", headers=at(1))
    await put(client, "elsewhere", "v", CREATE, board=f"/blackboard/{PROJECT}/r2")

    response = await client.get(BOARD)

    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["key"], i["version"], i["value"]) for i in items] == [
        ("a", 1, "value of a"),
        ("b", 2, "b again"),
        ("c", 1, "value of c"),
    ]
    assert {i["run_id"] for i in items} == {RUN}
    assert response.json()["next_cursor"] is None


async def test_the_list_pages_through_every_key_once(client: httpx.AsyncClient) -> None:
    keys = [f"k{i:02}" for i in range(7)]
    for key in reversed(keys):
        await created(client, key)

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(BOARD, params=params)).json()
        seen += [i["key"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == keys


# -- the value's size ------------------------------------------------------------------------


async def test_a_value_at_the_routes_limit_is_written_and_one_byte_over_answers_413(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    limit = settings.routes["blackboard_store"].options.max_value_bytes
    assert limit == 65536
    fits = "x" * (limit - 2)  # a JSON string: two quotes around it

    ok = await put(client, "big", fits, CREATE)
    before = await spine_events(runtime)
    over_new = await put(client, "bigger", fits + "x", CREATE)
    over_update = await put(client, "big", fits + "x", at(1))

    assert ok.status_code == 201, ok.text
    assert str(limit) in problem(over_new, 413)["detail"]
    problem(over_update, 413)
    assert await spine_events(runtime) == before
    assert (await client.get(f"{BOARD}/big")).json()["version"] == 1


async def test_without_a_limit_on_the_route_the_fixed_ceiling_of_256_kib_applies(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    routes = dict(settings.routes)
    routes["blackboard_store"] = routes["blackboard_store"].model_copy(
        update={"options": RouteOptions()}
    )
    unlimited = settings.model_copy(update={"routes": routes})
    async with bootstrap(unlimited, tmp_path) as rt, client_for(rt, mint()) as client:
        fits = await put(client, "a", "x" * (256 * 1024 - 2), CREATE)
        over = await put(client, "b", "x" * (256 * 1024 - 1), CREATE)
        written = await spine_events(rt, "blackboard/")

    assert fits.status_code == 201, fits.text
    assert str(256 * 1024) in problem(over, 413)["detail"]
    assert written == 1


async def test_a_missing_blackboard_store_route_fails_at_start_up(
    settings: Settings, tmp_path: Path
) -> None:
    routes = {k: v for k, v in settings.routes.items() if k != "blackboard_store"}
    with pytest.raises(MissingRoutes) as info:
        async with bootstrap(settings.model_copy(update={"routes": routes}), tmp_path):
            pass

    assert info.value.kinds == ["blackboard_store"]


# -- who sees what ----------------------------------------------------------------------------


async def test_two_users_granted_the_project_see_and_edit_each_others_keys(
    runtime: Runtime, client: httpx.AsyncClient, mint: Mint
) -> None:
    await created(client, "plan", "by u1")
    async with client_for(runtime, mint(user_id="u2")) as u2:
        seen = await u2.get(f"{BOARD}/plan")
        edited = await put(u2, "plan", "by u2", at(1))
        theirs = await created(u2, "notes", "from u2")

    assert seen.status_code == 200
    assert seen.json()["value"] == "by u1"
    assert edited.status_code == 200, edited.text
    assert edited.json()["scope"]["user_id"] == "u2"  # the record names its last writer
    listed = (await client.get(BOARD)).json()["items"]
    assert [(i["key"], i["value"], i["scope"]["user_id"]) for i in listed] == [
        ("notes", "from u2", "u2"),
        ("plan", "by u2", "u2"),
    ]
    assert theirs["scope"]["user_id"] == "u2"
    problem(await put(client, "plan", "lost update", at(1)), 412)
    events = await runtime.spine.read_stream(key_stream("plan"))
    assert [e.user_id for e in events] == [USER, "u2"]


async def test_a_user_granted_the_project_on_another_surface_shares_the_same_keys(
    runtime: Runtime, client: httpx.AsyncClient, mint: Mint
) -> None:
    await created(client, "plan", "from s1")
    token = mint(user_id="u2", surfaces=["canvas"], projects={"canvas": [PROJECT]})
    async with client_for(runtime, token) as u2:
        seen = await u2.get(f"{BOARD}/plan")
        edited = await put(u2, "plan", "from canvas", at(1))

    assert seen.json()["value"] == "from s1"
    assert edited.json()["scope"]["surface_id"] == "canvas"


async def test_the_surface_granting_the_project_is_taken_when_the_token_has_several(
    runtime: Runtime, mint: Mint
) -> None:
    token = mint(surfaces=["chat", "canvas"], projects={"chat": ["other"], "canvas": [PROJECT]})
    async with client_for(runtime, token) as client:
        response = await put(client, "plan", "v", CREATE)

    assert response.status_code == 201, response.text
    assert response.json()["scope"]["surface_id"] == "canvas"


async def test_a_user_not_granted_the_project_reads_404_and_writes_403_naming_it(
    runtime: Runtime, client: AppClient, mint: Mint
) -> None:
    await created(client, "plan", "secret")
    before = await spine_events(runtime, "blackboard/")
    async with client_for(runtime, mint(user_id="u9", projects=["p2"])) as outsider:
        reads = [
            await outsider.get(f"{BOARD}/plan"),
            await outsider.get(f"{BOARD}/plan", params={"version": 1}),
            await outsider.get(f"{BOARD}/plan/versions"),
            await outsider.get(BOARD),
        ]
        writes = [
            await put(outsider, "plan", "mine now", at(1)),
            await put(outsider, "new", "v", CREATE),
            await outsider.delete(f"{BOARD}/plan", headers=at(1)),
        ]
        await close_refusal_intervals(outsider)

    for response in reads:
        assert "secret" not in problem(response, 404)["detail"]
    for response in writes:
        assert f"project_id {PROJECT!r}" in problem(response, 403)["detail"]
    assert await spine_events(runtime, "blackboard/") == before
    assert any(e.payload.get("reason_code") == "ScopeMismatch" for e in await audit_events(runtime))


async def test_another_tenant_never_sees_a_key_even_with_the_same_project_and_run(
    runtime: Runtime, client: httpx.AsyncClient, mint: Mint
) -> None:
    await created(client, "plan", "tenant one's")
    async with client_for(runtime, mint(tenant_id="t2", user_id="u1")) as other:
        read = await other.get(f"{BOARD}/plan")
        listed = await other.get(BOARD)
        history = await other.get(f"{BOARD}/plan/versions")
        theirs = await put(other, "plan", "tenant two's", CREATE)

    problem(read, 404)
    assert listed.json()["items"] == []
    problem(history, 404)
    assert theirs.status_code == 201  # a board of its own: a different stream
    assert theirs.json()["scope"]["tenant_id"] == "t2"
    assert (await client.get(f"{BOARD}/plan")).json()["value"] == "tenant one's"
    assert len(await runtime.spine.read_stream(key_stream("plan", tenant="t2"))) == 1


# -- what the spine records -----------------------------------------------------------------------


async def test_every_event_carries_tenant_mode_writer_surface_project_and_provenance(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {**CREATE, "X-Agent-Id": "planner", "X-Trace-Id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    await client.put(
        f"{BOARD}/plan",
        json={"value": 1, "provenance": {"run_id": "agent-run-7", "step_id": "s3"}},
        headers=headers,
    )
    await client.delete(f"{BOARD}/plan", headers={**at(1), "X-Agent-Id": "cleaner"})

    created_event, deleted_event = await runtime.spine.read_stream(key_stream("plan"))
    for event in (created_event, deleted_event):
        assert (event.tenant_id, event.mode, event.user_id) == (TENANT, "lab", USER)
        assert (event.surface_id, event.project_id) == (SURFACE, PROJECT)
    assert (created_event.agent_id, created_event.run_id, created_event.step_id) == (
        "planner",
        "agent-run-7",
        "s3",
    )
    assert created_event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert deleted_event.agent_id == "cleaner"


async def test_an_idempotency_key_makes_a_retried_put_answer_as_the_first_did(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan", "first")
    headers = {**at(1), "Idempotency-Key": "retry-me"}

    first = await put(client, "plan", "second", headers)
    retry = await put(client, "plan", "second", headers)
    reused = await put(client, "plan", "third", headers)

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json()["version"] == first.json()["version"] == 2
    assert "Idempotency-Key" in problem(reused, 409)["detail"]
    assert len(await runtime.spine.read_stream(key_stream("plan"))) == 2


async def test_a_retried_create_answers_as_the_create_did(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # a create must say If-None-Match: * ; its retry says it too, and is the same create
    headers = {**CREATE, "Idempotency-Key": "make-plan"}

    first = await put(client, "plan", "v", headers)
    retry = await put(client, "plan", "v", headers)
    other = await put(client, "plan", "v", {**CREATE, "Idempotency-Key": "another"})

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    problem(other, 412)  # not a retry: the key exists
    assert len(await runtime.spine.read_stream(key_stream("plan"))) == 1


async def test_a_retried_put_of_a_key_deleted_since_answers_410(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "plan", "first")
    headers = {**at(1), "Idempotency-Key": "retry-me"}
    await put(client, "plan", "second", headers)
    await client.delete(f"{BOARD}/plan", headers=at(2))
    before = await spine_events(runtime)

    retry = await put(client, "plan", "second", headers)

    problem(retry, 410)
    assert await spine_events(runtime) == before


async def test_openapi_documents_the_preconditions_and_their_statuses(
    anonymous: httpx.AsyncClient,
) -> None:
    spec = (await anonymous.get("/openapi.json")).json()
    key = spec["paths"]["/blackboard/{project_id}/{run_id}/{key}"]

    put_headers = {p["name"].lower() for p in key["put"]["parameters"] if p["in"] == "header"}
    delete_headers = {p["name"].lower() for p in key["delete"]["parameters"] if p["in"] == "header"}
    assert {"if-match", "if-none-match", "idempotency-key"} <= put_headers
    assert "if-match" in delete_headers
    assert {"201", "412", "413", "428"} <= key["put"]["responses"].keys()
    assert {"412", "428"} <= key["delete"]["responses"].keys()


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "delete"])
async def test_a_key_holding_an_encoded_slash_answers_422_naming_key(
    client: httpx.AsyncClient, runtime: Runtime, method: str
) -> None:
    url = httpx.URL("http://test").copy_with(raw_path=f"{BOARD}/a%2Fb".encode())

    response = await client.request(method, url, json={"value": 1}, headers=CREATE)

    assert ("path", "key") in field_paths(response)
    assert await spine_events(runtime) == 0


@pytest.mark.parametrize(
    "body", [{}, {"value": 1, "other": 2}, {"value": 1, "surface_id": "s1"}, [1]]
)
async def test_a_body_without_exactly_a_value_answers_422_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: Any
) -> None:
    response = await client.put(f"{BOARD}/plan", json=body, headers=CREATE)

    problem(response, 422)
    assert await spine_events(runtime) == 0


async def test_a_bad_project_or_run_id_answers_422(client: httpx.AsyncClient) -> None:
    bad_run = await client.get(f"/blackboard/{PROJECT}/bad run")
    bad_project = await put(client, "k", 1, CREATE, board=f"/blackboard/-p/{RUN}")

    assert ("path", "run_id") in field_paths(bad_run)
    assert ("path", "project_id") in field_paths(bad_project)


# -- concurrency ------------------------------------------------------------------------------


async def test_of_20_concurrent_creates_of_one_key_exactly_one_wins(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses = await asyncio.gather(
        *(put(client, "race", f"writer {i}", CREATE) for i in range(20))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [412] * 19, [r.text for r in responses]
    events = await runtime.spine.read_stream(key_stream("race"))
    assert [e.event_type for e in events] == ["blackboard.key_created"]
    (winner,) = [r for r in responses if r.status_code == 201]
    assert events[0].payload == {"value": winner.json()["value"]}


async def test_of_20_concurrent_puts_with_the_same_if_match_exactly_one_wins(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await created(client, "race", "start")

    responses = await asyncio.gather(
        *(put(client, "race", f"writer {i}", at(1)) for i in range(20))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 19, [r.text for r in responses]
    events = await runtime.spine.read_stream(key_stream("race"))
    assert [e.seq for e in events] == [1, 2]
    (winner,) = [r for r in responses if r.status_code == 200]
    assert events[1].payload == {"value": winner.json()["value"]}


async def test_20_concurrent_creates_of_distinct_keys_all_succeed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses = await asyncio.gather(*(put(client, f"k{i:02}", i, CREATE) for i in range(20)))

    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    listed = (await client.get(BOARD)).json()["items"]
    assert [(i["key"], i["value"]) for i in listed] == [(f"k{i:02}", i) for i in range(20)]
    assert await spine_events(runtime, "blackboard/") == 20


# -- the store down -------------------------------------------------------------------------


async def test_a_locked_database_answers_503_writes_nothing_and_the_service_recovers(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    sqlite_settings = settings.connections.sqlite.model_copy(update={"busy_timeout_ms": 200})
    connections = settings.connections.model_copy(update={"sqlite": sqlite_settings})
    locked = settings.model_copy(update={"connections": connections})
    async with bootstrap(locked, tmp_path) as runtime, client_for(runtime, mint()) as client:
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            down = await put(client, "plan", "v", CREATE)
        finally:
            other.execute("ROLLBACK")
            other.close()
        written = await spine_events(runtime, "blackboard/")
        up = await put(client, "plan", "v", CREATE)

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert written == 0
    assert up.status_code == 201, up.text


# -- the operator's commands ----------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, tmp_path: Path, mint: Mint) -> Path:
    """A data directory holding one key written twice and one deleted."""

    async def setup() -> None:
        async with bootstrap(settings, tmp_path) as rt, client_for(rt, mint()) as client:
            await created(client, "plan", "first")
            await put(client, "plan", "second", at(1))
            await created(client, "gone")
            await client.delete(f"{BOARD}/gone", headers=at(1))

    asyncio.run(setup())
    return tmp_path


def test_engines_blackboard_list_show_and_history(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(served)]
    path = [PROJECT, RUN, "plan"]

    assert main(["blackboard", "list", "--tenant", TENANT, *data]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert main(["blackboard", "show", "--tenant", TENANT, *path, *data]) == 0
    shown = capsys.readouterr().out
    assert main(["blackboard", "history", "--tenant", TENANT, *path, *data]) == 0
    history = capsys.readouterr().out.splitlines()

    assert listed[0].split()[:4] == ["project_id", "run_id", "key", "version"]
    assert [row.split()[:4] for row in listed[1:]] == [[PROJECT, RUN, "plan", "2"]]
    fields = dict(line.split(maxsplit=1) for line in shown.splitlines())
    assert (fields["version"], fields["data.value"]) == ("2", "second")
    assert [row.split()[2:4] for row in history[1:]] == [["plan", "1"], ["plan", "2"]]


def test_engines_blackboard_show_of_an_absent_key_fails(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["blackboard", "show", "--tenant", TENANT, PROJECT, RUN, "nope", "--data-dir", str(served)]
    )

    assert code != 0
    assert "not found" in capsys.readouterr().err


async def test_a_key_with_every_id_at_its_longest_is_written_read_and_kept_in_history(
    runtime: Runtime, mint: Mint
) -> None:
    # tenant, project, run and key of 128 characters make a stream id longer than a view
    # record's key may be: the view must still hold the key and every version
    tenant, project, run, key = ("t" * 128, "p" * 128, "r" * 128, "k" * 128)
    token = mint(tenant_id=tenant, projects=[project])
    url = f"/blackboard/{project}/{run}/{key}"
    async with client_for(runtime, token) as client:
        made = await client.put(url, json={"value": 0}, headers=CREATE)
        for version in range(1, 11):
            changed = await client.put(url, json={"value": version}, headers=at(version))
            assert changed.status_code == 200, changed.text
        latest = await client.get(url)
        first = await client.get(url, params={"version": 1})
        history = await client.get(f"{url}/versions", params={"limit": 20})
        listed = await client.get(f"/blackboard/{project}/{run}")

    assert made.status_code == 201, made.text
    assert (latest.json()["value"], latest.headers["ETag"]) == (10, '"11"')
    assert first.json()["value"] == 0
    assert [v["version"] for v in history.json()["items"]] == list(range(1, 12))
    assert [k["key"] for k in listed.json()["items"]] == [key]
