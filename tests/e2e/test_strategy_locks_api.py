"""Strategy locks over HTTP, end to end: snapshots taken by admins, read by everyone
granted the project, and the spine beneath them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from spine.codec import verify_chain
from spine.errors import MissingRoutes, RouteNotAllowed
from tests.e2e.support import (
    PROJECT,
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

SNAPSHOT = {
    "toggles": {"hedging": True, "rebalance": False},
    "flags": {"max_leverage": 2.5, "venue": "xnas", "limits": {"per_asset": [0.1, 0.2]}},
    "note": "before the rollout",
}
URL = "/strategy-locks/momentum"
SNAPSHOTS = URL + "/snapshots"
STREAM = f"strategy_lock/{TENANT}/lab/{PROJECT}/momentum"
SNAPSHOT_FIELDS = {
    "project_id",
    "strategy_id",
    "toggles",
    "flags",
    "note",
    "version",
    "event_type",
    "deleted",
    "scope",
    "provenance",
    "recorded_at",
}
LATEST_FIELDS = SNAPSHOT_FIELDS - {"event_type", "deleted", "recorded_at"} | {"timestamps"}


@pytest.fixture
async def admin(runtime: Runtime, mint: Mint) -> AsyncIterator[AppClient]:
    """An admin of tenant t1, granted project p1 on surface s1."""
    async with client_for(runtime, mint(user_id="boss", roles=["admin"])) as c:
        yield c


async def take(client: httpx.AsyncClient, body: dict[str, Any] = SNAPSHOT, **kw: Any) -> Any:
    response = await client.post(SNAPSHOTS, json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()


async def lock_events(runtime: Runtime) -> int:
    return await spine_events(runtime, "strategy_lock/")


# -- taking snapshots ------------------------------------------------------------------


async def test_a_snapshot_answers_201_with_itself_its_etag_and_location(
    admin: AppClient,
) -> None:
    response = await admin.post(SNAPSHOTS, json=SNAPSHOT)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body.keys() == SNAPSHOT_FIELDS
    assert (body["project_id"], body["strategy_id"], body["version"]) == (PROJECT, "momentum", 1)
    assert {k: body[k] for k in SNAPSHOT} == SNAPSHOT
    assert body["scope"] == {
        "tenant_id": TENANT,
        "mode": "lab",
        "user_id": "boss",
        "surface_id": SURFACE,
        "project_id": PROJECT,
    }
    assert (body["event_type"], body["deleted"]) == ("strategy_lock.snapshot_taken", False)
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"{URL}?project_id={PROJECT}&version=1"
    assert (await admin.get(response.headers["Location"])).json() == body


async def test_every_snapshot_is_a_new_version_even_of_the_same_toggles(
    admin: AppClient, runtime: Runtime
) -> None:
    first = await take(admin)
    second = await take(admin)

    assert (first["version"], second["version"]) == (1, 2)
    events = await runtime.spine.read_stream(STREAM)
    assert [e.seq for e in events] == [1, 2]
    assert verify_chain(events) == 2


async def test_every_snapshot_event_is_in_the_strategy_lock_family_with_scope_and_provenance(
    admin: AppClient, runtime: Runtime
) -> None:
    await take(admin, headers={"X-Run-Id": "run-7", "X-Trace-Id": "trace-1"})
    await take(admin, {**SNAPSHOT, "provenance": {"step_id": "step-2"}})

    events = await runtime.spine.read_stream(STREAM)
    assert {e.family for e in events} == {"strategy_lock"}
    assert {e.event_type for e in events} == {"strategy_lock.snapshot_taken"}
    for e in events:
        assert (e.tenant_id, e.mode, e.user_id) == (TENANT, "lab", "boss")
        assert (e.surface_id, e.project_id) == (SURFACE, PROJECT)
        assert e.source == "ui"  # a user's request
        assert "provenance" not in e.payload
    assert (events[0].run_id, events[0].trace_id, events[0].step_id) == ("run-7", "trace-1", None)
    assert (events[1].run_id, events[1].step_id) == (None, "step-2")
    assert events[0].payload == SNAPSHOT


async def test_a_snapshot_without_a_note_stores_no_note(admin: AppClient, runtime: Runtime) -> None:
    body = await take(admin, {"toggles": {"a": True}, "flags": {}})

    (event,) = await runtime.spine.read_stream(STREAM)
    assert event.payload == {"toggles": {"a": True}, "flags": {}}
    assert body["note"] is None


async def test_a_non_admin_cannot_take_a_snapshot_and_the_refusal_is_audited(
    client: AppClient, admin: AppClient, runtime: Runtime
) -> None:
    await take(admin)

    refused = [await client.post(SNAPSHOTS, json=SNAPSHOT) for _ in range(2)]
    for response in refused:
        assert "admin" in problem(response, 403)["detail"]
    assert await lock_events(runtime) == 1
    assert [e.payload["reason_code"] for e in await audit_events(runtime)] == ["RoleRequired"]


async def test_an_admin_not_granted_the_project_cannot_take_a_snapshot(
    runtime: Runtime, mint: Mint
) -> None:
    token = mint(user_id="boss", roles=["admin"], projects=["p2"])
    async with client_for(runtime, token) as other:
        response = await other.post(SNAPSHOTS, json=SNAPSHOT, headers={"X-Project-Id": PROJECT})

    problem(response, 403)
    assert await lock_events(runtime) == 0


# -- If-Match, If-None-Match, Idempotency-Key -------------------------------------------


async def test_if_match_appends_on_top_of_the_version_named_only(
    admin: AppClient, runtime: Runtime
) -> None:
    await take(admin)
    await take(admin)

    stale = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers={"If-Match": '"1"'})
    current = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers={"If-Match": '"2"'})

    problem(stale, 412)
    assert current.status_code == 201
    assert (current.json()["version"], current.headers["ETag"]) == (3, '"3"')
    assert await lock_events(runtime) == 3


async def test_if_match_on_a_strategy_with_no_snapshot_answers_404_and_writes_nothing(
    admin: AppClient, runtime: Runtime
) -> None:
    response = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers={"If-Match": '"1"'})

    problem(response, 404)
    assert await lock_events(runtime) == 0


async def test_if_none_match_star_takes_only_the_first_snapshot(
    admin: AppClient, runtime: Runtime
) -> None:
    first = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers={"If-None-Match": "*"})
    again = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers={"If-None-Match": "*"})

    assert first.status_code == 201
    problem(again, 412)
    assert await lock_events(runtime) == 1


async def test_an_idempotency_key_takes_one_snapshot_and_answers_a_retry_with_it(
    admin: AppClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "rollout-1"}
    first = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers=headers)
    retry = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers=headers)
    reused = await admin.post(SNAPSHOTS, json={**SNAPSHOT, "note": "other"}, headers=headers)

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert "Idempotency-Key" in problem(reused, 409)["detail"]
    assert await lock_events(runtime) == 1


# -- reads -----------------------------------------------------------------------------


async def test_the_latest_snapshot_is_read_with_its_version_and_etag(
    admin: AppClient,
) -> None:
    first = await take(admin)
    await take(admin, {"toggles": {"hedging": False}, "flags": {}})

    response = await admin.get(URL)

    assert response.status_code == 200
    latest = response.json()
    assert latest.keys() == LATEST_FIELDS
    assert (latest["version"], latest["toggles"], latest["flags"]) == (2, {"hedging": False}, {})
    assert latest["timestamps"]["created_at"] == first["recorded_at"]
    assert response.headers["ETag"] == '"2"'


async def test_a_given_version_is_read_as_it_was_taken(admin: AppClient) -> None:
    first = await take(admin)
    await take(admin, {"toggles": {}, "flags": {}})

    response = await admin.get(URL, params={"version": 1})

    assert response.status_code == 200
    assert response.json() == first
    assert response.headers["ETag"] == '"1"'
    problem(await admin.get(URL, params={"version": 3}), 404)


async def test_the_history_lists_every_snapshot_oldest_first_page_by_page(
    admin: AppClient,
) -> None:
    taken = [await take(admin, {"toggles": {f"t{i}": True}, "flags": {}}) for i in range(5)]

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await admin.get(URL + "/history", params=params)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == taken
    assert [s["version"] for s in seen] == [1, 2, 3, 4, 5]


async def test_a_reader_granted_the_project_but_not_admin_reads_everything(
    admin: AppClient, client: AppClient
) -> None:
    taken = await take(admin)

    latest = await client.get(URL)
    version = await client.get(URL, params={"version": 1})
    history = await client.get(URL + "/history")

    assert latest.status_code == 200
    assert latest.json()["version"] == 1
    assert version.json() == taken
    assert history.json()["items"] == [taken]


async def test_a_reader_granted_the_project_on_another_surface_reads_it(
    admin: AppClient, runtime: Runtime, mint: Mint
) -> None:
    await take(admin)

    async with client_for(runtime, mint(user_id="u9", surfaces=["canvas"])) as reader:
        response = await reader.get(URL)

    assert response.status_code == 200


async def test_a_strategy_with_no_snapshot_answers_404(admin: AppClient) -> None:
    problem(await admin.get(URL), 404)
    problem(await admin.get(URL, params={"version": 1}), 404)
    problem(await admin.get(URL + "/history"), 404)


async def test_a_reader_not_granted_the_project_never_sees_it(
    admin: AppClient, runtime: Runtime, mint: Mint
) -> None:
    await take(admin)

    async with client_for(runtime, mint(user_id="u9", projects=["p2"])) as reader:
        own = [
            await reader.get(URL),
            await reader.get(URL, params={"version": 1}),
            await reader.get(URL + "/history"),
        ]
        named = await reader.get(URL, headers={"X-Project-Id": PROJECT})

    for response in own:  # its only project, p2, has no such strategy
        problem(response, 404)
    problem(named, 403)


async def test_another_tenant_never_sees_a_lock(
    admin: AppClient, runtime: Runtime, mint: Mint
) -> None:
    await take(admin)
    token = mint(tenant_id="t2", user_id="boss", roles=["admin"])

    async with client_for(runtime, token) as other:
        answers = [
            await other.get(URL),
            await other.get(URL, params={"version": 1}),
            await other.get(URL + "/history"),
            await other.post(SNAPSHOTS, json=SNAPSHOT, headers={"If-Match": '"1"'}),
        ]

    for response in answers:
        problem(response, 404)
    assert await lock_events(runtime) == 1


# -- which project ---------------------------------------------------------------------


async def test_with_several_projects_the_request_names_the_strategys_project(
    runtime: Runtime, mint: Mint
) -> None:
    token = mint(user_id="boss", roles=["admin"], projects=["p1", "p2"])
    async with client_for(runtime, token) as admin:
        unnamed_write = await admin.post(SNAPSHOTS, json=SNAPSHOT)
        in_p1 = await admin.post(SNAPSHOTS, json=SNAPSHOT, headers={"X-Project-Id": "p1"})
        in_p2 = await admin.post(SNAPSHOTS, json=SNAPSHOT, params={"project_id": "p2"})
        unnamed_read = await admin.get(URL)
        read_p1 = await admin.get(URL, params={"project_id": "p1"})
        history_p2 = await admin.get(URL + "/history", headers={"X-Project-Id": "p2"})
        both = await admin.get(URL, params={"project_id": "p1"}, headers={"X-Project-Id": "p2"})

    assert ("body", "project_id") in field_paths(unnamed_write)
    assert ("query", "project_id") in field_paths(unnamed_read)
    assert (in_p1.status_code, in_p2.status_code) == (201, 201)
    assert (in_p1.json()["project_id"], in_p2.json()["project_id"]) == ("p1", "p2")
    assert read_p1.json()["project_id"] == "p1"
    assert [i["project_id"] for i in history_p2.json()["items"]] == ["p2"]
    problem(both, 403)
    assert await spine_events(runtime, f"strategy_lock/{TENANT}/lab/p1/") == 1
    assert await spine_events(runtime, f"strategy_lock/{TENANT}/lab/p2/") == 1


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**SNAPSHOT, "toggles": {"hedging": "yes"}}, ("body", "toggles", "hedging")),
        ({**SNAPSHOT, "toggles": {"hedging": 1}}, ("body", "toggles", "hedging")),
        ({**SNAPSHOT, "flags": {"x": None}}, ("body", "flags", "x")),
        ({**SNAPSHOT, "flags": {"x": [1]}}, ("body", "flags", "x")),
        ({**SNAPSHOT, "flags": {"bad name": 1}}, ("body", "flags", "bad name", "[key]")),
        ({**SNAPSHOT, "toggles": {f"t{i}": True for i in range(257)}}, ("body", "toggles")),
        ({**SNAPSHOT, "flags": {"blob": "x" * 70_000}}, ("body",)),
        ({"flags": {}}, ("body", "toggles")),
        ({**SNAPSHOT, "project_id": "p2"}, ("body", "project_id")),
        ({**SNAPSHOT, "note": None}, ("body", "note")),
    ],
    ids=[
        "toggle-string",
        "toggle-number",
        "flag-null",
        "flag-array",
        "flag-name",
        "too-many-toggles",
        "over-64-kib",
        "no-toggles",
        "project-in-body",
        "null-note",
    ],
)
async def test_a_bad_snapshot_answers_422_naming_the_field_and_writes_nothing(
    admin: AppClient, runtime: Runtime, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    before = await spine_events(runtime)

    response = await admin.post(SNAPSHOTS, json=body)

    assert loc in field_paths(response)
    assert await spine_events(runtime) == before


@pytest.mark.parametrize("strategy", ["has space", "a" * 200, ".dot"])
async def test_a_strategy_id_that_is_not_an_identifier_answers_422(
    admin: AppClient, runtime: Runtime, strategy: str
) -> None:
    response = await admin.post(f"/strategy-locks/{strategy}/snapshots", json=SNAPSHOT)

    assert ("path", "strategy_id") in field_paths(response)
    assert await lock_events(runtime) == 0


# -- concurrency -----------------------------------------------------------------------


async def test_two_snapshots_on_top_of_the_same_version_let_exactly_one_win(
    admin: AppClient, runtime: Runtime
) -> None:
    await take(admin)

    responses = await asyncio.gather(
        *(
            admin.post(
                SNAPSHOTS,
                json={**SNAPSHOT, "note": f"writer {i}"},
                headers={"If-Match": '"1"'},
            )
            for i in range(2)
        )
    )

    assert sorted(r.status_code for r in responses) == [201, 412]
    (winner,) = [r for r in responses if r.status_code == 201]
    events = await runtime.spine.read_stream(STREAM)
    assert [e.seq for e in events] == [1, 2]
    assert events[1].payload["note"] == winner.json()["note"]


async def test_ten_concurrent_snapshots_are_all_taken_each_with_its_own_version(
    admin: AppClient, runtime: Runtime
) -> None:
    responses = await asyncio.gather(
        *(admin.post(SNAPSHOTS, json={**SNAPSHOT, "note": f"writer {i}"}) for i in range(10))
    )

    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    versions = [r.json()["version"] for r in responses]
    assert sorted(versions) == list(range(1, 11))
    for r in responses:  # each answer is the snapshot that request took
        assert r.headers["ETag"] == f'"{r.json()["version"]}"'
    events = await runtime.spine.read_stream(STREAM)
    assert {e.seq: e.payload["note"] for e in events} == {
        r.json()["version"]: r.json()["note"] for r in responses
    }
    assert verify_chain(events) == 10


# -- the store, the routes, the CLI ----------------------------------------------------


async def test_without_projectors_a_snapshot_answers_202_with_its_version(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    quick = settings.model_copy(update={"write_wait_seconds": 0.05})
    async with (
        bootstrap(quick, tmp_path, run_projectors=False) as runtime,
        client_for(runtime, mint(roles=["admin"])) as admin,
    ):
        response = await admin.post(SNAPSHOTS, json=SNAPSHOT)

    assert response.status_code == 202
    assert response.json() == {
        "project_id": PROJECT,
        "strategy_id": "momentum",
        "version": 1,
        "status": "accepted",
    }
    assert response.headers["ETag"] == '"1"'


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
            down = await admin.post(SNAPSHOTS, json=SNAPSHOT)
        finally:
            other.execute("ROLLBACK")
            other.close()
        written_while_down = await lock_events(runtime)
        up = await admin.post(SNAPSHOTS, json=SNAPSHOT)

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert written_while_down == 0
    assert (up.status_code, up.json()["version"]) == (201, 1)


async def test_without_a_strategy_lock_store_route_the_service_refuses_to_start(
    tmp_path: Path,
) -> None:
    with pytest.raises(MissingRoutes, match="strategy_lock_store"):
        await start(lab_routes_with(tmp_path, "strategy_lock_store"), tmp_path)


async def test_a_ttl_on_the_strategy_lock_store_route_refuses_start_up(tmp_path: Path) -> None:
    route = (
        "  strategy_lock_store: {backend: sqlite, name: strategy_locks, lab: true, "
        "options: {ttl_seconds: 60}}"
    )

    with pytest.raises(RouteNotAllowed, match=r"strategy_lock_store: option ttl_seconds .*append"):
        await start(lab_routes_with(tmp_path, "strategy_lock_store", route), tmp_path)


def test_the_cli_lists_shows_and_pages_the_history_of_strategy_locks(
    settings: Settings, tmp_path: Path, mint: Mint, capsys: pytest.CaptureFixture[str]
) -> None:
    async def setup() -> None:
        async with (
            bootstrap(settings, tmp_path) as runtime,
            client_for(runtime, mint(roles=["admin"])) as admin,
        ):
            await take(admin)
            await take(admin, {"toggles": {"hedging": False}, "flags": {}})

    asyncio.run(setup())
    common = ["--data-dir", str(tmp_path), "--tenant", TENANT]

    assert main(["strategy-locks", "list", *common]) == 0
    listed = capsys.readouterr().out
    assert main(["strategy-locks", "show", PROJECT, "momentum", *common, "--format", "json"]) == 0
    shown = capsys.readouterr().out
    assert main(["strategy-locks", "history", PROJECT, "momentum", *common]) == 0
    history = capsys.readouterr().out.splitlines()

    assert "momentum" in listed
    assert '"hedging": false' in shown
    assert [line.split()[:3] for line in history[1:]] == [
        [PROJECT, "momentum", "1"],
        [PROJECT, "momentum", "2"],
    ]
