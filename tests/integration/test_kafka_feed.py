"""What only the Kafka feed has to handle: a topic that no longer holds what lies after a
consumer's stored positions (made again, or passed by retention)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from routing.backends.kafka import KafkaFeed
from routing.backends.kafka import open_backend as open_kafka
from routing.backends.sqlite import open_backend as open_sqlite
from routing.config import Connections, Route, SqliteConnection
from spine.errors import BackendUnavailable
from spine.events import NO_STREAM
from spine.feed import CheckpointStore
from spine.store import EventStore
from tests.conftest import make_event
from tests.contract.cloud_kafka import kafka_connections
from tests.servers.fixtures import TansuBroker

pytestmark = pytest.mark.kafka


def lab(name: str) -> Route:
    return Route(backend="sqlite", name=name, lab=True)


@pytest.fixture
async def stores(
    tansu: TansuBroker, tmp_path: Path, unique: str
) -> AsyncIterator[tuple[EventStore, CheckpointStore, KafkaFeed]]:
    sqlite = await open_sqlite(Connections(sqlite=SqliteConnection(path="x.db")), tmp_path)
    kafka = await open_kafka(kafka_connections(tansu), tmp_path)
    try:
        spine = await sqlite.event_store(lab("spine"))
        checkpoints = await sqlite.checkpoint_store(lab("checkpoints"))
        relay = await sqlite.checkpoint_store(lab("relay"))
        feed = await kafka.feed(
            Route(backend="kafka", name=f"t.{unique}"), spine, checkpoints=relay
        )
        yield spine, checkpoints, feed
    finally:
        await kafka.aclose()
        await sqlite.aclose()


async def test_positions_past_the_topics_end_are_caught_up_from_the_spine(
    stores: tuple[EventStore, CheckpointStore, KafkaFeed],
) -> None:
    spine, checkpoints, feed = stores
    for n in range(3):
        await spine.append(f"notes/t1/lab/n{n}", [make_event(tenant_id="t1")], NO_STREAM)
    for partition in await feed.heads():  # as if the topic had held 50 records each
        assert await checkpoints.put("c", partition, f"{50:020d}", after=None)
    subscription = feed.subscribe("c", checkpoints)

    seen = []
    while (batch := await subscription.next_batch(0)) is not None:
        seen += batch.events
        assert await subscription.commit(batch)
    await subscription.aclose()

    assert sorted(e.stream_id for e in seen) == [f"notes/t1/lab/n{n}" for n in range(3)]
    assert await checkpoints.get("c") == await feed.heads()


class Flaky:
    """A checkpoint store that does not answer while ``down``, or once ``answers`` more
    calls have been answered."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner = inner
        self.down = False
        self.answers: int | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.answers is not None:
                self.down = self.answers <= 0
                self.answers -= 1
            if self.down:
                raise BackendUnavailable("projection_checkpoints", "sqlite", "down (test)")
            return await attr(*args, **kwargs)

        return call


async def test_partitions_assigned_while_the_checkpoint_store_is_down_start_once_it_answers(
    stores: tuple[EventStore, CheckpointStore, KafkaFeed],
) -> None:
    spine, checkpoints, feed = stores
    flaky = Flaky(checkpoints)
    first = feed.subscribe("c", flaky)  # type: ignore[arg-type]
    while (batch := await first.next_batch(0)) is not None:  # an empty catch-up: positions
        assert await first.commit(batch)
    await first.aclose()
    for n in range(3):
        await spine.append(f"notes/t1/lab/n{n}", [make_event(tenant_id="t1")], NO_STREAM)

    flaky.answers = 1  # the subscription reads its positions, then the store goes down
    subscription = feed.subscribe("c", flaky)  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable):  # assigned, but its positions cannot be read
        await subscription.next_batch(0)
    flaky.answers, flaky.down = None, False
    seen = []
    while (batch := await subscription.next_batch(0)) is not None:
        seen += batch.events
        assert await subscription.commit(batch)
    await subscription.aclose()

    assert sorted(e.stream_id for e in seen) == [f"notes/t1/lab/n{n}" for n in range(3)]
