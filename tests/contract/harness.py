"""What a contract suite knows of a backend: how to open its stores and what it can do.

Declared capabilities (``Harness.capabilities``, checked with :func:`requires`):

* ``atomic_batch``: a multi-item write that fails midway leaves nothing, even where the
  backend's own ordering of the write cannot rule it out (SQLite, real Cosmos DB; not
  cosmosdb-server, DESIGN §8).
* ``lag_from_start``: the feed can count what lies before a consumer with no position
  (SQLite's global feed; not the outbox relay, which would count the whole spine).
* ``scan_finds_headless_streams``: a scan finds a stream whose seq 1 is gone (SQLite by
  its rows, Firestore by the stream's document); DynamoDB and Cosmos DB find each stream
  by its seq-1 item, so there such a stream shows only against an anchor.
* ``independent_subscriptions``: two subscriptions of one consumer each read every
  partition from the stored positions (not Kafka, where they form a consumer group and
  split the partitions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest

from routing.config import Connections, Route
from spine.feed import Feed
from spine.store import EventStore


class Tamper(Protocol):
    async def __call__(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        """Store ``body`` as ``stream_id``'s event ``seq``, behind the store's back."""


class Tampering(Protocol):
    """Writes to a spine's own items behind the store's back, as someone with write
    access to the database (not the store's code) would: the audit tests' attacker."""

    async def put(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        """Store ``body`` (a stored form) as ``stream_id``'s event ``seq``, replacing the
        event there, with the item's other attributes (hash, command id) taken from
        ``body`` as the store would write them."""

    async def remove(self, spine: EventStore, stream_id: str, seq: int) -> None:
        """Delete ``stream_id``'s event ``seq`` (its markers stay)."""

    async def remove_stream(self, spine: EventStore, stream_id: str) -> None:
        """Delete every item of ``stream_id``: events, command and outbox markers, and
        whatever else the store keeps for it."""


def stored_attributes(body: bytes) -> tuple[str, str]:
    """The hash and command id a store keeps beside a stored form (``("x", "tampered")``
    for a body that is not one)."""
    try:
        fields = orjson.loads(body)
        return str(fields["hash"]), str(fields["command_id"])
    except (ValueError, TypeError, KeyError):
        return "x", "tampered"


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
    tampering: Tampering | None = None
    """How the audit tests tamper with this backend's spine (``None``: they skip)."""

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
