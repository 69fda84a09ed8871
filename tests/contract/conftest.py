"""The backends every contract suite runs against.

A backend is one fixture named ``<name>_backend`` returning a :class:`Harness`; add it
to ``BACKENDS`` with its mark and the suites run unchanged against it. Each test gets
fresh physical names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from routing.backends.sqlite import open_backend as open_sqlite
from routing.config import Connections, Route, SqliteConnection


@dataclass
class Harness:
    """How a contract suite opens stores on one backend, and what that backend can do."""

    name: str
    backend: Any
    lab: bool
    capabilities: set[str] = field(default_factory=set)
    """``global_feed``: the spine numbers events with a global position."""

    def route(self, physical: str) -> Route:
        return Route(backend=self.name, name=physical, lab=self.lab)


BACKENDS = [pytest.param("sqlite", marks=pytest.mark.sqlite)]


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Harness]:
    connections = Connections(sqlite=SqliteConnection(path=str(tmp_path / "contract.db")))
    backend = await open_sqlite(connections, tmp_path)
    try:
        yield Harness("sqlite", backend, lab=True, capabilities={"global_feed"})
    finally:
        await backend.aclose()


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


def requires(h: Harness, capability: str) -> None:
    if capability not in h.capabilities:
        pytest.skip(f"backend {h.name!r} does not offer {capability!r} (declared capability)")
