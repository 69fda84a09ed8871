"""Helpers for the end-to-end tests: the default caller, HTTP clients, spine look-ups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from engines.http import build_app
from engines.runtime import Runtime
from spine.events import EventEnvelope

TENANT = "t1"
USER = "u1"
SURFACE = "s1"
PROJECT = "p1"

Mint = Callable[..., str]
"""``mint(tenant_id=..., user_id=..., surfaces=[...], projects=[...], ttl_seconds=...)``"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_for(runtime: Runtime, token: str | None = None) -> httpx.AsyncClient:
    """An in-process HTTP client for the app over ``runtime``, sending ``token``."""
    headers = bearer(token) if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(runtime)),
        base_url="http://test",
        headers=headers,
    )


async def audit_events(runtime: Runtime) -> list[EventEnvelope]:
    return [e async for e in runtime.spine.scan(prefix="audit/")]


def note_stream_id(note_id: str, tenant_id: str = TENANT) -> str:
    return f"notes/{tenant_id}/lab/{note_id}"


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """POST a note (title defaults to "a note") and return its body; asserts 201."""
    response = await client.post("/notes", json={"title": "a note", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def spine_count(runtime: Runtime) -> int:
    """How many events the spine holds, of every domain (through ``scan``, which every
    backend offers)."""
    return len([e async for e in runtime.spine.scan()])
