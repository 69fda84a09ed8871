"""The HTTP edge (DESIGN §9): identity before the body, body limits, strict JSON, header
hygiene, and problem details for every error — each status declared in OpenAPI."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from engines.domains import DOMAINS
from engines.http import build_app
from engines.runtime import Runtime, bootstrap
from engines.settings import HttpSettings, Settings
from tests.e2e.support import (
    AppClient,
    audit_events,
    bearer,
    client_for,
    create,
    field_paths,
    problem,
    spine_events,
)

MB = 1_000_000


class CountingBody:
    """A request body streamed in ``chunks`` pieces of ``size`` bytes, counting how many
    the server pulled."""

    def __init__(self, chunks: int, size: int = MB) -> None:
        self.chunks, self.size, self.pulled = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b" " * self.size


@pytest.fixture
async def unchanged(runtime: Runtime) -> AsyncIterator[None]:
    """Asserts that the test wrote nothing at all to the spine."""
    before = await spine_events(runtime)
    yield
    assert await spine_events(runtime) == before, "the spine changed"


# -- identity before the body; body limits -------------------------------------------------


async def test_a_60_mb_body_without_a_token_is_refused_before_a_byte_is_read(
    anonymous: AppClient, runtime: Runtime
) -> None:
    body = CountingBody(60)

    response = await anonymous.post(
        "/notes", content=body, headers={"content-type": "application/json"}
    )

    problem(response, 401)
    assert body.pulled == 0
    assert await spine_events(runtime, "notes/") == 0


async def test_a_declared_body_over_the_limit_answers_413_before_it_is_read(
    client: AppClient, runtime: Runtime
) -> None:
    body = CountingBody(60)
    headers = {"content-type": "application/json", "content-length": str(60 * MB)}

    response = await client.post("/notes", content=body, headers=headers)

    assert "limit" in problem(response, 413)["detail"]
    assert body.pulled == 0
    assert await spine_events(runtime) == 0


async def test_a_streamed_body_over_the_limit_answers_413_once_past_it(
    client: AppClient, runtime: Runtime
) -> None:
    body = CountingBody(60)  # chunked: no Content-Length to check first

    response = await client.post(
        "/notes", content=body, headers={"content-type": "application/json"}
    )

    problem(response, 413)
    assert body.pulled <= 3  # the limit is 2 MB
    assert await spine_events(runtime) == 0


@pytest.fixture
async def small_bodies(settings: Settings, tmp_path: Path) -> AsyncIterator[Runtime]:
    http = HttpSettings(max_body_bytes=2_000)
    async with bootstrap(settings.model_copy(update={"http": http}), tmp_path) as runtime:
        yield runtime


async def test_the_body_limit_is_a_setting(small_bodies: Runtime, token: str) -> None:
    async with client_for(small_bodies, token) as client:
        under = await client.post("/notes", json={"title": "t", "content": "x" * 1_500})
        over = await client.post("/notes", json={"title": "t", "content": "x" * 2_500})
        streamed = await client.post(
            "/notes", content=CountingBody(3, 1_000), headers={"content-type": "application/json"}
        )

    assert under.status_code == 201
    problem(over, 413)
    problem(streamed, 413)


@pytest.mark.usefixtures("unchanged")
async def test_a_malformed_content_length_answers_400(client: AppClient) -> None:
    response = await client.post(
        "/notes",
        content=b"{}",
        headers={"content-length": "two", "content-type": "application/json"},
    )

    problem(response, 400)


# -- strict JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "t", "content_type": "json", "content": NaN}',
        b'{"title": "t", "content_type": "json", "content": Infinity}',
        b'{"title": "t", "content_type": "json", "content": -Infinity}',
        b'{"title": "t", "content_type": "json", "content": 1e400}',
        b'{"title": "t", "content_type": "json", "content": [-1e400]}',
        b'{"title": "t", "content_type": "json", "content": 1e-400}',
        b'{"title": "t", "content_type": "json", "content": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"title": "t", "content_type": "json", "content": 18446744073709551616}',
        b'{"title": "t", "content_type": "json", "content": -9223372036854775809}',
        b'{"title": "t", "content_type": "json", "content": 1' + b"0" * 5000 + b"}",
        b'{"title": "t", "title": "u"}',
        b'{"title": "t", "content_type": "json", "content": {"a": 1, "a": 2}}',
        b'{"title": "caf\xe9"}',
        b'{"title": "\xff\xfe"}',
        b'\xef\xbb\xbf{"title": "bom"}',
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "1e400",
        "nested-minus-1e400",
        "1e-400",
        "nested-a-thousand-deep",
        "wider-than-64-bits",
        "below-64-bits",
        "thousands-of-digits",
        "duplicate-key",
        "nested-duplicate-key",
        "latin-1",
        "invalid-utf-8",
        "byte-order-mark",
    ],
)
@pytest.mark.usefixtures("unchanged")
async def test_json_that_would_change_silently_answers_422(client: AppClient, raw: bytes) -> None:
    response = await client.post(
        "/notes", content=raw, headers={"content-type": "application/json"}
    )

    (loc,) = field_paths(response)
    assert loc[0] == "body"
    assert response.json()["errors"][0]["type"] == "json_invalid"
    assert raw.decode("latin-1") not in response.text


async def test_integers_at_the_64_bit_edges_are_kept_exactly(client: AppClient) -> None:
    content = {"max": 2**64 - 1, "min": -(2**63), "float": 1.5e308}

    note = await create(client, content=content)

    assert note["content"] == content
    fetched = (await client.get(f"/notes/{note['note_id']}")).json()
    assert fetched["content"] == content


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}],
    ids=["text", "form", "none"],
)
@pytest.mark.usefixtures("unchanged")
async def test_a_body_that_is_not_json_answers_415(
    client: AppClient, headers: dict[str, str]
) -> None:
    response = await client.post("/notes", content=b'{"title": "t"}', headers=headers)

    assert "application/json" in problem(response, 415)["detail"]


async def test_json_under_a_structured_syntax_suffix_is_json(client: AppClient) -> None:
    response = await client.post(
        "/notes", content=b'{"title": "t"}', headers={"content-type": "application/merge+json"}
    )

    assert response.status_code == 201


# -- header hygiene ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Authorization", "If-Match", "If-None-Match", "Idempotency-Key", "X-Run-Id"]
)
@pytest.mark.usefixtures("unchanged")
async def test_a_single_valued_header_given_twice_answers_400(
    runtime: Runtime, token: str, name: str
) -> None:
    value = f"Bearer {token}" if name == "Authorization" else '"1"'
    headers = [(name, value), (name, value)]
    if name != "Authorization":
        headers.append(("Authorization", f"Bearer {token}"))
    async with client_for(runtime) as client:
        response = await client.post("/notes", json={"title": "t"}, headers=headers)

    assert name.lower() in problem(response, 400)["detail"]


@pytest.mark.parametrize("key", ["", " ", "has space", "tab\there"])
@pytest.mark.usefixtures("unchanged")
async def test_an_empty_or_unprintable_idempotency_key_answers_422(
    client: AppClient, key: str
) -> None:
    response = await client.post("/notes", json={"title": "t"}, headers={"Idempotency-Key": key})

    assert ("header", "idempotency-key") in field_paths(response)


async def test_replaying_a_creates_key_after_the_note_was_deleted_answers_410(
    client: AppClient, runtime: Runtime
) -> None:
    headers = {"Idempotency-Key": "once"}
    note = (await client.post("/notes", json={"title": "t"}, headers=headers)).json()
    assert (await client.delete(f"/notes/{note['note_id']}")).status_code == 200
    before = await spine_events(runtime)

    replay = await client.post("/notes", json={"title": "t"}, headers=headers)

    assert "deleted" in problem(replay, 410)["detail"]
    assert await spine_events(runtime) == before


# -- problem details for every error -------------------------------------------------------


async def test_fastapis_own_errors_are_problem_details(client: AppClient) -> None:
    not_found = await client.get("/no-such-route")
    not_allowed = await client.patch("/notes", json={})

    problem(not_found, 404)
    problem(not_allowed, 405)
    assert "POST" in not_allowed.headers["allow"]


@pytest.mark.usefixtures("unchanged")
async def test_a_422_names_the_fields_and_never_echoes_the_input(client: AppClient) -> None:
    response = await client.post(
        "/notes",
        json={"title": ["SECRET-1"], "content_type": "SECRET-2", "tags": "SECRET-3"},
    )

    assert {("body", "title"), ("body", "content_type"), ("body", "tags")} <= set(
        field_paths(response)
    )
    assert "SECRET" not in response.text


async def test_an_unexpected_failure_is_a_500_problem_that_tells_nothing(
    runtime: Runtime, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(command: Any) -> Any:
        raise RuntimeError("internal detail: /secret/path")

    monkeypatch.setattr(runtime, "dispatch", broken)
    transport = httpx.ASGITransport(app=build_app(runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=bearer(token)
    ) as client:
        response = await client.post("/notes", json={"title": "t"})

    assert "secret" not in problem(response, 500)["detail"]


# -- every status declared in OpenAPI ------------------------------------------------------

AUTHENTICATED = {400, 401, 403, 413, 422, 500, 503}
BLACKBOARD = "/blackboard/{project_id}/{run_id}"
#: What each operation can answer (its own statuses, and the gate's and FastAPI's).
ANSWERS: dict[tuple[str, str], set[int]] = {
    ("get", "/healthz"): {200, 400, 413, 500},
    ("get", "/readyz"): {200, 400, 413, 500, 503},
    ("post", "/notes"): {201, 202, 409, 410, 412, 415} | AUTHENTICATED,
    ("get", "/notes"): {200} | AUTHENTICATED,
    ("get", "/notes/{note_id}"): {200, 404} | AUTHENTICATED,
    ("put", "/notes/{note_id}"): {200, 202, 404, 409, 412, 415} | AUTHENTICATED,
    ("delete", "/notes/{note_id}"): {200, 202, 404, 409, 412} | AUTHENTICATED,
    **{
        op: statuses
        for base in ("/flows", "/graphs", "/overlays")
        for op, statuses in {
            ("post", base): {201, 202, 409, 410, 412, 415} | AUTHENTICATED,
            ("get", base): {200} | AUTHENTICATED,
            ("get", base + "/{id}"): {200, 404} | AUTHENTICATED,
            ("get", base + "/{id}/versions"): {200, 404} | AUTHENTICATED,
            ("put", base + "/{id}"): {200, 202, 404, 409, 412, 415} | AUTHENTICATED,
            ("delete", base + "/{id}"): {200, 202, 404, 409, 412} | AUTHENTICATED,
        }.items()
    },
    ("get", "/memory/{session_id}"): {200} | AUTHENTICATED,
    ("get", "/memory/{session_id}/{key}"): {200, 404} | AUTHENTICATED,
    ("put", "/memory/{session_id}/{key}"): {200, 202, 409, 410, 412, 415} | AUTHENTICATED,
    ("delete", "/memory/{session_id}/{key}"): {200, 202, 404, 409, 412} | AUTHENTICATED,
    ("get", BLACKBOARD): {200, 404} | AUTHENTICATED,
    ("get", BLACKBOARD + "/{key}"): {200, 404} | AUTHENTICATED,
    ("get", BLACKBOARD + "/{key}/versions"): {200, 404} | AUTHENTICATED,
    ("put", BLACKBOARD + "/{key}"): {200, 201, 202, 404, 409, 410, 412, 415, 428} | AUTHENTICATED,
    ("delete", BLACKBOARD + "/{key}"): {200, 202, 404, 412, 428} | AUTHENTICATED,
    ("put", "/budgets/{budget_id}/limit"): {200, 202, 409, 412, 415} | AUTHENTICATED,
    ("post", "/budgets/{budget_id}/debits"): {201, 202, 402, 404, 409, 412, 415} | AUTHENTICATED,
    ("post", "/budgets/{budget_id}/credits"): {201, 202, 404, 409, 412, 415} | AUTHENTICATED,
    ("get", "/budgets/{budget_id}"): {200, 404} | AUTHENTICATED,
    ("get", "/budgets/{budget_id}/ledger"): {200, 404} | AUTHENTICATED,
    ("post", "/strategy-locks/{strategy_id}/snapshots"): {201, 202, 404, 409, 412, 415}
    | AUTHENTICATED,
    ("get", "/strategy-locks/{strategy_id}"): {200, 404} | AUTHENTICATED,
    ("get", "/strategy-locks/{strategy_id}/history"): {200, 404} | AUTHENTICATED,
    ("put", "/seo-config/{surface_id}"): {200, 201, 202, 404, 409, 412, 415} | AUTHENTICATED,
    ("get", "/seo-config/{surface_id}"): {200, 404} | AUTHENTICATED,
    ("get", "/seo-config/{surface_id}/history"): {200, 404} | AUTHENTICATED,
    ("post", "/events"): {201, 202, 409, 415} | AUTHENTICATED,
    ("post", "/safety/decisions"): {201, 202, 409, 415} | AUTHENTICATED,
    ("get", "/events"): {200} | AUTHENTICATED,
    ("get", "/audit"): {200} | AUTHENTICATED,
    ("get", "/analytics/counts"): {200} | AUTHENTICATED,
}


@pytest.fixture
async def spec(anonymous: AppClient) -> dict[str, Any]:
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def resolve(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_every_operation_declares_every_status_it_can_answer(spec: dict[str, Any]) -> None:
    declared = {op: {int(s) for s in o["responses"]} for op, o in operations(spec).items()}

    assert declared.keys() == ANSWERS.keys()
    for op, statuses in ANSWERS.items():
        assert declared[op] == statuses, op


def test_every_error_is_declared_as_problem_details(spec: dict[str, Any]) -> None:
    problem_schema = resolve(spec, "#/components/schemas/Problem")
    assert {"type", "title", "status", "detail"} <= set(problem_schema["required"])
    assert "errors" in problem_schema["properties"]

    for op, operation in operations(spec).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                (media,) = response["content"]
                assert media == "application/problem+json", (op, status)
                # the Problem, or one with extension members on top of all of its own
                schema = resolve(spec, response["content"][media]["schema"]["$ref"])
                assert problem_schema["properties"].items() <= schema["properties"].items()
                assert set(problem_schema["required"]) <= set(schema["required"]), (op, status)


def test_every_reference_in_the_document_resolves(spec: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(spec):
        resolve(spec, ref)


def test_the_write_operations_document_their_headers_and_bearer_auth(spec: dict[str, Any]) -> None:
    ops = operations(spec)
    headers = {
        op: {p["name"].lower() for p in o.get("parameters", []) if p["in"] == "header"}
        for op, o in ops.items()
    }

    assert {"idempotency-key", "if-none-match"} <= headers["post", "/notes"]
    assert {"if-match", "if-none-match"} <= headers["put", "/notes/{note_id}"]
    assert {"if-match", "if-none-match"} <= headers["delete", "/notes/{note_id}"]
    assert ops["get", "/notes"]["security"] == [{"HTTPBearer": []}]
    snapshots = ("post", "/strategy-locks/{strategy_id}/snapshots")
    assert {"idempotency-key", "if-match", "if-none-match", "x-project-id"} <= headers[snapshots]
    assert "x-project-id" in headers["get", "/strategy-locks/{strategy_id}"]
    assert {"if-match", "if-none-match"} <= headers["put", "/seo-config/{surface_id}"]


async def test_the_statuses_actually_answered_are_the_declared_ones(
    client: AppClient, anonymous: AppClient, runtime: Runtime, spec: dict[str, Any]
) -> None:
    """A walk through the answers each operation gives, each checked against its
    declaration and answered as problem details when an error."""
    note = await create(client)
    url = f"/notes/{note['note_id']}"
    gone = await client.post("/notes", json={"title": "g"}, headers={"Idempotency-Key": "g"})
    await client.delete(f"/notes/{gone.json()['note_id']}")
    twice = [("If-Match", '"1"'), ("If-Match", '"1"')]
    big = {"content-length": str(10 * MB)}
    calls: list[tuple[str, str, int, Any]] = [
        ("get", "/healthz", 200, anonymous.get("/healthz")),
        ("get", "/healthz", 413, anonymous.get("/healthz", headers=big)),
        ("get", "/healthz", 400, anonymous.get("/healthz", headers={"content-length": "x"})),
        ("post", "/notes", 201, client.post("/notes", json={"title": "t"})),
        ("post", "/notes", 400, client.post("/notes", json={"title": "t"}, headers=twice)),
        ("post", "/notes", 401, anonymous.post("/notes", json={"title": "t"})),
        ("post", "/notes", 403, client.post("/notes", json={"title": "t", "surface_id": "x"})),
        (
            "post",
            "/notes",
            409,
            client.post("/notes", json={"title": "other"}, headers={"Idempotency-Key": "g"}),
        ),
        (
            "post",
            "/notes",
            410,
            client.post("/notes", json={"title": "g"}, headers={"Idempotency-Key": "g"}),
        ),
        (
            "post",
            "/notes",
            412,
            client.post("/notes", json={"title": "t"}, headers={"If-Match": '"3"'}),
        ),
        ("post", "/notes", 413, client.post("/notes", json={"title": "t"}, headers=big)),
        (
            "post",
            "/notes",
            415,
            client.post("/notes", content=b"{}", headers={"content-type": "text/plain"}),
        ),
        ("post", "/notes", 422, client.post("/notes", json={})),
        ("get", "/notes", 200, client.get("/notes")),
        ("get", "/notes", 403, client.get("/notes", headers={"X-Tenant-Id": "other"})),
        ("get", "/notes", 422, client.get("/notes", params={"limit": 0})),
        ("get", "/notes/{note_id}", 200, client.get(url)),
        ("get", "/notes/{note_id}", 404, client.get("/notes/nope")),
        ("put", "/notes/{note_id}", 200, client.put(url, json={"title": "u"})),
        (
            "put",
            "/notes/{note_id}",
            412,
            client.put(url, json={"title": "u"}, headers={"If-Match": '"1"'}),
        ),
        (
            "put",
            "/notes/{note_id}",
            415,
            client.put(url, content=b"{}", headers={"content-type": "text/plain"}),
        ),
        ("delete", "/notes/{note_id}", 412, client.delete(url, headers={"If-None-Match": "*"})),
        ("delete", "/notes/{note_id}", 200, client.delete(url)),
        ("delete", "/notes/{note_id}", 404, client.delete(url)),
    ]
    ops = operations(spec)
    for method, path, status, call in calls:
        response = await call
        assert response.status_code == status, (method, path, response.text)
        assert str(status) in ops[method, path]["responses"], (method, path, status)
        if status >= 400:
            problem(response, status)
    assert len(await audit_events(runtime)) == 2  # the 401's caller and the 403s' caller


def test_a_domain_router_that_would_parse_bodies_leniently_is_refused() -> None:
    lenient = dataclasses.replace(DOMAINS[0], router=APIRouter())

    with pytest.raises(TypeError, match="StrictJsonRoute"):
        build_app(domains=[lenient])


def test_every_schema_has_its_own_name_not_a_module_path(spec: dict[str, Any]) -> None:
    # Two models of one name in different modules get names such as
    # engines__http__notes__Accepted, which generated clients turn into class names.
    names = spec["components"]["schemas"]
    assert [name for name in names if "__" in name] == []


@pytest.mark.parametrize(
    ("method", "raw_path", "field"),
    [
        ("GET", "/blackboard/p1/r1%2Fslash", "run_id"),  # not key "slash" of run "r1"
        ("GET", "/blackboard/p1/r1/slash%2Fversions", "key"),
        ("PUT", "/blackboard/p1%2Fr1/r1/k", "project_id"),
        ("PUT", "/blackboard/p1/r1%2Fr2/k", "run_id"),
        ("GET", "/memory/s1%2Fa", "session_id"),
        ("GET", "/flows/a%2fversions", "id"),
    ],
)
async def test_an_encoded_slash_stays_in_its_segment_and_is_refused_naming_it(
    client: AppClient, runtime: Runtime, method: str, raw_path: str, field: str
) -> None:
    url = httpx.URL("http://test").copy_with(raw_path=raw_path.encode())
    headers = {"If-None-Match": "*"} if method == "PUT" else {}

    response = await client.request(method, url, json={"value": 1}, headers=headers)

    assert ("path", field) in [tuple(e["loc"]) for e in problem(response, 422)["errors"]]
    assert await spine_events(runtime) == 0


async def test_a_content_type_given_twice_is_refused(client: AppClient) -> None:
    headers = [("content-type", "application/json"), ("content-type", "text/plain")]
    response = await client.post("/notes", content=b'{"title": "t"}', headers=headers)

    assert "content-type" in problem(response, 400)["detail"]


@pytest.mark.parametrize(
    ("path", "status"), [("/budgets", 404), ("/notes/", 422), ("/flows/", 422)]
)
async def test_a_trailing_slash_is_never_redirected(
    client: AppClient, path: str, status: int
) -> None:
    # a redirect would be built from the client's Host header
    response = await client.get(path, headers={"Host": "elsewhere.example"})

    problem(response, status)  # no route (404), or an empty id (422)
    assert "location" not in response.headers
