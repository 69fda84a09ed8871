"""Who and what a write comes from (DESIGN §3, §7): the principal's kind is the events'
source; agent, run, thread, step, parent event and trace come from headers or the body
and are recorded on every event; what no one gives stays absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from engines.auth import lab_secret
from engines.runtime import Runtime
from spine.codec import verify_chain
from spine.events import EventEnvelope
from tests.e2e.support import (
    Mint,
    bearer,
    client_for,
    create,
    field_paths,
    note_stream_id,
    problem,
    spine_events,
)

PROVENANCE = {
    "agent_id": "summarizer",
    "run_id": "run-42",
    "thread_id": "thread-7",
    "step_id": "step-3",
    "parent_event_id": "0192f1c2-0000-7000-8000-000000000001",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
}
HEADERS = {
    "X-Agent-Id": "summarizer",
    "X-Run-Id": "run-42",
    "X-Thread-Id": "thread-7",
    "X-Step-Id": "step-3",
    "X-Parent-Event-Id": "0192f1c2-0000-7000-8000-000000000001",
    "X-Trace-Id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "X-Span-Id": "00f067aa0ba902b7",
}


def provenance(event: EventEnvelope) -> dict[str, Any]:
    return {name: getattr(event, name) for name in PROVENANCE}


async def events_of(runtime: Runtime, note_id: str) -> list[EventEnvelope]:
    return await runtime.spine.read_stream(note_stream_id(note_id))


# -- the source is the principal's kind ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "source"),
    [("user", "ui"), ("agent", "agent"), ("connector", "connector"), ("tool", "tool")],
)
async def test_the_events_source_is_the_tokens_kind(
    runtime: Runtime, mint: Mint, kind: str, source: str
) -> None:
    async with client_for(runtime, mint(kind=kind)) as client:
        note = await create(client)
        await client.put(f"/notes/{note['note_id']}", json={"title": "again"})
        await client.delete(f"/notes/{note['note_id']}")

    assert [e.source for e in await events_of(runtime, note["note_id"])] == [source] * 3


async def test_a_token_without_a_kind_is_a_user(
    anonymous: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    claims = {"sub": "u1", "tenant_id": "t1", "surfaces": ["s1"], "exp": 2**40}
    token = jwt.encode(claims, lab_secret(tmp_path), algorithm="HS256")

    note = (await anonymous.post("/notes", json={"title": "t"}, headers=bearer(token))).json()

    (event,) = await events_of(runtime, note["note_id"])
    assert event.source == "ui"


@pytest.mark.parametrize(
    "bad",
    [{"kind": "robot"}, {"kind": 7}, {"roles": "admin"}, {"roles": [1]}, {"roles": ["root"]}],
)
async def test_a_kind_or_roles_claim_of_the_wrong_type_or_value_answers_401(
    anonymous: httpx.AsyncClient, runtime: Runtime, tmp_path: Path, bad: dict[str, Any]
) -> None:
    claims = {"sub": "u1", "tenant_id": "t1", "surfaces": ["s1"], "exp": 2**40, **bad}
    token = jwt.encode(claims, lab_secret(tmp_path), algorithm="HS256")

    response = await anonymous.post("/notes", json={"title": "t"}, headers=bearer(token))

    assert next(iter(bad)) in problem(response, 401)["detail"]
    assert await spine_events(runtime, "notes/") == 0


# -- provenance ----------------------------------------------------------------------------


async def test_without_provenance_every_field_is_absent(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    note = await create(client)
    await client.put(f"/notes/{note['note_id']}", json={"title": "again"})

    for event in await events_of(runtime, note["note_id"]):
        assert provenance(event) == dict.fromkeys(PROVENANCE)


async def test_provenance_headers_are_recorded_on_every_write(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post("/notes", json={"title": "t"}, headers=HEADERS)
    note_id = response.json()["note_id"]
    await client.put(f"/notes/{note_id}", json={"title": "u"}, headers=HEADERS)
    await client.delete(f"/notes/{note_id}", headers=HEADERS)

    events = await events_of(runtime, note_id)

    assert [provenance(e) for e in events] == [PROVENANCE] * 3
    assert verify_chain(events) == 3


async def test_provenance_may_come_in_the_body(client: httpx.AsyncClient, runtime: Runtime) -> None:
    note = await create(client, provenance=PROVENANCE)
    put = await client.put(
        f"/notes/{note['note_id']}", json={"title": "u", "provenance": {"step_id": "step-4"}}
    )

    created, updated = await events_of(runtime, note["note_id"])
    assert provenance(created) == PROVENANCE
    assert provenance(updated) == {**dict.fromkeys(PROVENANCE), "step_id": "step-4"}
    assert "provenance" not in created.payload
    assert "provenance" not in put.json()


async def test_a_w3c_traceparent_gives_the_trace_and_span(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    response = await client.post(
        "/notes", json={"title": "t"}, headers={"traceparent": traceparent}
    )

    (event,) = await events_of(runtime, response.json()["note_id"])
    assert (event.trace_id, event.span_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )


async def test_the_agent_and_run_of_a_notes_source_are_its_provenance(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    source = {"created_by": "agent", "agent_id": "a1", "run_id": "run-7"}

    note = await create(client, source=source, provenance={"step_id": "s-1"})

    (event,) = await events_of(runtime, note["note_id"])
    assert (event.agent_id, event.run_id, event.step_id) == ("a1", "run-7", "s-1")


@pytest.mark.parametrize(
    ("headers", "body", "loc"),
    [
        (
            {"X-Run-Id": "run-1"},
            {"provenance": {"run_id": "run-2"}},
            ("body", "provenance", "run_id"),
        ),
        (
            {"X-Agent-Id": "a1"},
            {"source": {"created_by": "agent", "agent_id": "a2"}},
            ("body", "provenance", "agent_id"),
        ),
        (
            {"X-Trace-Id": "1" * 32, "traceparent": f"00-{'2' * 32}-{'3' * 16}-01"},
            {},
            ("header", "traceparent"),
        ),
        ({"X-Run-Id": "has space"}, {}, ("header", "x-run-id")),
        ({"X-Span-Id": "s" * 65}, {}, ("header", "x-span-id")),
        ({"traceparent": "not-a-trace"}, {}, ("header", "traceparent")),
        ({"traceparent": f"00-{'0' * 32}-{'3' * 16}-01"}, {}, ("header", "traceparent")),
    ],
    ids=[
        "header-vs-body",
        "header-vs-source",
        "trace-id-vs-traceparent",
        "space",
        "too-long",
        "malformed-traceparent",
        "zero-trace-id",
    ],
)
async def test_contradictory_or_malformed_provenance_answers_422_and_writes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    headers: dict[str, str],
    body: dict[str, Any],
    loc: tuple[str, ...],
) -> None:
    response = await client.post("/notes", json={"title": "t", **body}, headers=headers)

    assert loc in field_paths(response)
    assert await spine_events(runtime) == 0
