from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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
