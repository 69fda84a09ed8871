"""What Tansu, the Kafka-compatible broker of the tests, does for ``spine_feed: kafka``,
through aiokafka: keyed records in order per partition, consumer groups that commit by
hand and resume, partitions split between a group's members, durability on S3 across a
broker restart, and where its answers differ from Kafka's.

Producers use ``acks="all"`` and ``enable_idempotence=False``: Tansu has no idempotent
producers or transactions (DESIGN §8).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.servers.fixtures import TansuBroker, TansuOnS3

pytestmark = pytest.mark.kafka

#: Tansu holds every JoinGroup until half the session timeout has passed (in 1 s steps),
#: so with aiokafka's default of 10 s each join or rebalance takes 5 s; with 2 s, 1 s.
#: (Kafka itself refuses a session timeout under 6 s by default.) Tansu also numbers a new
#: group's first generation 0, and aiokafka sends LeaveGroup only from generation 1 on:
#: the first member of a group never leaves it on stop(), so the next one to join waits
#: for its session to time out (a SyncGroup held that long, then a rejoin).
QUICK_GROUP: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 100}
#: A bound so that a broken broker fails the test instead of hanging it.
WAIT_SECONDS = 15.0


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        created = await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()
    # aiokafka returns the broker's error codes instead of raising them.
    assert [(name, code) for name, code, _ in created.topic_errors] == [(topic, 0)]


@asynccontextmanager
async def _producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@asynccontextmanager
async def _consumer(bootstrap: str, *topics: str, **config: Any) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **{"fetch_max_wait_ms": 50, **config},
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The next ``count`` records, in the order ``getmany`` gives them."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while len(records) < count:
        assert time.monotonic() < deadline, f"{len(records)} of {count} records came"
        batches = await consumer.getmany(timeout_ms=200)
        for batch in batches.values():
            records.extend(batch)
    return records


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS} s: {what}"
        await asyncio.sleep(0.02)


def _keep_polling(consumer: AIOKafkaConsumer) -> Callable[[], Awaitable[None]]:
    """Poll ``consumer`` in the background, as a projector would; returns the stop."""

    async def poll() -> None:
        while True:
            await consumer.getmany(timeout_ms=100)

    task = asyncio.create_task(poll())

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return stop


async def test_keyed_records_come_back_in_produced_order_within_their_partition(
    tansu: TansuBroker, unique: str
) -> None:
    topic = f"spine-{unique}"
    await _create_topic(tansu.bootstrap, topic, partitions=4)
    keys = [f"stream-{n}".encode() for n in range(8)]
    sent: dict[bytes, list[bytes]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    async with _producer(tansu.bootstrap) as producer:
        for n in range(20):  # one record per request
            key, value = keys[n % 8], str(n).encode()
            sent[key].append(value)
            partition_of[key].add((await producer.send_and_wait(topic, value, key=key)).partition)
        pending = []
        for n in range(20, 40):  # batched: several records per request
            key, value = keys[n % 8], str(n).encode()
            sent[key].append(value)
            pending.append(await producer.send(topic, value, key=key))
        for metadata in await asyncio.gather(*pending):
            assert metadata.offset >= 0

    async with _consumer(tansu.bootstrap) as consumer:
        partitions = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = await _read(consumer, 40)

    received: dict[bytes, list[bytes]] = defaultdict(list)
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None
        assert record.value is not None
        received[record.key].append(record.value)
        partition_of[record.key].add(record.partition)
        offsets[record.partition].append(record.offset)
    assert received == sent
    assert all(len(placed) == 1 for placed in partition_of.values()), partition_of
    assert all(found == list(range(len(found))) for found in offsets.values()), offsets


async def test_a_new_group_member_resumes_after_the_offset_the_group_committed(
    tansu: TansuBroker, unique: str
) -> None:
    topic, group = f"spine-{unique}", f"projector-{unique}"
    await _create_topic(tansu.bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)
    async with _producer(tansu.bootstrap) as producer:
        for n in range(6):
            await producer.send_and_wait(topic, str(n).encode(), key=b"s1")

    async with _consumer(tansu.bootstrap, topic, group_id=group, **QUICK_GROUP) as first:
        assert [r.offset for r in await _read(first, 6)] == list(range(6))
        await first.commit({tp: 4})  # records 0..3 applied; 4 and 5 not yet
        assert await first.committed(tp) == 4

    async with _consumer(tansu.bootstrap, topic, group_id=group, **QUICK_GROUP) as second:
        resumed = await _read(second, 2)
        assert [(r.offset, r.value) for r in resumed] == [(4, b"4"), (5, b"5")]
        assert await second.committed(tp) == 4


async def test_a_groups_two_members_split_the_partitions_and_the_last_one_takes_all(
    tansu: TansuBroker, unique: str
) -> None:
    topic, group = f"spine-{unique}", f"projector-{unique}"
    await _create_topic(tansu.bootstrap, topic, partitions=4)
    every = {TopicPartition(topic, p) for p in range(4)}
    async with (
        _consumer(tansu.bootstrap, topic, group_id=group, **QUICK_GROUP) as one,
        _consumer(tansu.bootstrap, topic, group_id=group, **QUICK_GROUP) as other,
    ):
        stop_one, stop_other = _keep_polling(one), _keep_polling(other)
        try:
            await _until(
                lambda: bool(one.assignment()) and bool(other.assignment()),
                "both members have partitions",
            )
            assert not one.assignment() & other.assignment()
            assert one.assignment() | other.assignment() == every

            await stop_other()
            await other.stop()  # it leaves the group: the broker rebalances the other at once
            await _until(lambda: one.assignment() == every, "the last member has all four")
        finally:
            await stop_other()
            await stop_one()


async def test_records_and_committed_offsets_on_s3_survive_a_broker_restart(
    tansu_on_s3: TansuOnS3, unique: str
) -> None:
    topic, group = f"spine-{unique}", f"projector-{unique}"
    await _create_topic(tansu_on_s3.bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)
    async with _producer(tansu_on_s3.bootstrap) as producer:
        for n in range(5):
            await producer.send_and_wait(topic, str(n).encode(), key=b"s1")
    async with _consumer(tansu_on_s3.bootstrap, topic, group_id=group, **QUICK_GROUP) as first:
        await _read(first, 5)
        await first.commit({tp: 3})

    tansu_on_s3.restart()

    async with _consumer(tansu_on_s3.bootstrap) as reader:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        kept = await _read(reader, 5)
        assert [(r.offset, r.value) for r in kept] == [(n, str(n).encode()) for n in range(5)]
    async with _producer(tansu_on_s3.bootstrap) as producer:
        assert (await producer.send_and_wait(topic, b"5", key=b"s1")).offset == 5
    async with _consumer(tansu_on_s3.bootstrap, topic, group_id=group, **QUICK_GROUP) as second:
        assert await second.committed(tp) == 3
        assert [r.offset for r in await _read(second, 3)] == [3, 4, 5]


async def test_on_s3_a_fetch_that_cannot_list_the_partition_in_its_wait_answers_empty(
    tansu_on_s3: TansuOnS3, unique: str
) -> None:
    """Tansu on object storage lists every record batch object of a partition on each
    fetch, and once that takes longer than the fetch's wait it answers with no records
    and no error. The listing only grows with the partition, so a consumer whose wait is
    shorter than it never reads the partition again: consumers of Tansu on S3 wait
    ``TansuOnS3.fetch_max_wait_ms``, which reads it."""
    topic = f"spine-{unique}"
    await _create_topic(tansu_on_s3.bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)
    async with _producer(tansu_on_s3.bootstrap) as producer:
        for n in range(20):  # a batch each
            await producer.send_and_wait(topic, str(n).encode(), partition=0)

    async with _consumer(tansu_on_s3.bootstrap, fetch_max_wait_ms=1) as starved:
        starved.assign([tp])
        await starved.seek_to_beginning(tp)
        read = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            read += (await starved.getmany(timeout_ms=100)).get(tp, [])
        assert starved.highwater(tp) == 20, "the fetches were answered"
        assert read == [], "a listing longer than the wait reads nothing"

    wait = tansu_on_s3.fetch_max_wait_ms
    async with _consumer(tansu_on_s3.bootstrap, fetch_max_wait_ms=wait) as reader:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        assert [r.offset for r in await _read(reader, 20)] == list(range(20))


async def test_end_offsets_name_the_last_batch_but_the_highwater_after_a_fetch_is_the_end(
    tansu: TansuBroker, unique: str
) -> None:
    """Tansu 0.6.0 answers ListOffsets(latest) with the base offset of the partition's
    last record batch + 1, not the offset after its last record. A fetch response's
    high watermark is right: lag is computed from ``highwater``, never ``end_offsets``."""
    topic = f"spine-{unique}"
    await _create_topic(tansu.bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)
    async with _producer(tansu.bootstrap) as producer:
        await producer.send_and_wait(topic, b"0", partition=0)  # a batch of one: offset 0
        batch = producer.create_batch()
        for n in range(1, 5):
            assert batch.append(key=None, value=str(n).encode(), timestamp=None) is not None
        await (await producer.send_batch(batch, topic, partition=0))  # offsets 1..4

    async with _consumer(tansu.bootstrap) as consumer:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        assert [r.offset for r in await _read(consumer, 5)] == [0, 1, 2, 3, 4]
        assert consumer.highwater(tp) == 5
        assert (await consumer.end_offsets([tp]))[tp] == 2  # Kafka would say 5
