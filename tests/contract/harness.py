"""What a contract suite knows of a backend: how to open its stores and what it can do.

Declared capabilities (``Harness.capabilities``, checked with :func:`requires`):

* ``atomic_batch``: a multi-item write that fails midway leaves nothing, even where the
  backend's own ordering of the write cannot rule it out (SQLite, real Cosmos DB; not
  cosmosdb-server, DESIGN §8).
* ``lag_from_start``: the feed can count what lies before a consumer with no position
  (SQLite's global feed; not the outbox relay, which would count the whole spine).
* ``independent_subscriptions``: two subscriptions of one consumer each read every
  partition from the stored positions (not Kafka, where they form a consumer group and
  split the partitions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from routing.config import Connections, Route
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
    connections: Connections | None = None
    """How another process reaches the same stores (the crash tests start one)."""
    data_dir: Path = Path(".")

    def route(self, physical: str) -> Route:
        return Route(backend=self.name, name=physical, lab=self.lab)

    async def feed(self, spine: EventStore, physical: str = "feed") -> Feed:
        if self.feeder is None:
            feed: Feed = await self.backend.feed(self.route(physical), spine)
            return feed
        route = Route(backend=self.feeder_name, name=physical)
        relay = await self.backend.checkpoint_store(self.route(f"{physical}_relay"))
        fed: Feed = await self.feeder.feed(route, spine, checkpoints=relay)
        return fed


def requires(h: Harness, capability: str, why: str = "") -> None:
    """Skip the calling test unless ``h`` declares ``capability``; ``why``: the reason
    a backend may lack it, for the skip message."""
    if capability not in h.capabilities:
        reason = f": {why}" if why else ""
        who = f"{h.name!r} with spine_feed {h.feeder_name!r}" if h.feeder_name else repr(h.name)
        pytest.skip(f"backend {who} does not offer {capability!r} (declared capability){reason}")
