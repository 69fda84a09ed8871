"""Kafka (aiokafka): the backend behind routes to ``kafka``.

* ``spine_feed: kafka`` (:mod:`.feed`): a relay in every process publishes the spine's
  committed events to the route's topic, keyed by stream id (:mod:`.relay`); projectors
  read it as consumer groups.
* ``command_bus: kafka``: commands on the route's topic, answers on ``<topic>.results``.

Its connection is ``connections.kafka``. Topics are created where the backend may
create (start-up, ``engines routes provision``), with ``partitions`` partitions.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from aiokafka import AIOKafkaProducer

from routing.backends.kafka.bus import KafkaCommandBus, results_topic
from routing.backends.kafka.client import BACKEND, KafkaClients, stop_quietly, unavailable
from routing.backends.kafka.feed import KafkaFeed, KafkaSubscription
from routing.backends.kafka.relay import Relay
from routing.config import Connections, KafkaConnection, Route
from spine.errors import BackendUnavailable, RoutingError
from spine.feed import CheckpointStore, PositionedStore, RelaySource
from spine.store import EventStore

__all__ = [
    "KafkaBackend",
    "KafkaCommandBus",
    "KafkaFeed",
    "KafkaSubscription",
    "Relay",
    "open_backend",
]


class KafkaBackend:
    def __init__(
        self,
        clients: KafkaClients,
        *,
        create: bool,
        sweep_interval: float = 2.0,
        sweep_after: float = 5.0,
    ) -> None:
        self.clients = clients
        self.create = create
        self.sweep_interval = sweep_interval
        self.sweep_after = sweep_after
        self._producer: AIOKafkaProducer | None = None
        self._feeds: list[KafkaFeed] = []
        self._topics: set[str] = set()
        self.created: list[str] = []
        """What this backend made (``engines routes provision`` prints it)."""

    async def producer(self, route: str) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self.clients.producer()
            try:
                async with unavailable(route, "connect"):
                    await producer.start()
            except BaseException:
                await stop_quietly(producer)  # what start() opened before it failed
                raise
            self._producer = producer
        return self._producer

    async def topic(self, route: Route, kind: str, name: str | None = None) -> str:
        """The route's topic (or ``name``), created if missing and this backend may."""
        name = name or route.name
        if name not in self._topics:
            if self.create:
                made = await self.clients.ensure_topics([name], kind)
                self.created += [
                    f"Kafka topic {t} ({self.clients.conn.partitions} partitions)" for t in made
                ]
            self._topics.add(name)
        return name

    async def provision(self, route: Route, kind: str) -> None:
        """Create the topics ``kind``'s route names: the spine's topic, or the commands
        topic and its answers' (``<name>.results``)."""
        await self.topic(route, kind)
        if kind == "command_bus":
            await self.topic(route, kind, results_topic(route.name))

    async def feed(
        self, route: Route, spine: EventStore, *, checkpoints: CheckpointStore | None = None
    ) -> KafkaFeed:
        inner: EventStore = getattr(spine, "inner", spine)  # an upcasting wrapper: its store
        if not isinstance(inner, RelaySource | PositionedStore):
            raise RoutingError(
                "spine_feed: kafka needs an event store with an outbox or a position "
                f"for its relay to follow ({type(inner).__name__} has neither)"
            )
        if not isinstance(inner, RelaySource) and checkpoints is None:
            raise RoutingError("spine_feed: kafka over a positioned spine needs a checkpoint store")
        for feed in self._feeds:
            if feed.store is inner and feed.topic == route.name:
                return feed  # one relay per store and topic
        topic = await self.topic(route, "spine_feed")
        secret = self.clients.record_key()
        relay = Relay(
            inner,
            await self.producer("spine_feed"),
            topic,
            checkpoints=checkpoints,
            secret=secret,
            sweep_interval=self.sweep_interval,
            sweep_after=self.sweep_after,
        )
        feed = KafkaFeed(self.clients, topic, inner, relay, secret=secret)
        relay.start()
        self._feeds.append(feed)
        return feed

    async def command_bus(self, route: Route) -> KafkaCommandBus:
        """The bus on ``route``'s topic, answers on ``<topic>.results``; both created if
        missing and this backend may create."""
        await self.provision(route, "command_bus")
        return KafkaCommandBus(self.clients, route.name)

    async def ping(self) -> None:
        """Raise :class:`BackendUnavailable` unless the cluster answers and every topic
        opened here still exists."""
        admin = self.clients.admin()
        try:
            async with unavailable("spine_feed", "connect"):
                await admin.start()
                existing = set(await admin.list_topics())
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        missing = sorted(self._topics - existing)
        if missing:
            raise BackendUnavailable(
                "spine_feed",
                BACKEND,
                f"topics {missing} do not exist: run `engines routes provision`",
            )

    async def aclose(self) -> None:
        feeds, self._feeds = self._feeds, []
        for feed in feeds:
            await feed.aclose()
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_quietly(producer)


async def open_backend(
    connections: Connections,
    data_dir: Path,
    *,
    create: bool = True,
    sweep_interval: float = 2.0,
    sweep_after: float = 5.0,
) -> KafkaBackend:
    conn: KafkaConnection | None = connections.kafka
    if conn is None:
        raise BackendUnavailable(
            "spine_feed", BACKEND, "no `connections.kafka` block: add its `bootstrap_servers`"
        )
    return KafkaBackend(
        KafkaClients(conn, data_dir),
        create=create,
        sweep_interval=sweep_interval,
        sweep_after=sweep_after,
    )
