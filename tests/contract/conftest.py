"""The backends every contract suite runs against.

A backend is one fixture named ``<name>_backend`` returning a :class:`Harness`; add it
to ``BACKENDS`` with its mark and the suites run unchanged against it. Each test gets
fresh physical names.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from routing.backends.sqlite import open_backend as open_sqlite
from routing.config import Connections, Route, SqliteConnection
from spine.feed import Feed
from spine.store import EventStore


class Tamper(Protocol):
    async def __call__(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        """Store ``body`` as ``stream_id``'s event ``seq``, behind the store's back."""


@dataclass
class Harness:
    """How a contract suite opens stores on one backend, and what that backend can do."""

    name: str
    backend: Any
    lab: bool
    tamper: Tamper
    capabilities: set[str] = field(default_factory=set)
    feeder: Any = None
    """The backend serving ``spine_feed``, where it is not ``backend`` (named
    ``feeder_name``)."""
    feeder_name: str = ""

    def route(self, physical: str) -> Route:
        return Route(backend=self.name, name=physical, lab=self.lab)

    async def feed(self, spine: EventStore, physical: str = "feed") -> Feed:
        if self.feeder is None:
            feed: Feed = await self.backend.feed(self.route(physical), spine)
            return feed
        route = Route(backend=self.feeder_name, name=physical)
        fed: Feed = await self.feeder.feed(route, spine)
        return fed


BACKENDS = [pytest.param("sqlite", marks=pytest.mark.sqlite)]
"""The backends every store's suite runs against."""

CLOUD_SPINES = [
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
]
"""Cloud backends whose event store (with its outbox) is built: the event-store suite
runs against them as well, and the outbox suite against them alone. A backend moves
to ``BACKENDS`` once every store of it is built (issue 9)."""

SPINE_BACKENDS = BACKENDS + CLOUD_SPINES

FEED_BACKENDS = [*BACKENDS, pytest.param("dynamodb_direct", marks=pytest.mark.dynamodb)]
"""Spine, feed and checkpoints that go together: the feed suite runs against them
(``dynamodb_direct``: the DynamoDB spine, ``spine_feed: direct``, DynamoDB checkpoints)."""

CHECKPOINT_BACKENDS = [*BACKENDS, pytest.param("dynamodb", marks=pytest.mark.dynamodb)]
"""Backends whose checkpoint and parking store is built: the checkpoint and parking
suites run against them."""


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Harness]:
    path = tmp_path / "contract.db"
    connections = Connections(sqlite=SqliteConnection(path=str(path)))
    backend = await open_sqlite(connections, tmp_path)

    async def tamper(spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        table = spine.table  # type: ignore[attr-defined]
        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.execute(
                    f'INSERT INTO "{table}" (stream_id, seq, command_id, hash, body)'
                    " VALUES (?, ?, 'tampered', 'x', ?)",
                    (stream_id, seq, body),
                )
        finally:
            conn.close()

    try:
        yield Harness("sqlite", backend, lab=True, tamper=tamper, capabilities={"lag_from_start"})
    finally:
        await backend.aclose()


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


@pytest.fixture(params=SPINE_BACKENDS)
def spine_harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


@pytest.fixture(params=CHECKPOINT_BACKENDS)
def checkpoint_harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


@pytest.fixture(params=FEED_BACKENDS)
def feed_harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


@pytest.fixture(params=CLOUD_SPINES)
def outbox_harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


def requires(h: Harness, capability: str) -> None:
    if capability not in h.capabilities:
        pytest.skip(f"backend {h.name!r} does not offer {capability!r} (declared capability)")
