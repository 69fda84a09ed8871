"""Notes over HTTP, end to end: the contract of ``/notes`` and the spine beneath it."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from spine.codec import verify_chain
from spine.events import EventEnvelope
from tests.e2e.support import (
    PROJECT,
    SURFACE,
    TENANT,
    USER,
    Mint,
    client_for,
    create,
    note_stream_id,
    problem,
    spine_events,
)

NOTE_FIELDS = {
    "note_id",
    "version",
    "tenant_id",
    "mode",
    "title",
    "content_type",
    "content",
    "tags",
    "source",
    "user_id",
    "surface_id",
    "project_id",
    "timestamps",
}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- create, read, update, delete --------------------------------------------------------


async def test_create_answers_201_with_the_note_its_etag_and_location(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/notes",
        json={
            "title": "Groceries",
            "content_type": "markdown",
            "content": "- milk\n- eggs",
            "tags": ["home", "todo"],
            "project_id": PROJECT,
        },
    )

    assert response.status_code == 201, response.text
    note = response.json()
    assert note.keys() == NOTE_FIELDS
    assert note["version"] == 1
    assert note["title"] == "Groceries"
    assert note["content_type"] == "markdown"
    assert note["content"] == "- milk\n- eggs"
    assert note["tags"] == ["home", "todo"]
    assert note["source"] == {"created_by": "user", "agent_id": None, "run_id": None}
    assert (note["user_id"], note["surface_id"], note["project_id"]) == (USER, SURFACE, PROJECT)
    assert (note["tenant_id"], note["mode"]) == (TENANT, "lab")
    assert note["timestamps"].keys() == {"created_at", "updated_at"}
    assert note["timestamps"]["created_at"] == note["timestamps"]["updated_at"]
    parse_time(note["timestamps"]["created_at"])
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"/notes/{note['note_id']}"


async def test_a_note_written_by_an_agent_keeps_its_source(client: httpx.AsyncClient) -> None:
    source = {"created_by": "agent", "agent_id": "summarizer", "run_id": "run-42"}
    note = await create(client, content_type="json", content={"k": [1, 2]}, source=source)

    assert note["source"] == source
    assert note["content"] == {"k": [1, 2]}
    fetched = (await client.get(f"/notes/{note['note_id']}")).json()
    assert fetched["source"] == source


@pytest.mark.parametrize(
    ("content", "inferred"),
    [({"k": [1]}, "json"), ([1, "two"], "json"), ("# title", "markdown"), (None, None)],
    ids=["object", "array", "string", "omitted"],
)
async def test_an_omitted_content_type_is_inferred_from_the_content(
    client: httpx.AsyncClient, runtime: Runtime, content: Any, inferred: str | None
) -> None:
    fields = {} if content is None else {"content": content}

    note = await create(client, **fields)

    assert note["content_type"] == (inferred or "markdown")
    (event,) = await runtime.spine.read_stream(note_stream_id(note["note_id"]))
    assert event.payload["content_type"] == note["content_type"]
    updated = await client.put(f"/notes/{note['note_id']}", json={"title": "t", **fields})
    assert updated.json()["content_type"] == note["content_type"]


async def test_a_stated_content_type_wins_over_inference(client: httpx.AsyncClient) -> None:
    note = await create(client, content_type="json", content="a JSON string")

    assert (note["content_type"], note["content"]) == ("json", "a JSON string")


async def test_text_content_is_kept_verbatim(client: httpx.AsyncClient) -> None:
    note = await create(client, content_type="text", content="plain\ttext ✓")

    fetched = (await client.get(f"/notes/{note['note_id']}")).json()
    assert (fetched["content_type"], fetched["content"]) == ("text", "plain\ttext ✓")


async def test_get_returns_the_note_with_its_etag(client: httpx.AsyncClient) -> None:
    note = await create(client, title="read me", tags=["x"])

    response = await client.get(f"/notes/{note['note_id']}")

    assert response.status_code == 200
    assert response.json() == note
    assert response.headers["ETag"] == '"1"'


async def test_put_replaces_the_editable_fields_and_bumps_the_version(
    client: httpx.AsyncClient,
) -> None:
    note = await create(client, title="v1", content="one", tags=["a", "b"])
    await asyncio.sleep(0.002)  # updated_at has microsecond resolution

    response = await client.put(
        f"/notes/{note['note_id']}",
        json={"title": "v2", "content_type": "json", "content": {"two": 2}, "tags": ["c"]},
    )

    assert response.status_code == 200, response.text
    updated = response.json()
    assert response.headers["ETag"] == '"2"'
    assert updated["version"] == 2
    assert (updated["title"], updated["content_type"], updated["content"], updated["tags"]) == (
        "v2",
        "json",
        {"two": 2},
        ["c"],
    )
    created, changed = updated["timestamps"]["created_at"], updated["timestamps"]["updated_at"]
    assert created == note["timestamps"]["created_at"]
    assert parse_time(changed) > parse_time(note["timestamps"]["updated_at"])
    assert (updated["user_id"], updated["surface_id"], updated["source"]) == (
        note["user_id"],
        note["surface_id"],
        note["source"],
    )


async def test_put_is_a_full_replacement_so_omitted_fields_take_their_defaults(
    client: httpx.AsyncClient,
) -> None:
    note = await create(client, title="full", content="body", tags=["keep?"])

    updated = (await client.put(f"/notes/{note['note_id']}", json={"title": "only"})).json()

    assert (updated["content"], updated["tags"], updated["content_type"]) == ("", [], "markdown")


async def test_put_with_the_current_if_match_succeeds(client: httpx.AsyncClient) -> None:
    note = await create(client)

    response = await client.put(
        f"/notes/{note['note_id']}", json={"title": "next"}, headers={"If-Match": '"1"'}
    )

    assert response.status_code == 200
    assert response.json()["version"] == 2


async def test_a_weak_etag_never_matches_if_match_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client)
    url = f"/notes/{note['note_id']}"

    put = await client.put(url, json={"title": "next"}, headers={"If-Match": 'W/"1"'})
    delete = await client.delete(url, headers={"If-Match": 'W/"1"'})

    problem(put, 412)
    problem(delete, 412)
    assert len(await runtime.spine.read_stream(note_stream_id(note["note_id"]))) == 1


@pytest.mark.parametrize("tag", ['"01"', '"-1"', '"1.5"', '"' + "9" * 19 + '"', '"v1"', 'W/"01"'])
async def test_an_etag_that_is_not_the_versions_own_never_matches(
    client: httpx.AsyncClient, runtime: Runtime, tag: str
) -> None:
    note = await create(client)

    put = await client.put(
        f"/notes/{note['note_id']}", json={"title": "x"}, headers={"If-Match": tag}
    )

    problem(put, 412)
    assert len(await runtime.spine.read_stream(note_stream_id(note["note_id"]))) == 1


async def test_if_match_star_writes_a_note_that_exists(client: httpx.AsyncClient) -> None:
    note = await create(client)
    url = f"/notes/{note['note_id']}"

    put = await client.put(url, json={"title": "next"}, headers={"If-Match": "*"})
    missing = await client.put("/notes/nope", json={"title": "x"}, headers={"If-Match": "*"})
    delete = await client.delete(url, headers={"If-Match": "*"})

    assert (put.status_code, put.json()["version"]) == (200, 2)
    problem(missing, 404)
    assert delete.status_code == 200


async def test_if_none_match_star_refuses_to_change_a_note_that_exists(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client)
    url = f"/notes/{note['note_id']}"

    put = await client.put(url, json={"title": "x"}, headers={"If-None-Match": "*"})
    delete = await client.delete(url, headers={"If-None-Match": "*"})
    missing = await client.put("/notes/nope", json={"title": "x"}, headers={"If-None-Match": "*"})

    problem(put, 412)
    problem(delete, 412)
    problem(missing, 404)
    assert len(await runtime.spine.read_stream(note_stream_id(note["note_id"]))) == 1


async def test_if_none_match_star_creates_once_and_refuses_a_replay(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"If-None-Match": "*", "Idempotency-Key": "k"}

    first = await client.post("/notes", json={"title": "t"}, headers=headers)
    before = await spine_events(runtime)
    replay = await client.post("/notes", json={"title": "t"}, headers=headers)

    assert first.status_code == 201
    problem(replay, 412)
    assert await spine_events(runtime) == before


@pytest.mark.parametrize(
    "headers",
    [{"If-None-Match": '"1"'}, {"If-None-Match": "*", "If-Match": '"1"'}],
    ids=["etag", "both"],
)
async def test_if_none_match_other_than_star_or_beside_if_match_answers_422(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str]
) -> None:
    note = await create(client)
    before = await spine_events(runtime)

    put = await client.put(f"/notes/{note['note_id']}", json={"title": "x"}, headers=headers)

    problem(put, 422)
    assert await spine_events(runtime) == before


async def test_put_with_a_stale_if_match_answers_412_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client)
    await client.put(f"/notes/{note['note_id']}", json={"title": "second"})
    before = await runtime.spine.read_stream(note_stream_id(note["note_id"]))

    response = await client.put(
        f"/notes/{note['note_id']}", json={"title": "lost update"}, headers={"If-Match": '"1"'}
    )

    assert response.status_code == 412, response.text
    assert await runtime.spine.read_stream(note_stream_id(note["note_id"])) == before
    assert (await client.get(f"/notes/{note['note_id']}")).json()["title"] == "second"


async def test_delete_with_a_stale_if_match_answers_412_and_keeps_the_note(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client)
    await client.put(f"/notes/{note['note_id']}", json={"title": "second"})

    response = await client.delete(f"/notes/{note['note_id']}", headers={"If-Match": '"1"'})

    assert response.status_code == 412
    assert len(await runtime.spine.read_stream(note_stream_id(note["note_id"]))) == 2
    assert (await client.get(f"/notes/{note['note_id']}")).status_code == 200


async def test_delete_with_the_current_if_match_deletes(client: httpx.AsyncClient) -> None:
    note = await create(client)

    response = await client.delete(f"/notes/{note['note_id']}", headers={"If-Match": '"1"'})

    assert response.status_code == 200
    assert response.json() == {"note_id": note["note_id"], "version": 2, "deleted": True}
    assert response.headers["ETag"] == '"2"'


async def test_a_deleted_note_answers_404_to_get_put_and_delete(
    client: httpx.AsyncClient,
) -> None:
    note = await create(client)
    assert (await client.delete(f"/notes/{note['note_id']}")).status_code == 200

    assert (await client.get(f"/notes/{note['note_id']}")).status_code == 404
    assert (await client.put(f"/notes/{note['note_id']}", json={"title": "x"})).status_code == 404
    assert (await client.delete(f"/notes/{note['note_id']}")).status_code == 404


async def test_a_note_that_never_existed_answers_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/notes/no-such-note"),
        await client.put("/notes/no-such-note", json={"title": "x"}),
        await client.delete("/notes/no-such-note"),
    ):
        assert problem(response, 404)["type"] == "urn:engines:problem:not-found"


# -- every write is a spine event ---------------------------------------------------------


async def test_create_update_and_delete_are_chained_events_on_the_notes_stream(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client, title="spined", tags=["t"], project_id=PROJECT)
    note_id = note["note_id"]
    await client.put(f"/notes/{note_id}", json={"title": "spined again"})
    await client.delete(f"/notes/{note_id}")

    events = await runtime.spine.read_stream(f"notes/{TENANT}/lab/{note_id}")

    assert [e.event_type for e in events] == ["note.created", "note.updated", "note.deleted"]
    assert [e.seq for e in events] == [1, 2, 3]
    for event in events:
        assert (event.tenant_id, event.mode, event.user_id) == (TENANT, "lab", USER)
        assert (event.surface_id, event.project_id) == (SURFACE, PROJECT)
        assert event.family == "domain"
        assert event.route == "event_spine"
    assert events[0].payload["title"] == "spined"
    assert events[0].payload["note_id"] == note_id
    assert events[1].payload["title"] == "spined again"
    assert len({e.command_id for e in events}) == 3
    assert verify_chain(events) == 3


async def test_a_notes_agent_and_run_are_recorded_as_the_events_provenance(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    source = {"created_by": "agent", "agent_id": "a1", "run_id": "run-7"}
    note = await create(client, source=source)

    (event,) = await runtime.spine.read_stream(note_stream_id(note["note_id"]))

    assert (event.agent_id, event.run_id) == ("a1", "run-7")
    assert event.source == "ui"  # the token's kind (a user) is the source
    assert event.payload["source"] == source


# -- read-your-writes and the 202 path ----------------------------------------------------


async def test_a_write_is_visible_to_the_very_next_read(client: httpx.AsyncClient) -> None:
    for i in range(5):
        note = await create(client, title=f"now {i}")
        listed = (await client.get("/notes")).json()["items"]
        assert listed[0]["note_id"] == note["note_id"]
        updated = (
            await client.put(f"/notes/{note['note_id']}", json={"title": f"later {i}"})
        ).json()
        fetched = (await client.get(f"/notes/{note['note_id']}")).json()
        assert fetched == updated


async def test_without_projectors_a_write_answers_202_with_its_version(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    no_wait = settings.model_copy(update={"write_wait_seconds": 0})
    async with (
        bootstrap(no_wait, tmp_path, run_projectors=False) as runtime,
        client_for(runtime, mint()) as client,
    ):
        response = await client.post("/notes", json={"title": "pending"})

        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["version"] == 1
        assert accepted["status"] == "accepted"
        assert response.headers["ETag"] == '"1"'
        note_id = accepted["note_id"]
        assert len(await runtime.spine.read_stream(note_stream_id(note_id))) == 1
        assert (await client.get(f"/notes/{note_id}")).status_code == 404

        update = await client.put(f"/notes/{note_id}", json={"title": "still pending"})
        assert (update.status_code, update.json()["version"]) == (202, 2)

        await runtime.catch_up()
        fetched = await client.get(f"/notes/{note_id}")
        assert fetched.status_code == 200
        assert (fetched.json()["title"], fetched.json()["version"]) == ("still pending", 2)


# -- listing ----------------------------------------------------------------------------


async def test_list_pages_through_every_note_newest_first_without_duplicates(
    client: httpx.AsyncClient,
) -> None:
    created = [(await create(client, title=f"n{i}"))["note_id"] for i in range(7)]

    seen: list[dict[str, object]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/notes", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    ids = [n["note_id"] for n in seen]
    assert pages == 3
    assert len(ids) == len(set(ids)) == 7
    assert set(ids) == set(created)
    stamps = [parse_time(str(n["timestamps"]["created_at"])) for n in seen]
    assert stamps == sorted(stamps, reverse=True)


async def test_the_list_is_ordered_by_creation_so_an_update_does_not_move_a_note(
    client: httpx.AsyncClient,
) -> None:
    first = await create(client, title="first")
    await create(client, title="second")

    await client.put(f"/notes/{first['note_id']}", json={"title": "first, edited"})

    items = (await client.get("/notes")).json()["items"]
    assert [n["title"] for n in items] == ["second", "first, edited"]


async def walk(client: httpx.AsyncClient, limit: int, between_pages: Any = None) -> list[str]:
    """Every note id a walk of the list's pages returns, calling ``between_pages(n)``
    after page n."""
    seen: list[str] = []
    cursor: str | None = None
    for n in itertools.count(1):
        params: dict[str, str | int] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/notes", params=params)).json()
        seen += [item["note_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if between_pages is not None:
            await between_pages(n)
    raise AssertionError("unreachable")


async def test_a_note_updated_during_a_walk_of_the_pages_is_still_returned(
    client: httpx.AsyncClient,
) -> None:
    ids = [(await create(client, title=f"n{i}"))["note_id"] for i in range(6)]

    async def update_n0(page: int) -> None:
        if page == 1:
            put = await client.put(f"/notes/{ids[0]}", json={"title": "n0, edited"})
            assert put.status_code == 200

    seen = await walk(client, 2, update_n0)

    assert seen == ids[::-1]  # newest created first; n0 last, and not skipped


async def test_a_walk_returns_every_note_that_existed_when_it_began_despite_edits(
    client: httpx.AsyncClient,
) -> None:
    ids = [(await create(client, title=f"n{i}"))["note_id"] for i in range(7)]

    async def churn(page: int) -> None:
        for note_id in ids:
            await client.put(f"/notes/{note_id}", json={"title": f"edited after page {page}"})
        await create(client, title=f"new during page {page}")

    seen = await walk(client, 2, churn)

    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen))


async def test_list_filters_by_surface_project_and_tag(runtime: Runtime, mint: Mint) -> None:
    token = mint(surfaces=["s1", "s2"], projects=["p1", "p2"])
    async with client_for(runtime, token) as client:
        a = await create(client, surface_id="s1", project_id="p1", tags=["red"])
        b = await create(client, surface_id="s1", project_id="p2", tags=["blue"])
        c = await create(client, surface_id="s2", project_id="p1", tags=["red", "blue"])
        d = await create(client, surface_id="s2", project_id="p2", tags=["green"])

        async def ids(**params: str) -> set[str]:
            response = await client.get("/notes", params=params)
            assert response.status_code == 200, response.text
            return {n["note_id"] for n in response.json()["items"]}

        assert await ids() == {a["note_id"], b["note_id"], c["note_id"], d["note_id"]}
        assert await ids(surface_id="s1") == {a["note_id"], b["note_id"]}
        assert await ids(project_id="p1") == {a["note_id"], c["note_id"]}
        assert await ids(tag="red") == {a["note_id"], c["note_id"]}
        assert await ids(tag="blue", surface_id="s2") == {c["note_id"]}
        assert await ids(surface_id="s2", project_id="p2") == {d["note_id"]}
        assert await ids(surface_id="s1", tag="green") == set()
        assert await ids(tag="nothing") == set()


async def test_a_deleted_note_leaves_the_list(client: httpx.AsyncClient) -> None:
    keep = await create(client, title="keep")
    drop = await create(client, title="drop")

    await client.delete(f"/notes/{drop['note_id']}")

    assert [n["note_id"] for n in (await client.get("/notes")).json()["items"]] == [keep["note_id"]]


# -- idempotency --------------------------------------------------------------------------


async def test_the_same_idempotency_key_twice_creates_one_note_and_one_event(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "order-123"}
    first = await client.post("/notes", json={"title": "once"}, headers=headers)
    before = await spine_events(runtime)

    second = await client.post("/notes", json={"title": "once"}, headers=headers)

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert await spine_events(runtime) == before
    assert len(await runtime.spine.read_stream(note_stream_id(first.json()["note_id"]))) == 1
    assert len((await client.get("/notes")).json()["items"]) == 1


async def test_different_idempotency_keys_create_different_notes(
    client: httpx.AsyncClient,
) -> None:
    a = await client.post("/notes", json={"title": "a"}, headers={"Idempotency-Key": "k-1"})
    b = await client.post("/notes", json={"title": "b"}, headers={"Idempotency-Key": "k-2"})

    assert a.json()["note_id"] != b.json()["note_id"]


async def test_an_idempotency_key_is_per_user(runtime: Runtime, mint: Mint) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    async with client_for(runtime, mint(user_id="u1")) as one:
        a = await one.post("/notes", json={"title": "mine"}, headers=headers)
    async with client_for(runtime, mint(user_id="u2")) as two:
        b = await two.post("/notes", json={"title": "yours"}, headers=headers)

    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["note_id"] != b.json()["note_id"]
    assert b.json()["title"] == "yours"


# -- concurrency --------------------------------------------------------------------------


async def test_concurrent_puts_with_the_same_if_match_let_exactly_one_win(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client)

    responses = await asyncio.gather(
        *(
            client.put(
                f"/notes/{note['note_id']}",
                json={"title": f"writer {i}"},
                headers={"If-Match": '"1"'},
            )
            for i in range(10)
        )
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 9
    events = await runtime.spine.read_stream(note_stream_id(note["note_id"]))
    assert [e.seq for e in events] == [1, 2]
    (winner,) = [r for r in responses if r.status_code == 200]
    assert events[1].payload["title"] == winner.json()["title"]


async def put_concurrently(
    client: httpx.AsyncClient, runtime: Runtime, writers: int
) -> tuple[list[httpx.Response], list[EventEnvelope]]:
    note = await create(client)
    responses = await asyncio.gather(
        *(
            client.put(f"/notes/{note['note_id']}", json={"title": f"writer {i}"})
            for i in range(writers)
        )
    )
    return list(responses), await runtime.spine.read_stream(note_stream_id(note["note_id"]))


def assert_every_write_kept_once_in_order(
    responses: list[httpx.Response], events: list[EventEnvelope]
) -> None:
    writers = len(responses)
    assert [r.status_code for r in responses] == [200] * writers, [r.text for r in responses]
    assert [e.seq for e in events] == list(range(1, writers + 2))
    assert sorted(e.payload["title"] for e in events[1:]) == sorted(
        f"writer {i}" for i in range(writers)
    )
    assert verify_chain(events) == writers + 1
    for response in responses:
        # Each answer shows the note at or after its own write, tagged with that version.
        assert 2 <= response.json()["version"] <= writers + 1
        assert response.headers["ETag"] == f'"{response.json()["version"]}"'


async def test_ten_concurrent_puts_without_if_match_all_succeed_with_contiguous_versions(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses, events = await put_concurrently(client, runtime, 10)

    assert_every_write_kept_once_in_order(responses, events)


async def test_a_few_concurrent_puts_without_if_match_all_succeed_with_contiguous_versions(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses, events = await put_concurrently(client, runtime, 4)

    assert_every_write_kept_once_in_order(responses, events)


async def test_two_callers_cannot_both_create_with_one_idempotency_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "race"}

    responses = await asyncio.gather(
        *(client.post("/notes", json={"title": "race"}, headers=headers) for _ in range(5))
    )

    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["note_id"] for r in responses}) == 1
    note_id = responses[0].json()["note_id"]
    assert len(await runtime.spine.read_stream(note_stream_id(note_id))) == 1


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    for _ in itertools.count():
        if await condition():
            return
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def test_the_etag_of_a_write_response_names_the_version_of_the_body_it_carries(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    """When another write lands before the view is read, the answer shows the newer note;
    its ETag must then be that note's version, not the older one of the write."""
    waiting = settings.model_copy(update={"write_wait_seconds": 10})
    async with (
        bootstrap(waiting, tmp_path, run_projectors=False) as runtime,
        client_for(runtime, mint()) as client,
    ):

        async def spine_has_the_note() -> bool:
            return await spine_events(runtime) >= 1

        post = asyncio.create_task(client.post("/notes", json={"title": "v1"}))
        await until(spine_has_the_note)
        await runtime.catch_up()
        note = (await post).json()
        stream = note_stream_id(note["note_id"])

        async def stream_has(n: int) -> bool:
            return len(await runtime.spine.read_stream(stream)) >= n

        mine = asyncio.create_task(client.put(f"/notes/{note['note_id']}", json={"title": "v2"}))
        await until(lambda: stream_has(2))
        theirs = asyncio.create_task(client.put(f"/notes/{note['note_id']}", json={"title": "v3"}))
        await until(lambda: stream_has(3))
        await runtime.catch_up()
        response, _ = await asyncio.gather(mine, theirs)

    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["version"]) == ("v3", 3)
    assert response.headers["ETag"] == '"3"'


