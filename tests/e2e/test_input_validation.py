"""Bad input answers 422, names what is wrong, and writes nothing to the spine."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from engines.runtime import Runtime
from tests.e2e.support import create, field_paths, problem, spine_events


@pytest.fixture
async def unchanged(runtime: Runtime) -> AsyncIterator[None]:
    """Asserts that the test wrote nothing at all to the spine."""
    before = await spine_events(runtime)
    yield
    assert await spine_events(runtime) == before, "the spine changed"


@pytest.fixture
async def existing(client: httpx.AsyncClient) -> dict[str, Any]:
    """A note to aim bad updates at (made before ``unchanged`` takes the head)."""
    return await create(client, title="target")


# -- the note body ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ("body", "title")),
        ({"title": ""}, ("body", "title")),
        ({"title": "x" * 501}, ("body", "title")),
        ({"title": 42}, ("body", "title")),
        ({"title": "t", "content_type": "html"}, ("body", "content_type")),
        ({"title": "t", "content_type": "text", "content": {"a": 1}}, ("body",)),
        ({"title": "t", "content_type": None}, ("body", "content_type")),
        ({"title": "t", "content_type": "markdown", "content": [1, 2]}, ("body",)),
        ({"title": "t", "owner": "root"}, ("body", "owner")),
        ({"title": "t", "user_id": "someone"}, ("body", "user_id")),
        ({"title": "t", "version": 9}, ("body", "version")),
        ({"title": "t", "tags": "a,b"}, ("body", "tags")),
        ({"title": "t", "tags": [""]}, ("body", "tags", 0)),
        ({"title": "t", "tags": ["   "]}, ("body", "tags", 0)),
        ({"title": "t", "tags": ["a,b"]}, ("body", "tags", 0)),
        ({"title": "t", "tags": ["x" * 65]}, ("body", "tags", 0)),
        ({"title": "t", "tags": [7]}, ("body", "tags", 0)),
        ({"title": "t", "tags": ["dup", "dup"]}, ("body",)),
        ({"title": "t", "tags": [f"t{i}" for i in range(65)]}, ("body", "tags")),
        ({"title": "t", "source": {"created_by": "robot"}}, ("body", "source", "created_by")),
        ({"title": "t", "source": {"created_by": "agent"}}, ("body", "source")),
        ({"title": "t", "surface_id": "../s1"}, ("body", "surface_id")),
        ({"title": "t", "project_id": "p/1"}, ("body", "project_id")),
        ({"title": "t", "provenance": {"run_id": "has space"}}, ("body", "provenance", "run_id")),
        ({"title": "t", "provenance": {"trace_id": "x" * 65}}, ("body", "provenance", "trace_id")),
        ({"title": "t", "provenance": {"who": "me"}}, ("body", "provenance", "who")),
        ({"title": "t", "source": {"agent_id": "a b"}}, ("body", "source", "agent_id")),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None,
)
@pytest.mark.usefixtures("unchanged")
async def test_a_bad_note_body_answers_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    response = await client.post("/notes", json=body)

    assert loc in field_paths(response)


async def test_json_content_is_accepted_as_object_list_number_or_null(
    client: httpx.AsyncClient,
) -> None:
    for content in ({"nested": {"a": [1, 2, None]}}, [1, "two", 3.5], 7, None, "a string"):
        note = await create(client, content_type="json", content=content)
        assert note["content"] == content


@pytest.mark.usefixtures("unchanged")
async def test_content_over_256_kib_answers_422(client: httpx.AsyncClient) -> None:
    # with its quotes, one byte over the limit
    response = await client.post("/notes", json={"title": "big", "content": "x" * 262_143})

    assert (
        "content is 262145 bytes encoded; the limit is 262144" in problem(response, 422)["detail"]
    )


@pytest.mark.usefixtures("unchanged")
async def test_a_body_that_is_not_json_answers_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/notes", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert field_paths(response)[0][0] == "body"


@pytest.mark.usefixtures("existing", "unchanged")
async def test_a_bad_update_body_answers_422_and_leaves_the_note(
    client: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    url = f"/notes/{existing['note_id']}"

    missing_title = await client.put(url, json={"content": "no title"})
    unknown_field = await client.put(url, json={"title": "t", "created_at": "yesterday"})
    source_on_update = await client.put(url, json={"title": "t", "source": {}})

    assert ("body", "title") in field_paths(missing_title)
    assert ("body", "created_at") in field_paths(unknown_field)
    assert ("body", "source") in field_paths(source_on_update)
    assert (await client.get(url)).json()["title"] == "target"


# -- the note id in the path --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "/notes/%2E%2E",  # ".."
        "/notes/..%2Fetc%2Fpasswd",  # "../etc/passwd"
        "/notes/a%2Fb",  # "a/b"
        "/notes/a/b",
        "/notes/-leading-dash",
        "/notes/with%20space",
        "/notes/semi%3Bcolon",
        "/notes/" + "x" * 129,
        "/notes/%00",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.usefixtures("unchanged")
async def test_a_bad_note_id_in_the_path_answers_422_naming_note_id(
    client: httpx.AsyncClient, method: str, raw_path: str
) -> None:
    body = {"title": "t"} if method == "PUT" else None
    url = httpx.URL("http://test").copy_with(raw_path=raw_path.encode())

    response = await client.request(method, url, json=body)

    assert ("path", "note_id") in field_paths(response)


# -- headers and query parameters --------------------------------------------------------


@pytest.mark.parametrize("if_match", ["abc", '"1", "2"', "", "1", '"1', "W/1", '"1 "'])
@pytest.mark.usefixtures("existing", "unchanged")
async def test_a_bad_if_match_answers_422(
    client: httpx.AsyncClient, existing: dict[str, Any], if_match: str
) -> None:
    url = f"/notes/{existing['note_id']}"

    put = await client.put(url, json={"title": "t"}, headers={"If-Match": if_match})
    delete = await client.delete(url, headers={"If-Match": if_match})

    assert ("header", "if-match") in field_paths(put)
    assert ("header", "if-match") in field_paths(delete)
    assert "If-Match" in put.json()["detail"]


@pytest.mark.usefixtures("unchanged")
async def test_an_idempotency_key_over_128_characters_answers_422(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/notes", json={"title": "t"}, headers={"Idempotency-Key": "k" * 129}
    )

    assert ("header", "idempotency-key") in field_paths(response)


@pytest.mark.parametrize("limit", ["0", "-1", "201", "ten", "1e3"])
async def test_a_limit_out_of_range_answers_422(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get("/notes", params={"limit": limit})

    assert ("query", "limit") in field_paths(response)


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        "é",
        "AAAA",
        b64({"a": 1}),
        b64([1, 2, 3]),
        b64(["2024-01-01", 5]),
        b64([None, "key"]),
        b64([[1], "key"]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "x" * 513,
    ],
)
async def test_a_malformed_cursor_answers_422_not_500(
    client: httpx.AsyncClient, cursor: str
) -> None:
    await create(client)

    response = await client.get("/notes", params={"cursor": cursor})

    problem(response, 422)


async def test_a_well_formed_cursor_from_elsewhere_just_pages_on(
    client: httpx.AsyncClient,
) -> None:
    await create(client)

    response = await client.get("/notes", params={"cursor": b64(["9999-12-31", "zzz"])})

    assert response.status_code == 200
    assert len(response.json()["items"]) == 1


@pytest.mark.parametrize("tag", ["", "a,b", " ", "x" * 65])
async def test_a_bad_tag_filter_answers_422(client: httpx.AsyncClient, tag: str) -> None:
    response = await client.get("/notes", params={"tag": tag})

    assert ("query", "tag") in field_paths(response)


@pytest.mark.parametrize(
    ("name", "value"), [("surface_id", "../x"), ("project_id", "a/b"), ("surface_id", "")]
)
async def test_a_bad_scope_filter_answers_422(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    response = await client.get("/notes", params={name: value})

    assert ("query", name) in field_paths(response)


@pytest.mark.parametrize(
    "tag",
    ["a\x00b", "line\nbreak", "bell\x07", "tab\there", "rtl\u202eoverride"],
    ids=["nul", "newline", "bell", "tab", "bidi-override"],
)
@pytest.mark.usefixtures("unchanged")
async def test_a_tag_with_control_characters_answers_422(
    client: httpx.AsyncClient, tag: str
) -> None:
    response = await client.post("/notes", json={"title": "t", "tags": [tag]})

    assert ("body", "tags", 0) in field_paths(response)


async def test_hostile_looking_but_printable_tags_are_stored_verbatim(
    client: httpx.AsyncClient,
) -> None:
    tags = ["<script>alert(1)</script>", "'; DROP TABLE notes;--", "%s%n", "ünïcødé", "$.tags"]

    note = await create(client, tags=tags)

    assert note["tags"] == tags
    for tag in tags:
        listed = (await client.get("/notes", params={"tag": tag})).json()["items"]
        assert [n["note_id"] for n in listed] == [note["note_id"]]


@pytest.mark.usefixtures("unchanged")
async def test_a_lone_surrogate_in_a_string_answers_422_not_500(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/notes", content=b'{"title": "a\\ud800"}', headers={"content-type": "application/json"}
    )

    assert field_paths(response) == [("body", 12)]


@pytest.mark.usefixtures("unchanged")
async def test_json_content_nested_too_deep_answers_422_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    deep: Any = "leaf"
    for _ in range(120):
        deep = {"d": deep}

    response = await client.post(
        "/notes", json={"title": "t", "content_type": "json", "content": deep}
    )

    problem(response, 422)
