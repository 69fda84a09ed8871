"""The backends every contract suite runs against.

A backend is one fixture named ``<name>_backend`` returning a :class:`Harness`; add it
to ``BACKENDS`` with its mark and the suites run unchanged against it. Each test gets
fresh physical names. A cloud backend's fixture lives in ``cloud_<name>.py`` and is
imported here; :mod:`tests.contract.harness` holds the :class:`Harness` and the
capabilities a backend may declare.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from routing.backends.sqlite import open_backend as open_sqlite
from routing.backends.sqlite.spine import spine_schema
from routing.config import Connections, SqliteConnection
from spine.store import EventStore
from tests.contract.cloud_cosmos import cosmos_backend, cosmos_direct_backend
from tests.contract.cloud_dynamodb import dynamodb_backend, dynamodb_direct_backend
from tests.contract.cloud_firestore import firestore_backend, firestore_direct_backend
from tests.contract.cloud_kafka import (
    cosmos_kafka_backend,
    dynamodb_kafka_backend,
    firestore_kafka_backend,
    sqlite_kafka_backend,
)
from tests.contract.harness import Harness, Tamper, requires, stored_attributes

__all__ = [
    "Harness",
    "Tamper",
    "cosmos_backend",
    "cosmos_direct_backend",
    "cosmos_kafka_backend",
    "dynamodb_backend",
    "dynamodb_direct_backend",
    "dynamodb_kafka_backend",
    "firestore_backend",
    "firestore_direct_backend",
    "firestore_kafka_backend",
    "requires",
    "sqlite_kafka_backend",
]


BACKENDS = [pytest.param("sqlite", marks=pytest.mark.sqlite)]
"""The backends every store's suite runs against."""

CLOUD_SPINES: list[Any] = [
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    pytest.param("cosmos", marks=pytest.mark.cosmos),
    pytest.param("firestore", marks=pytest.mark.firestore),
]
"""Cloud backends whose event store (with its outbox) is built: the event-store suite
runs against them as well, and the outbox suite against them alone. A backend moves
to ``BACKENDS`` once every store of it is built (issue 9)."""

SPINE_BACKENDS = BACKENDS + CLOUD_SPINES

FEED_BACKENDS = [
    *BACKENDS,
    pytest.param("dynamodb_direct", marks=pytest.mark.dynamodb),
    pytest.param("firestore_direct", marks=pytest.mark.firestore),
    pytest.param("cosmos_direct", marks=pytest.mark.cosmos),
    pytest.param("sqlite_kafka", marks=pytest.mark.kafka),
    pytest.param("dynamodb_kafka", marks=[pytest.mark.kafka, pytest.mark.dynamodb]),
    pytest.param("cosmos_kafka", marks=[pytest.mark.kafka, pytest.mark.cosmos]),
    pytest.param("firestore_kafka", marks=[pytest.mark.kafka, pytest.mark.firestore]),
]
"""Spine, feed and checkpoints that go together: the feed suite runs against them
(``<name>_direct``: that backend's spine and checkpoints, ``spine_feed: direct``;
``<name>_kafka``: with ``spine_feed: kafka``)."""

CHECKPOINT_BACKENDS = [
    *BACKENDS,
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    pytest.param("firestore", marks=pytest.mark.firestore),
    pytest.param("cosmos", marks=pytest.mark.cosmos),
]
"""Backends whose checkpoint and parking store is built: the checkpoint and parking
suites run against them."""

VIEW_BACKENDS = [
    *BACKENDS,
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    pytest.param("firestore", marks=pytest.mark.firestore),
    pytest.param("cosmos", marks=pytest.mark.cosmos),
]
"""Backends whose view store is built: the view-store suite runs against them."""


class SqliteTampering:
    """Behind the SQLite spine's back: a replace is SQLite's ``INSERT OR REPLACE`` (which
    fires no delete trigger), a delete drops the append-only trigger for its moment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _run(self, spine: EventStore, sql: str, args: tuple[object, ...]) -> None:
        table = spine.table  # type: ignore[attr-defined]
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                guard = [s for s in spine_schema(table) if "_no_delete" in s]
                conn.execute(f'DROP TRIGGER IF EXISTS "{table}_no_delete"')
                conn.execute(sql.replace("{t}", f'"{table}"'), args)
                for statement in guard:
                    conn.execute(statement)
        finally:
            conn.close()

    async def put(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        digest, command_id = stored_attributes(body)
        self._run(
            spine,
            "INSERT OR REPLACE INTO {t} (stream_id, seq, command_id, hash, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (stream_id, seq, command_id, digest, body),
        )

    async def remove(self, spine: EventStore, stream_id: str, seq: int) -> None:
        self._run(spine, "DELETE FROM {t} WHERE stream_id = ? AND seq = ?", (stream_id, seq))

    async def remove_stream(self, spine: EventStore, stream_id: str) -> None:
        self._run(spine, "DELETE FROM {t} WHERE stream_id = ?", (stream_id,))


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
        capabilities = {
            "atomic_batch",
            "lag_from_start",
            "independent_subscriptions",
            "scan_finds_headless_streams",
        }
        yield Harness(
            "sqlite",
            backend,
            lab=True,
            tamper=tamper,
            capabilities=capabilities,
            connections=connections,
            data_dir=tmp_path,
            tampering=SqliteTampering(path),
        )
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


@pytest.fixture(params=VIEW_BACKENDS)
def view_harness(request: pytest.FixtureRequest) -> Harness:
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