async def test_an_idempotency_key_reused_for_a_different_request_answers_409(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "once"}
    first = await client.post("/notes", json={"title": "first"}, headers=headers)
    before = await spine_events(runtime)

    reused = await client.post("/notes", json={"title": "second"}, headers=headers)

    assert first.status_code == 201
    assert "Idempotency-Key" in problem(reused, 409)["detail"]
    assert await spine_events(runtime) == before


async def test_a_locked_database_answers_503_and_the_service_recovers(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    sqlite_settings = settings.connections.sqlite.model_copy(update={"busy_timeout_ms": 200})
    connections = settings.connections.model_copy(update={"sqlite": sqlite_settings})
    locked = settings.model_copy(update={"connections": connections})
    async with bootstrap(locked, tmp_path) as runtime, client_for(runtime, mint()) as client:
        other = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            down = await client.post("/notes", json={"title": "t"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        up = await client.post("/notes", json={"title": "t"})

    assert problem(down, 503)["type"] == "urn:engines:problem:backend-unavailable"
    assert "route 'spine_events'" in problem(down, 503)["detail"]  # the table, not the file
    assert up.status_code == 201


async def test_a_put_that_changes_nothing_appends_nothing_and_keeps_the_version(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client, title="same", content="body", tags=["t"])
    body = {"title": "same", "content": "body", "tags": ["t"]}
    before = await spine_events(runtime)

    again = await client.put(f"/notes/{note['note_id']}", json=body)
    pinned = await client.put(f"/notes/{note['note_id']}", json=body, headers={"If-Match": '"1"'})

    assert (again.status_code, again.json()["version"], again.headers["ETag"]) == (200, 1, '"1"')
    assert pinned.status_code == 200
    assert await spine_events(runtime) == before
    await client.put(f"/notes/{note['note_id']}", json={**body, "title": "changed"})
    stale = await client.put(
        f"/notes/{note['note_id']}", json={**body, "title": "changed"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412  # a stale precondition fails even when nothing changes
