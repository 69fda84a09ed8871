"""A lab server says so on every response (DESIGN §6), and describes itself."""

from __future__ import annotations

import httpx
import pytest

from engines.runtime import Runtime
from routing.kinds import ACTIVE_KINDS
from tests.e2e.support import create


def assert_labelled(response: httpx.Response) -> None:
    assert response.headers["X-Engines-Mode"] == "lab", response.request.url
    assert "lab" in response.headers["X-Engines-Lab"].lower()
    assert "not for production" in response.headers["X-Engines-Lab"]


async def test_every_kind_of_response_is_labelled_lab(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    note = await create(client)
    responses = [
        await client.post("/notes", json={"title": "labelled"}),  # 201
        await client.get(f"/notes/{note['note_id']}"),  # 200
        await client.put(f"/notes/{note['note_id']}", json={"title": "x"}),  # 200
        await client.put(
            f"/notes/{note['note_id']}", json={"title": "x"}, headers={"If-Match": '"1"'}
        ),  # 412
        await client.get("/notes"),  # 200
        await client.get("/notes/nope"),  # 404
        await client.post("/notes", json={}),  # 422
        await client.get("/notes", headers={"X-Tenant-Id": "other"}),  # 403
        await anonymous.get("/notes"),  # 401
        await anonymous.get("/healthz"),
        await anonymous.get("/openapi.json"),
        await anonymous.get("/no-such-route"),  # 404 from the router
        await client.delete(f"/notes/{note['note_id']}"),  # 200
    ]

    assert sorted({r.status_code for r in responses}) == [200, 201, 401, 403, 404, 412, 422]
    for response in responses:
        assert_labelled(response)


async def test_healthz_needs_no_token_and_lists_the_lab_routes(
    anonymous: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await anonymous.get("/healthz")

    assert response.status_code == 200
    health = response.json()
    assert (health["status"], health["mode"]) == ("ok", "lab")
    lab_lines = health["lab"]
    assert len(lab_lines) == len(runtime.lab_routes) > 0
    named = {line.split()[0] for line in lab_lines}
    assert {"event_spine", "spine_feed", "notes_store", "projection_checkpoints"} <= named
    assert named <= ACTIVE_KINDS
    assert "command_bus" not in named  # in-process, not a lab backend
    for line in lab_lines:
        assert "sqlite:" in line
        assert "LAB" in line


async def test_openapi_describes_the_notes_endpoints(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/openapi.json")

    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "Engines"
    paths = spec["paths"]
    assert set(paths["/notes"]) == {"get", "post"}
    assert set(paths["/notes/{note_id}"]) == {"get", "put", "delete"}
    assert "/healthz" in paths
    list_params = {p["name"] for p in paths["/notes"]["get"]["parameters"]}
    assert {"surface_id", "project_id", "tag", "cursor", "limit"} <= list_params
    put_params = {p["name"] for p in paths["/notes/{note_id}"]["put"]["parameters"]}
    assert "if-match" in {p.lower() for p in put_params}
    post = paths["/notes"]["post"]
    assert {"201", "202", "422"} <= post["responses"].keys()


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
async def test_the_api_documentation_is_served(anonymous: httpx.AsyncClient, path: str) -> None:
    response = await anonymous.get(path)

    assert response.status_code == 200
    assert_labelled(response)
