"""SEO config over HTTP, end to end: put by admins of the surface, read by everyone
granted it, answered exactly as put, and the spine beneath."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from spine.errors import MissingRoutes
from tests.e2e.support import (
    SURFACE,
    TENANT,
    AppClient,
    Mint,
    audit_events,
    client_for,
    field_paths,
    lab_routes_with,
    problem,
    spine_events,
    start,
)

URL = f"/seo-config/{SURFACE}"
STREAM = f"seo_config/{TENANT}/lab/{SURFACE}"
CONFIG = {
    "title": "Chat",
    "keywords": ["ai", "chat"],
    "open_graph": {"title": "Chat with us", "image": "https://example.test/og.png"},
}
FRAME = {"surface_id", "version", "scope", "provenance", "timestamps"}
VERSION_FRAME = {
    "surface_id",
    "version",
    "scope",
    "provenance",
    "event_type",
    "deleted",
    "recorded_at",
}


@pytest.fixture
async def admin(runtime: Runtime, mint: Mint) -> AsyncIterator[AppClient]:
    """An admin of tenant t1, granted surface s1 (and project p1 on it)."""
    async with client_for(runtime, mint(user_id="boss", roles=["admin"])) as c:
        yield c


async def seo_events(runtime: Runtime) -> int:
    return await spine_events(runtime, "seo_config/")


def body_of(answer: dict[str, Any], frame: set[str] = FRAME) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in frame}


# -- put and read ----------------------------------------------------------------------


async def test_a_first_put_answers_201_with_exactly_the_fields_given(admin: AppClient) -> None:
    response = await admin.put(URL, json=CONFIG)

    assert response.status_code == 201, response.text
    config = response.json()
    assert config.keys() == FRAME | CONFIG.keys()  # nothing defaulted, nothing null
    assert body_of(config) == CONFIG
    assert (config["surface_id"], config["version"]) == (SURFACE, 1)
    assert config["scope"] == {
        "tenant_id": TENANT,
        "mode": "lab",
        "user_id": "boss",
        "surface_id": SURFACE,
        "project_id": None,
    }
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == URL


async def test_a_get_returns_exactly_what_was_put(admin: AppClient, client: AppClient) -> None:
    put = (await admin.put(URL, json={"title": "Only a title"})).json()

    response = await client.get(URL)

    assert response.status_code == 200
    assert response.json() == put
    assert body_of(response.json()) == {"title": "Only a title"}
    assert response.headers["ETag"] == '"1"'


async def test_an_empty_config_is_a_config_with_no_fields(admin: AppClient) -> None:
    put = await admin.put(URL, json={})

    assert put.status_code == 201
    assert body_of((await admin.get(URL)).json()) == {}


async def test_a_put_replaces_the_whole_config_and_every_version_stays_readable(
    admin: AppClient, runtime: Runtime
) -> None:
    await admin.put(URL, json=CONFIG)

    replaced = await admin.put(URL, json={"description": "Talk to it"})
    first = await admin.get(URL, params={"version": 1})
    history = (await admin.get(URL + "/history")).json()

    assert (replaced.status_code, replaced.json()["version"]) == (200, 2)
    assert body_of(replaced.json()) == {"description": "Talk to it"}  # title and the rest gone
    assert body_of((await admin.get(URL)).json()) == {"description": "Talk to it"}
    assert body_of(first.json(), VERSION_FRAME) == CONFIG
    assert first.headers["ETag"] == '"1"'
    assert [body_of(i, VERSION_FRAME) for i in history["items"]] == [
        CONFIG,
        {"description": "Talk to it"},
    ]
    assert [i["event_type"] for i in history["items"]] == [
        "seo_config.created",
        "seo_config.updated",
    ]
    assert [e.payload for e in await runtime.spine.read_stream(STREAM)] == [
        CONFIG,
        {"description": "Talk to it"},
    ]


async def test_the_same_config_again_changes_nothing(admin: AppClient, runtime: Runtime) -> None:
    await admin.put(URL, json=CONFIG)

    again = await admin.put(URL, json=CONFIG)

    assert (again.status_code, again.json()["version"], again.headers["ETag"]) == (200, 1, '"1"')
    assert await seo_events(runtime) == 1


async def test_a_surface_with_no_config_answers_404_and_nothing_is_made_up(
    admin: AppClient,
) -> None:
    problem(await admin.get(URL), 404)
    problem(await admin.get(URL, params={"version": 1}), 404)
    problem(await admin.get(URL + "/history"), 404)


async def test_every_put_is_recorded_with_its_writer_surface_and_provenance(
    admin: AppClient, runtime: Runtime
) -> None:
    await admin.put(URL, json=CONFIG, headers={"X-Run-Id": "run-3", "X-Agent-Id": "seo-bot"})
    await admin.put(URL, json={"title": "t", "provenance": {"step_id": "step-2"}})

    created, updated = await runtime.spine.read_stream(STREAM)
    for e in (created, updated):
        assert (e.tenant_id, e.mode, e.user_id) == (TENANT, "lab", "boss")
        assert (e.surface_id, e.project_id, e.family) == (SURFACE, None, "domain")
    assert (created.run_id, created.agent_id, created.step_id) == ("run-3", "seo-bot", None)
    assert (updated.run_id, updated.step_id) == (None, "step-2")
    assert updated.payload == {"title": "t"}


# -- preconditions ---------------------------------------------------------------------


async def test_if_match_replaces_the_version_named_only(admin: AppClient, runtime: Runtime) -> None:
    await admin.put(URL, json=CONFIG)
    await admin.put(URL, json={"title": "v2"})

    stale = await admin.put(URL, json={"title": "v3"}, headers={"If-Match": '"1"'})
    current = await admin.put(URL, json={"title": "v3"}, headers={"If-Match": '"2"'})

    problem(stale, 412)
    assert (current.status_code, current.json()["version"]) == (200, 3)
    assert await seo_events(runtime) == 3


async def test_if_match_on_a_surface_with_no_config_answers_404_and_writes_nothing(
    admin: AppClient, runtime: Runtime
) -> None:
    problem(await admin.put(URL, json=CONFIG, headers={"If-Match": '"1"'}), 404)
    assert await seo_events(runtime) == 0


async def test_if_none_match_star_creates_only(admin: AppClient, runtime: Runtime) -> None:
    first = await admin.put(URL, json=CONFIG, headers={"If-None-Match": "*"})
    again = await admin.put(URL, json={"title": "t"}, headers={"If-None-Match": "*"})

    assert first.status_code == 201
    problem(again, 412)
    assert await seo_events(runtime) == 1


async def test_concurrent_puts_on_the_same_version_let_exactly_one_win(
    admin: AppClient, runtime: Runtime
) -> None:
    await admin.put(URL, json=CONFIG)

    responses = await asyncio.gather(
        *(
            admin.put(URL, json={"title": f"writer {i}"}, headers={"If-Match": '"1"'})
            for i in range(5)
        )
    )

    assert sorted(r.status_code for r in responses) == [200] + [412] * 4
    (winner,) = [r for r in responses if r.status_code == 200]
    assert (await admin.get(URL)).json()["title"] == winner.json()["title"]
    assert await seo_events(runtime) == 2


# -- access ----------------------------------------------------------------------------


async def test_a_non_admin_cannot_put_and_the_refusal_is_audited(
    client: AppClient, admin: AppClient, runtime: Runtime
) -> None:
    await admin.put(URL, json=CONFIG)

    create = await client.put("/seo-config/elsewhere", json=CONFIG)
    replace = await client.put(URL, json={"title": "mine"})

    for response in (create, replace):
        assert "admin" in problem(response, 403)["detail"]
    assert await seo_events(runtime) == 1
    assert [e.payload["reason_code"] for e in await audit_events(runtime)] == ["RoleRequired"]


async def test_an_admin_not_granted_the_surface_can_neither_put_nor_read(
    admin: AppClient, runtime: Runtime, mint: Mint
) -> None:
    await admin.put(URL, json=CONFIG)

    async with client_for(runtime, mint(roles=["admin"], surfaces=["canvas"])) as other:
        answers = [
            await other.put(URL, json={"title": "theirs"}),
            await other.get(URL),
            await other.get(URL + "/history"),
        ]

    for response in answers:
        problem(response, 403)
    assert await seo_events(runtime) == 1
    assert body_of((await admin.get(URL)).json()) == CONFIG


async def test_a_reader_granted_the_surface_reads_every_version(
    admin: AppClient, runtime: Runtime, mint: Mint
) -> None:
    await admin.put(URL, json=CONFIG)
    await admin.put(URL, json={"title": "v2"})

    # another user, another project on the surface, no role: still the surface's config
    async with client_for(runtime, mint(user_id="u9", projects=["p7"])) as reader:
        latest = await reader.get(URL)
        first = await reader.get(URL, params={"version": 1})
        history = await reader.get(URL + "/history")

    assert (latest.status_code, latest.json()["title"]) == (200, "v2")
    assert body_of(first.json(), VERSION_FRAME) == CONFIG
    assert len(history.json()["items"]) == 2


async def test_another_tenant_never_sees_a_config(
    admin: AppClient, runtime: Runtime, mint: Mint
) -> None:
    await admin.put(URL, json=CONFIG)

    async with client_for(runtime, mint(tenant_id="t2", roles=["admin"])) as other:
        answers = [
            await other.get(URL),
            await other.get(URL, params={"version": 1}),
            await other.get(URL + "/history"),
            await other.put(URL, json={"title": "theirs"}, headers={"If-Match": '"1"'}),
        ]

    for response in answers:
        problem(response, 404)
    assert await seo_events(runtime) == 1


async def test_a_surface_in_the_path_and_another_in_a_header_is_refused(
    admin: AppClient, runtime: Runtime
) -> None:
    response = await admin.put(URL, json=CONFIG, headers={"X-Surface-Id": "canvas"})

    problem(response, 403)
    assert await seo_events(runtime) == 0


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"title": None}, ("body", "title")),
        ({"open_graph": {"title": None}}, ("body", "open_graph", "title")),
        ({"title": 1}, ("body", "title")),
        ({"keywords": "a, b"}, ("body", "keywords")),
        ({"canonical_url": "javascript:alert(1)"}, ("body", "canonical_url")),
        ({"robots": ["index", "Follow Me"]}, ("body", "robots", 1)),
        ({"theme": "dark"}, ("body", "theme")),
        ({"surface_id": "canvas"}, ("body", "surface_id")),
    ],
    ids=[
        "null",
        "nested-null",
        "number",
        "keywords-string",
        "not-http",
        "robots",
        "unknown",
        "surface-in-body",
    ],
)
async def test_a_bad_config_answers_422_naming_the_field_and_writes_nothing(
    admin: AppClient, runtime: Runtime, body: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    before = await spine_events(runtime)

    response = await admin.put(URL, json=body)

    assert loc in field_paths(response)
    assert await spine_events(runtime) == before


async def test_a_json_array_is_not_a_config(admin: AppClient, runtime: Runtime) -> None:
    problem(await admin.put(URL, json=[CONFIG]), 422)
    assert await seo_events(runtime) == 0


# -- the store, the routes, the CLI ----------------------------------------------------


async def test_a_locked_database_answers_503_writes_nothing_and_the_service_recovers(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    sqlite_settings = settings.connections.sqlite.model_copy(update={"busy_timeout_ms": 200})
    connections = settings.connections.model_copy(update={"sqlite": sqlite_settings})
    locked = settings.model_copy(update={"connections": connections})
    async with (
        bootstrap(locked, tmp_path) as runtime,
        client_for(runtime, mint(roles=["admin"])) as admin,
    ):
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            down = await admin.put(URL, json=CONFIG)
        finally:
            other.execute("ROLLBACK")
            other.close()
        written_while_down = await seo_events(runtime)
        up = await admin.put(URL, json=CONFIG)

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert written_while_down == 0
    assert (up.status_code, up.json()["version"]) == (201, 1)


async def test_without_a_seo_config_store_route_the_service_refuses_to_start(
    tmp_path: Path,
) -> None:
    with pytest.raises(MissingRoutes, match="seo_config_store"):
        await start(lab_routes_with(tmp_path, "seo_config_store"), tmp_path)


def test_the_cli_lists_shows_and_pages_the_history_of_seo_configs(
    settings: Settings, tmp_path: Path, mint: Mint, capsys: pytest.CaptureFixture[str]
) -> None:
    async def setup() -> None:
        async with (
            bootstrap(settings, tmp_path) as runtime,
            client_for(runtime, mint(roles=["admin"])) as admin,
        ):
            await admin.put(URL, json=CONFIG)
            await admin.put(URL, json={"title": "v2"})

    asyncio.run(setup())
    common = ["--data-dir", str(tmp_path), "--tenant", TENANT]

    assert main(["seo-config", "list", *common]) == 0
    listed = capsys.readouterr().out
    assert main(["seo-config", "show", SURFACE, *common, "--format", "json"]) == 0
    shown = capsys.readouterr().out
    assert main(["seo-config", "history", SURFACE, *common]) == 0
    history = capsys.readouterr().out.splitlines()

    assert '{"title":"v2"}' in listed
    assert '"title": "v2"' in shown
    assert [line.split()[:2] for line in history[1:]] == [[SURFACE, "1"], [SURFACE, "2"]]
