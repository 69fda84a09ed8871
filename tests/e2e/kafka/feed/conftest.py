"""Fixtures of the Kafka end-to-end tests: a routes file on the session's Tansu broker
(a fresh topic, so fresh consumer groups, per test) over the test's own data directory,
and an HTTP client for a served process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from engines.settings import Settings
from tests.e2e.kafka.feed.deployment import Serving, settings_of, write_routes
from tests.e2e.support import bearer
from tests.servers.fixtures import TansuBroker


@pytest.fixture
def topic(unique: str) -> str:
    return f"engines.spine.{unique}"


@pytest.fixture
def routes(tansu: TansuBroker, tmp_path: Path, topic: str) -> Path:
    """The routes file: the spine on the data directory's SQLite file (``tmp_path``)."""
    return write_routes(tmp_path / "etc", tansu.bootstrap, topic)


@pytest.fixture
def kafka_settings(routes: Path) -> Settings:
    return settings_of(routes)


HttpFor = Callable[[Serving, str], httpx.AsyncClient]


@pytest.fixture
async def http_for() -> AsyncIterator[HttpFor]:
    """``http_for(server, token)``: a real HTTP client to a served process."""
    clients: list[httpx.AsyncClient] = []

    def make(server: Serving, token: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.url, headers=bearer(token), timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
