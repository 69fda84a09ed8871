"""Helpers for the end-to-end tests: the default caller, HTTP clients, spine look-ups,
problem details."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from engines.http import build_app
from engines.http.identity import refusals_of
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from spine.events import EventEnvelope

TENANT = "t1"
USER = "u1"
SURFACE = "s1"
PROJECT = "p1"
UNAUTHENTICATED = "engines:unauthenticated"

Mint = Callable[..., str]
"""``mint(tenant_id=..., user_id=..., surfaces=[...], projects=[...] or {s: [...]},
kind=..., roles=[...], ttl_seconds=...)``"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class AppClient(httpx.AsyncClient):
    """An in-process client that knows the app it talks to."""

    app: FastAPI


def client_for(runtime: Runtime, token: str | None = None) -> AppClient:
    """An in-process HTTP client for the app over ``runtime``, sending ``token``."""
    app = build_app(runtime)
    client = AppClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers=bearer(token) if token else {},
    )
    client.app = app
    return client


async def close_refusal_intervals(client: AppClient) -> None:
    """What shutdown does: close every open refusal interval (appending summaries)."""
    await refusals_of(client.app).flush(everything=True)


async def spine_events(runtime: Runtime, prefix: str = "") -> int:
    """How many events the spine holds (in streams whose ids begin with ``prefix``),
    counted by a scan."""
    return len([e async for e in runtime.spine.scan() if e.stream_id.startswith(prefix)])


async def audit_events(runtime: Runtime) -> list[EventEnvelope]:
    return [e async for e in runtime.spine.scan(domain="audit")]


def note_stream_id(note_id: str, tenant_id: str = TENANT) -> str:
    return f"notes/{tenant_id}/lab/{note_id}"


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """POST a note (title defaults to "a note") and return its body; asserts 201."""
    response = await client.post("/notes", json={"title": "a note", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 problem ``response`` carries; asserts its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    assert body["type"].startswith("urn:engines:problem:")
    assert body["title"]
    assert body["detail"]
    return body


def field_paths(response: httpx.Response) -> list[tuple[str | int, ...]]:
    """The ``loc`` of every field a 422 problem names."""
    return [tuple(err["loc"]) for err in problem(response, 422)["errors"]]


def lab_routes_with(directory: Path, kind: str, route: str = "") -> Path:
    """A routes file: the packaged lab configuration with ``kind``'s route line replaced
    by ``route`` (removed if empty), written in ``directory``."""
    text = resources.files("engines").joinpath("lab.yaml").read_text(encoding="utf-8")
    lines = [route if line.strip().startswith(f"{kind}:") else line for line in text.splitlines()]
    path = directory / "routes.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def start(routes: Path, data_dir: Path) -> None:
    """Start the service on the routes file ``routes``; it must refuse to."""
    async with bootstrap(load_settings(routes)[0], data_dir):
        raise AssertionError("the service started")


def lock_timeout(settings: Settings, ms: int) -> Settings:
    """``settings`` with the SQLite busy timeout at ``ms``: a locked store fails fast."""
    sqlite_settings = settings.connections.sqlite.model_copy(update={"busy_timeout_ms": ms})
    connections = settings.connections.model_copy(update={"sqlite": sqlite_settings})
    return settings.model_copy(update={"connections": connections})
