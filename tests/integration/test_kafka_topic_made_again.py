"""A topic deleted and made again under a live subscription: the positions it held lie
past the new partitions' ends, and the consumer catches up from the spine.

This module runs a broker of its own: deleting a topic under live clients is the kind of
thing that can take a broker down, and the session's broker serves every other test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from engines.devservers import HOST, free_port, start_tansu
from routing.backends.kafka import KafkaFeed
from spine.events import NO_STREAM
from spine.feed import CheckpointStore
from spine.store import EventStore
from tests.conftest import make_event
from tests.integration.test_kafka_feed import stores  # noqa: F401 - the fixture
from tests.servers.fixtures import TansuBroker

pytestmark = pytest.mark.kafka


@pytest.fixture
def tansu(tansu: TansuBroker) -> Iterator[TansuBroker]:
    """A broker for this test alone (on the session's, only to be skipped with it)."""
    del tansu
    port = free_port()
    server = start_tansu(HOST, port)
    try:
        yield TansuBroker(port=port)
    finally:
        server.stop()


async def test_a_topic_made_again_under_a_live_subscription_is_caught_up_from_the_spine(
    stores: tuple[EventStore, CheckpointStore, KafkaFeed],  # noqa: F811 - the fixture
    tansu: TansuBroker,
) -> None:
    spine, checkpoints, feed = stores
    subscription = feed.subscribe("c", checkpoints)
    for n in range(8):  # every partition has records: each position is past 0
        await spine.append(f"notes/t1/lab/n{n}", [make_event(tenant_id="t1")], NO_STREAM)
    await drain_all(subscription)
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([feed.topic])
        await feed.clients.ensure_topics([feed.topic], "spine_feed")
    finally:
        await admin.close()
    await spine.append("notes/t1/lab/later", [make_event(tenant_id="t1")], NO_STREAM)

    seen = await drain_all(subscription, until="notes/t1/lab/later")
    await subscription.aclose()

    assert "notes/t1/lab/later" in {e.stream_id for e in seen}


async def drain_all(subscription: Any, until: str | None = None) -> list[Any]:
    """Batches (each committed) until none is ready, or until ``until``'s stream came."""
    seen: list[Any] = []
    async with asyncio.timeout(60):
        while True:
            batch = await subscription.next_batch(0 if until is None else 0.5)
            if batch is None and (until is None or until in {e.stream_id for e in seen}):
                return seen
            if batch is not None:
                seen += batch.events
                assert await subscription.commit(batch)
