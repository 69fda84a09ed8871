"""Flows, graphs and overlays over HTTP, end to end on the lab backend: one suite, run
for each document kind (they share the versioned-entity core)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from spine.errors import MissingRoutes
from tests.e2e.support import (
    PROJECT,
    SURFACE,
    TENANT,
    USER,
    Mint,
    client_for,
    problem,
    spine_events,
)

KINDS = ["/flows", "/graphs", "/overlays"]


@pytest.fixture(params=KINDS)
def base(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    return path


def body(base: str, blob: Any = None, **extra: Any) -> dict[str, Any]:
    """A valid body for ``base`` (an overlay also names its app)."""
    fields: dict[str, Any] = {"json_blob": {"nodes": [1, 2]} if blob is None else blob}
    if base == "/overlays":
        fields["app_id"] = "app1"
    return {**fields, **extra}


async def create(client: httpx.AsyncClient, base: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(base, json=body(base, **extra))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_answers_201_with_the_record_its_etag_and_location(
    client: httpx.AsyncClient, base: str
) -> None:
    response = await client.post(base, json=body(base, {"a": [1, "x", None]}))

    assert response.status_code == 201, response.text
    doc = response.json()
    assert doc["json_blob"] == {"a": [1, "x", None]}
    assert doc["version"] == 1
    assert doc["scope"] == {
        "tenant_id": TENANT,
        "mode": "lab",
        "user_id": USER,
        "surface_id": SURFACE,
        "project_id": PROJECT,
    }
    assert doc["timestamps"]["created_at"] == doc["timestamps"]["updated_at"]
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"{base}/{doc['id']}"
    got = await client.get(response.headers["Location"])
    assert (got.status_code, got.json()) == (200, doc)


async def test_update_moves_the_version_and_every_version_stays_readable(
    client: httpx.AsyncClient, base: str
) -> None:
    doc = await create(client, base, blob={"v": 1})
    url = f"{base}/{doc['id']}"

    updated = await client.put(url, json=body(base, {"v": 2}), headers={"If-Match": '"1"'})
    again = await client.put(url, json=body(base, {"v": 3}))

    assert (updated.status_code, updated.json()["version"], updated.headers["ETag"]) == (
        200,
        2,
        '"2"',
    )
    assert again.json()["json_blob"] == {"v": 3}
    first = await client.get(url, params={"version": 1})
    assert (first.status_code, first.json()["json_blob"], first.headers["ETag"]) == (
        200,
        {"v": 1},
        '"1"',
    )
    history = (await client.get(f"{url}/versions")).json()
    assert [
        (v["version"], v["json_blob"], v["event_type"].split(".")[1]) for v in history["items"]
    ] == [
        (1, {"v": 1}, "created"),
        (2, {"v": 2}, "updated"),
        (3, {"v": 3}, "updated"),
    ]
    assert (await client.get(url, params={"version": 4})).status_code == 404


async def test_a_stale_if_match_is_412_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"
    await client.put(url, json=body(base, {"v": 2}))
    before = await spine_events(runtime)

    stale = await client.put(url, json=body(base, {"v": 3}), headers={"If-Match": '"1"'})
    weak = await client.put(url, json=body(base, {"v": 3}), headers={"If-Match": 'W/"2"'})

    assert problem(stale, 412)["current_version"] == 2  # what to name instead
    assert stale.headers["ETag"] == '"2"'
    assert "never matches" in problem(weak, 412)["detail"]
    assert await spine_events(runtime) == before


async def test_concurrent_updates_with_one_if_match_let_exactly_one_win(
    client: httpx.AsyncClient, runtime: Runtime, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"

    answers = await asyncio.gather(
        *(
            client.put(url, json=body(base, {"w": i}), headers={"If-Match": '"1"'})
            for i in range(10)
        )
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [412] * 9
    assert await spine_events(runtime, base.strip("/") + "/") == 2


async def test_delete_drops_it_from_reads_and_lists_and_keeps_its_history(
    client: httpx.AsyncClient, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"

    deleted = await client.delete(url, headers={"If-Match": '"1"'})

    assert (deleted.status_code, deleted.json()) == (
        200,
        {"id": doc["id"], "version": 2, "deleted": True},
    )
    problem(await client.get(url), 404)
    problem(await client.put(url, json=body(base)), 404)
    problem(await client.delete(url), 404)
    assert (await client.get(base)).json()["items"] == []
    history = (await client.get(f"{url}/versions")).json()["items"]
    assert [(v["version"], v["deleted"]) for v in history] == [(1, False), (2, True)]
    assert (await client.get(url, params={"version": 1})).json()["json_blob"] == doc["json_blob"]


async def test_a_document_is_absent_to_another_user_and_another_tenant(
    client: httpx.AsyncClient, runtime: Runtime, mint: Mint, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"
    before = await spine_events(runtime)
    for token in (mint(user_id="u2"), mint(tenant_id="t2")):
        async with client_for(runtime, token) as other:
            problem(await other.get(url), 404)
            problem(await other.get(url, params={"version": 1}), 404)
            problem(await other.get(f"{url}/versions"), 404)
            problem(await other.put(url, json=body(base, {"x": 1})), 404)
            problem(await other.delete(url), 404)
            assert (await other.get(base)).json()["items"] == []
    assert await spine_events(runtime) == before


async def test_a_document_outside_the_callers_grants_is_absent(
    client: httpx.AsyncClient, runtime: Runtime, mint: Mint, base: str
) -> None:
    doc = await create(client, base)
    narrower = mint(projects=["p2"])  # same user, another project
    async with client_for(runtime, narrower) as other:
        problem(await other.get(f"{base}/{doc['id']}"), 404)
        assert (await other.get(base)).json()["items"] == []


async def test_the_list_pages_newest_first_and_filters_by_project_and_surface(
    runtime: Runtime, mint: Mint, base: str
) -> None:
    token = mint(surfaces=["s1", "s2"], projects=["p1", "p2"])
    async with client_for(runtime, token) as client:
        made = []
        for i in range(5):
            surface, project = ("s1", "p1") if i % 2 == 0 else ("s2", "p2")
            made.append(
                await create(client, base, blob={"i": i}, surface_id=surface, project_id=project)
            )
        first = (await client.get(base, params={"limit": 2})).json()
        second = (
            await client.get(base, params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        third = (
            await client.get(base, params={"limit": 2, "cursor": second["next_cursor"]})
        ).json()
        p2 = (await client.get(base, params={"project_id": "p2"})).json()
        s1 = (await client.get(base, params={"surface_id": "s1"})).json()

    walked = [d["id"] for page in (first, second, third) for d in page["items"]]
    assert walked == [d["id"] for d in reversed(made)]
    assert third["next_cursor"] is None
    assert {d["json_blob"]["i"] for d in p2["items"]} == {1, 3}
    assert {d["json_blob"]["i"] for d in s1["items"]} == {0, 2, 4}


async def test_overlays_are_filtered_by_app_and_their_app_is_fixed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    one = await create(client, "/overlays", app_id="app1")
    await create(client, "/overlays", app_id="app2")
    before = await spine_events(runtime)

    listed = (await client.get("/overlays", params={"app_id": "app1"})).json()["items"]
    moved = await client.put(f"/overlays/{one['id']}", json={"json_blob": 1, "app_id": "app2"})

    assert [d["id"] for d in listed] == [one["id"]]
    assert ("body", "app_id") in [tuple(e["loc"]) for e in problem(moved, 422)["errors"]]
    assert await spine_events(runtime) == before
    problem(await client.post("/overlays", json={"json_blob": 1}), 422)  # app_id is required


async def test_an_idempotent_create_answers_the_same_document_and_refuses_another_body(
    client: httpx.AsyncClient, runtime: Runtime, base: str
) -> None:
    headers = {"Idempotency-Key": "req-1"}
    first = await client.post(base, json=body(base, {"v": 1}), headers=headers)
    again = await client.post(base, json=body(base, {"v": 1}), headers=headers)
    events = await spine_events(runtime)
    other = await client.post(base, json=body(base, {"v": 2}), headers=headers)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert "Idempotency-Key" in problem(other, 409)["detail"]
    assert await spine_events(runtime) == events == 1
    await client.delete(f"{base}/{first.json()['id']}")
    problem(await client.post(base, json=body(base, {"v": 1}), headers=headers), 410)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"json_blob": {"a": 1}, "extra": True},
        {"json_blob": "x" * 300_000},
        {"json_blob": 1, "surface_id": "not granted"},
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, base: str, bad: dict[str, Any]
) -> None:
    if base == "/overlays" and bad:
        bad = {**bad, "app_id": "app1"}
    response = await client.post(base, json=bad)

    assert response.status_code in (403, 422), response.text
    problem(response, response.status_code)
    assert await spine_events(runtime) == 0


async def test_each_write_carries_its_provenance_and_identity_to_the_spine(
    client: httpx.AsyncClient, runtime: Runtime, base: str
) -> None:
    response = await client.post(
        base,
        json=body(base, provenance={"agent_id": "planner", "run_id": "r1", "step_id": "s3"}),
        headers={"X-Trace-Id": "trace-1"},
    )
    assert response.status_code == 201, response.text
    (event,) = [e async for e in runtime.spine.scan(domain=base.strip("/"))]

    assert (event.tenant_id, event.mode, event.user_id, event.surface_id, event.project_id) == (
        TENANT,
        "lab",
        USER,
        SURFACE,
        PROJECT,
    )
    assert (event.agent_id, event.run_id, event.step_id, event.trace_id, event.source) == (
        "planner",
        "r1",
        "s3",
        "trace-1",
        "ui",
    )
    assert "provenance" not in event.payload


async def test_a_locked_database_answers_503_writes_nothing_and_the_service_recovers(
    settings: Settings, tmp_path: Path, mint: Mint, base: str
) -> None:
    sqlite_settings = settings.connections.sqlite.model_copy(update={"busy_timeout_ms": 200})
    connections = settings.connections.model_copy(update={"sqlite": sqlite_settings})
    locked = settings.model_copy(update={"connections": connections})
    async with bootstrap(locked, tmp_path) as runtime, client_for(runtime, mint()) as client:
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            down = await client.post(base, json=body(base))
        finally:
            other.execute("ROLLBACK")
            other.close()
        written = await spine_events(runtime)
        up = await client.post(base, json=body(base))

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert down.headers["Retry-After"] == "1"
    assert written == 0
    assert up.status_code == 201


@pytest.mark.parametrize("kind", ["flow_store", "graph_store", "overlay_store"])
async def test_a_missing_route_for_the_store_refuses_to_start(tmp_path: Path, kind: str) -> None:
    settings = load_settings(None)[0]
    routes = {k: v for k, v in settings.routes.items() if k != kind}
    without = settings.model_copy(update={"routes": routes})

    with pytest.raises(MissingRoutes) as caught:
        async with bootstrap(without, tmp_path):
            pass
    assert kind in str(caught.value)


async def cli(argv: list[str]) -> int:
    """The CLI, run beside the service (as an operator would, in another process)."""
    return await asyncio.to_thread(main, argv)


async def test_the_cli_lists_shows_and_pages_the_history_of_a_document(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = await create(client, "/flows", blob={"v": 1})
    await client.put(f"/flows/{doc['id']}", json={"json_blob": {"v": 2}})
    other = await create(client, "/flows", blob={"v": 9})
    await client.delete(f"/flows/{other['id']}")
    await runtime.catch_up()
    data_dir = ["--data-dir", str(tmp_path)]

    assert await cli(["flows", "list", "--tenant", TENANT, *data_dir]) == 0
    listed = capsys.readouterr().out.splitlines()
    show = ["flows", "show", doc["id"], "--tenant", TENANT, "--format", "json", *data_dir]
    assert await cli(show) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert await cli(["flows", "history", doc["id"], "--tenant", TENANT, *data_dir]) == 0
    history = capsys.readouterr().out.splitlines()
    missing = await cli(["flows", "show", "nope", "--tenant", TENANT, *data_dir])

    assert listed[0].split()[:2] == ["id", "version"]
    assert [row.split()[:2] for row in listed[1:]] == [[doc["id"], "2"]]  # the deleted one is gone
    assert (shown["version"], shown["data"]["json_blob"]) == (2, {"v": 2})
    assert [row.split()[:2] for row in history[1:]] == [[doc["id"], "1"], [doc["id"], "2"]]
    assert missing != 0
    assert "not found" in capsys.readouterr().err
    assert await cli(["flows", "list", "--tenant", "a/b", *data_dir]) == 3
    assert "invalid option" in capsys.readouterr().err  # not a traceback


async def test_every_conditional_header_a_write_is_sent_is_honoured_never_ignored(
    client: httpx.AsyncClient, runtime: Runtime, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"
    before = await spine_events(runtime)

    put = await client.put(url, json=body(base, {"v": 2}), headers={"If-None-Match": "*"})
    delete = await client.delete(url, headers={"If-None-Match": "*"})
    post = await client.post(base, json=body(base), headers={"If-Match": '"1"'})

    problem(put, 412)  # it exists
    problem(delete, 412)
    problem(post, 412)  # a new document has no version to match
    # a PUT never creates: not a document with an id the client picks, under any header
    chosen = await client.put(f"{base}/chosen-id", json=body(base), headers={"If-None-Match": "*"})
    problem(chosen, 404)
    assert await spine_events(runtime) == before
    assert (await client.get(url)).json()["version"] == 1


async def test_a_history_cursor_does_not_open_a_document_the_caller_may_not_see(
    client: httpx.AsyncClient, runtime: Runtime, mint: Mint, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"
    await client.put(url, json=body(base, {"v": 2}))
    cursor = (await client.get(f"{url}/versions", params={"limit": 1})).json()["next_cursor"]
    assert cursor is not None

    for token in (mint(projects=["p2"]), mint(user_id="u2")):
        async with client_for(runtime, token) as other:
            problem(await other.get(f"{url}/versions", params={"cursor": cursor}), 404)
    problem(await client.get(f"{base}/nope/versions", params={"cursor": cursor}), 404)


async def test_a_query_parameter_given_twice_is_refused_not_resolved(
    client: httpx.AsyncClient, base: str
) -> None:
    doc = await create(client, base)
    url = f"{base}/{doc['id']}"

    for query in ("version=1&version=2", "limit=1&limit=500", "cursor=a&cursor=b"):
        target = f"{url}?{query}" if "version" in query else f"{base}?{query}"
        assert "given more than once" in problem(await client.get(target), 400)["detail"]


async def test_spine_read_verify_catches_a_stream_whose_first_event_was_removed(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = await create(client, "/flows", blob={"v": 1})
    for v in (2, 3):
        await client.put(f"/flows/{doc['id']}", json={"json_blob": {"v": v}})
    stream = f"flows/{TENANT}/lab/{doc['id']}"
    data_dir = ["--data-dir", str(tmp_path)]
    assert await cli(["spine", "read", stream, "--verify", *data_dir]) == 0
    conn = sqlite3.connect(tmp_path / "engines.db")
    with conn:  # tampering behind the service's back
        conn.execute("DROP TRIGGER spine_events_no_delete")
        conn.execute("DELETE FROM spine_events WHERE stream_id = ? AND seq = 1", (stream,))
    conn.close()
    capsys.readouterr()

    code = await cli(["spine", "read", stream, "--verify", *data_dir])

    assert code == 4
    assert "seq 1 is missing (the next stored is seq 2)" in capsys.readouterr().err


async def test_a_record_and_each_version_say_who_wrote_them_and_from_where(
    runtime: Runtime, mint: Mint, base: str
) -> None:
    async with client_for(runtime, mint(kind="agent")) as agent:
        made = await agent.post(
            base,
            json=body(base, provenance={"agent_id": "planner", "run_id": "r1"}),
            headers={"X-Trace-Id": "t-1"},
        )
        url = f"{base}/{made.json()['id']}"
        await agent.put(url, json=body(base, {"v": 2}), headers={"X-Step-Id": "s2"})
        latest = (await agent.get(url)).json()
        versions = (await agent.get(f"{url}/versions")).json()["items"]

    assert made.json()["provenance"] == {
        "source": "agent",
        "agent_id": "planner",
        "run_id": "r1",
        "thread_id": None,
        "step_id": None,
        "parent_event_id": None,
        "trace_id": "t-1",
        "span_id": None,
    }
    assert (latest["provenance"]["step_id"], latest["provenance"]["agent_id"]) == ("s2", None)
    assert [v["provenance"]["trace_id"] for v in versions] == ["t-1", None]
