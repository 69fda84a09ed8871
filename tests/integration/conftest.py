from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from routing.backends.sqlite import SqliteBackend
from routing.backends.sqlite import open_backend as open_sqlite
from routing.config import Connections, Route, SqliteConnection


def lab_route(name: str) -> Route:
    return Route(backend="sqlite", name=name, lab=True)


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    connections = Connections(sqlite=SqliteConnection(path=str(tmp_path / "it.db")))
    backend = await open_sqlite(connections, tmp_path)
    try:
        yield backend
    finally:
        await backend.aclose()


@contextlib.asynccontextmanager
async def lab_database(path: Path, **sqlite: Any) -> AsyncIterator[SqliteBackend]:
    """A lab backend on the database file at ``path`` (``sqlite``: its connection
    settings, e.g. ``busy_timeout_ms``), closed when the block ends."""
    connections = Connections(sqlite=SqliteConnection(path=str(path), **sqlite))
    backend = await open_sqlite(connections, path.parent)
    try:
        yield backend
    finally:
        await backend.aclose()


@contextlib.contextmanager
def write_lock_held(path: Path, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """The database's write lock, held by a connection of its own (as another process
    would) until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute(begin)
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()
