"""Surfaces and projects (DESIGN §7): every record has a surface; a token grants surfaces,
and projects per surface; a record outside the grants does not exist for the caller."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engines.runtime import Runtime
from tests.e2e.support import (
    Mint,
    client_for,
    create,
    field_paths,
    note_stream_id,
    problem,
    spine_events,
)

# -- surface_id is required ------------------------------------------------------------------


async def test_a_token_granting_one_surface_supplies_it(client: httpx.AsyncClient) -> None:
    note = await create(client)

    assert note["surface_id"] == "s1"


@pytest.mark.parametrize("surfaces", [["chat", "canvas"], []], ids=["several", "none"])
async def test_a_note_without_a_surface_is_refused_with_422_naming_it(
    runtime: Runtime, mint: Mint, surfaces: list[str]
) -> None:
    async with client_for(runtime, mint(surfaces=surfaces)) as client:
        response = await client.post("/notes", json={"title": "where?"})

    assert ("body", "surface_id") in field_paths(response)
    assert "surface_id" in response.json()["detail"]
    assert await spine_events(runtime) == 0


async def test_a_surface_may_be_named_in_the_body_the_header_or_the_query(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(surfaces=["chat", "canvas"])) as client:
        body = await client.post("/notes", json={"title": "t", "surface_id": "chat"})
        header = await client.post("/notes", json={"title": "t"}, headers={"X-Surface-Id": "chat"})
        query = await client.post("/notes", json={"title": "t"}, params={"surface_id": "canvas"})

    assert [r.json()["surface_id"] for r in (body, header, query)] == ["chat", "chat", "canvas"]


# -- projects per surface ------------------------------------------------------------------


PER_SURFACE = {"chat": ["p1"], "canvas": ["p2"]}


@pytest.mark.parametrize(
    ("surface", "project", "status"),
    [
        ("chat", "p1", 201),
        ("canvas", "p2", 201),
        ("chat", None, 201),
        ("chat", "p2", 403),
        ("canvas", "p1", 403),
        ("builder", None, 403),
    ],
)
async def test_a_project_must_be_granted_on_the_requests_surface(
    runtime: Runtime, mint: Mint, surface: str, project: str | None, status: int
) -> None:
    token = mint(surfaces=["chat", "canvas"], projects=PER_SURFACE)
    body = {"title": "t", "surface_id": surface, "project_id": project}
    async with client_for(runtime, token) as client:
        response = await client.post("/notes", json=body)

    assert response.status_code == status, response.text
    if status == 403:
        problem(response, 403)
        assert await spine_events(runtime, "notes/") == 0


# -- grants on existing records ------------------------------------------------------------


@pytest.fixture
async def canvas_p2_note(runtime: Runtime, mint: Mint) -> dict[str, Any]:
    """A note of the default user, on canvas/p2."""
    async with client_for(runtime, mint(surfaces=["canvas"], projects=["p2"])) as owner:
        return await create(owner, title="canvas secret", project_id="p2")


@pytest.mark.parametrize(
    ("surfaces", "projects"),
    [
        (["chat"], ["p1"]),
        (["chat", "canvas"], {"chat": ["p1", "p2"], "canvas": ["p1"]}),
        ([], []),
    ],
    ids=["other-surface", "project-not-granted-there", "nothing-granted"],
)
async def test_a_record_outside_the_tokens_grants_answers_404_to_every_call(
    runtime: Runtime, mint: Mint, canvas_p2_note: dict[str, Any], surfaces: list[str], projects: Any
) -> None:
    url = f"/notes/{canvas_p2_note['note_id']}"
    stream = note_stream_id(canvas_p2_note["note_id"])
    before = await runtime.spine.read_stream(stream)

    async with client_for(runtime, mint(surfaces=surfaces, projects=projects)) as same_user:
        get = await same_user.get(url)
        put = await same_user.put(url, json={"title": "mine now"})
        pinned = await same_user.put(url, json={"title": "x"}, headers={"If-Match": '"1"'})
        delete = await same_user.delete(url)
        listed = await same_user.get("/notes")

    for response in (get, put, pinned, delete):
        problem(response, 404)
    assert "canvas secret" not in get.text
    assert listed.json()["items"] == []
    assert await runtime.spine.read_stream(stream) == before


async def test_a_record_within_the_grants_is_read_written_and_listed(
    runtime: Runtime, mint: Mint, canvas_p2_note: dict[str, Any]
) -> None:
    url = f"/notes/{canvas_p2_note['note_id']}"
    token = mint(surfaces=["chat", "canvas"], projects={"chat": ["p1"], "canvas": ["p2"]})

    async with client_for(runtime, token) as client:
        get = await client.get(url)
        listed = await client.get("/notes")
        put = await client.put(url, json={"title": "edited"})
        delete = await client.delete(url)

    assert (get.status_code, put.status_code, delete.status_code) == (200, 200, 200)
    assert [n["note_id"] for n in listed.json()["items"]] == [canvas_p2_note["note_id"]]


async def test_a_note_without_a_project_is_reached_only_by_a_token_granting_its_surface_whole(
    runtime: Runtime, mint: Mint
) -> None:
    """A token granting some projects of a surface reaches nothing outside them, a
    project-less note included (an agent scoped to p9 sees no surface-level note)."""
    whole_surface = mint(surfaces=["chat"], projects=[])
    async with client_for(runtime, whole_surface) as owner:
        note = await create(owner, title="no project")
        listed = (await owner.get("/notes")).json()["items"]
    async with client_for(runtime, mint(surfaces=["chat"], projects=["p9"])) as scoped:
        get = await scoped.get(f"/notes/{note['note_id']}")
        put = await scoped.put(f"/notes/{note['note_id']}", json={"title": "mine"})
        delete = await scoped.delete(f"/notes/{note['note_id']}")
        scoped_list = (await scoped.get("/notes")).json()["items"]

    assert note["project_id"] is None
    assert [n["note_id"] for n in listed] == [note["note_id"]]
    assert (get.status_code, put.status_code, delete.status_code) == (404, 404, 404)
    assert scoped_list == []


async def test_a_create_on_a_surface_granted_with_projects_takes_or_needs_one(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(surfaces=["chat"], projects=["p1"])) as one:
        taken = await create(one, title="in the only project")
    async with client_for(runtime, mint(surfaces=["chat"], projects=["p1", "p2"])) as two:
        before = await spine_events(runtime)
        unnamed = await two.post("/notes", json={"title": "which project?"})
        after = await spine_events(runtime)

    assert taken["project_id"] == "p1"
    assert unnamed.status_code == 422
    assert "project_id" in unnamed.json()["detail"]
    assert after == before


async def test_the_list_shows_exactly_the_notes_within_the_grants(
    runtime: Runtime, mint: Mint
) -> None:
    everything = mint(surfaces=["chat", "canvas"], projects=["p1", "p2"])
    surfaces_whole = mint(surfaces=["chat", "canvas"], projects=[])
    made = {}
    for token, projects in ((everything, ("p1", "p2")), (surfaces_whole, (None,))):
        async with client_for(runtime, token) as owner:
            for s in ("chat", "canvas"):
                for p in projects:
                    made[s, p] = (await create(owner, surface_id=s, project_id=p))["note_id"]
    limited = mint(surfaces=["chat", "canvas"], projects={"chat": ["p1"], "canvas": []})

    async with client_for(runtime, limited) as client:
        seen = {n["note_id"] for n in (await client.get("/notes")).json()["items"]}
        chat_only = {
            n["note_id"]
            for n in (await client.get("/notes", params={"surface_id": "chat"})).json()["items"]
        }

    assert seen == {made["chat", "p1"], made["canvas", None]}
    assert chat_only == {made["chat", "p1"]}
