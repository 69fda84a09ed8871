"""The runtime with ``spine_feed: kafka`` (the lab's SQLite spine and views, the feed on a
session Tansu broker): a command reaches its view through the topic, status shows the
projectors' partitions, and the runtime closes cleanly (the relay before the spine it
reads)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from commands.envelope import Command
from commands.notes import UpdateNote, create_note_command
from engines.runtime import bootstrap
from engines.settings import Settings, load_settings
from routing.backends.kafka.wire import record_of
from routing.config import Route
from spine.events import Scope
from tests.contract.cloud_kafka import kafka_connections
from tests.servers.fixtures import TansuBroker

pytestmark = pytest.mark.kafka

SCOPE = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s1")


def kafka_lab(tansu: TansuBroker, topic: str) -> Settings:
    """The packaged lab routes with ``spine_feed`` on ``topic``."""
    settings = load_settings(None)[0]
    kafka = kafka_connections(tansu).kafka
    routes = dict(settings.routes) | {"spine_feed": Route(backend="kafka", name=topic)}
    connections = settings.connections.model_copy(update={"kafka": kafka})
    return settings.model_copy(update={"routes": routes, "connections": connections})


async def test_a_command_reaches_its_view_through_the_topic_and_the_runtime_closes_cleanly(
    tansu: TansuBroker, tmp_path: Path, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="routing.backends.kafka")
    async with bootstrap(kafka_lab(tansu, f"spine.{unique}"), tmp_path) as rt:
        result = await rt.dispatch(create_note_command(SCOPE, {"title": "t", "content": "c"}))
        assert await rt.wait_for("notes", result.stream_id, result.version, 30)
        status = await rt.status("notes")
        for _ in range(600):  # the checkpoint moves just after the view: 30 s at most
            if status.lag == 0:
                break
            await asyncio.sleep(0.05)
            status = await rt.status("notes")
        readiness = await rt.registry.readiness()

    assert {p.partition for p in status.partitions} == {f"spine.{unique}/{n}" for n in range(4)}
    assert readiness.down == []  # /readyz: Kafka answers
    # Closing the spine before the relay that reads it left the relay failing and retrying.
    assert [r.getMessage() for r in caplog.records] == []


async def test_a_bad_record_on_the_topic_is_parked_and_the_partition_goes_on(
    tansu: TansuBroker, tmp_path: Path, unique: str
) -> None:
    """Whatever is on the topic, a projector never stops on it: a record that does not
    decode is parked as its stream's event, one that names no stream is passed over,
    and the events after them on the same partition are applied."""
    topic = f"spine.{unique}"
    settings = kafka_lab(tansu, topic)
    async with bootstrap(settings, tmp_path) as rt:
        first = await rt.dispatch(create_note_command(SCOPE, {"title": "a", "content": "c"}))
        assert await rt.wait_for("notes", first.stream_id, first.version, 30)
        bad = "notes/t1/lab/forged"
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
        await producer.start()
        try:
            for partition in range(4):  # on every partition, before the next real event
                await producer.send_and_wait(
                    topic,
                    key=bad.encode(),
                    value=b"{not json",
                    partition=partition,
                    headers=[("seq", b"1")],
                )
                await producer.send_and_wait(topic, key=b"no seq", value=b"{}", partition=partition)
                await producer.send_and_wait(  # a real stream, a seq no store can hold
                    topic,
                    key=first.stream_id.encode(),
                    value=b"{}",
                    partition=partition,
                    headers=[("seq", str(10**30).encode())],
                )
        finally:
            await producer.stop()
        later = await rt.dispatch(create_note_command(SCOPE, {"title": "b", "content": "c"}))
        note_id = first.stream_id.rsplit("/", 1)[-1]
        update = UpdateNote(note_id=note_id, title="a2", content="c")
        again = await rt.dispatch(Command[UpdateNote](scope=SCOPE, payload=update))

        assert await rt.wait_for("notes", later.stream_id, later.version, 30)
        assert await rt.wait_for("notes", again.stream_id, again.version, 30)
        parked = await rt.parking.parked("notes")
        assert [(p.stream_id, p.seq) for p in parked] == [(bad, 1)]
        assert "cannot be decoded" in parked[0].error


async def test_with_a_record_key_a_record_not_signed_with_it_is_passed_over(
    tansu: TansuBroker, tmp_path: Path, unique: str
) -> None:
    """Without the key, a forged record at a stream's next seq would park the stream
    (see above); with it, the record is not a spine event, and the real seq applies."""
    topic = f"spine.{unique}"
    (tmp_path / "record.key").write_text("k" * 40)
    settings = kafka_lab(tansu, topic)
    kafka = settings.connections.kafka
    assert kafka is not None
    signed = kafka.model_copy(update={"record_key_file": "record.key"})
    settings = settings.model_copy(
        update={"connections": settings.connections.model_copy(update={"kafka": signed})}
    )
    async with bootstrap(settings, tmp_path) as rt:
        first = await rt.dispatch(create_note_command(SCOPE, {"title": "a", "content": "c"}))
        assert await rt.wait_for("notes", first.stream_id, first.version, 30)
        (genuine,) = await rt.spine.read_stream(first.stream_id, 1, 1)
        forged = genuine.model_copy(update={"seq": 2, "payload": {**genuine.payload, "x": 1}})
        key, value, headers = record_of(forged)  # well formed, unsigned
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
        await producer.start()
        try:
            for partition in range(4):
                await producer.send_and_wait(
                    topic, key=key, value=value, headers=headers, partition=partition
                )
        finally:
            await producer.stop()
        note_id = first.stream_id.rsplit("/", 1)[-1]
        update = UpdateNote(note_id=note_id, title="a2", content="c")
        again = await rt.dispatch(Command[UpdateNote](scope=SCOPE, payload=update))

        assert await rt.wait_for("notes", again.stream_id, again.version, 30)
        assert await rt.parking.parked("notes") == []
        record = await rt.view_of("notes").get(first.stream_id)
        assert record is not None
        assert record.data["title"] == "a2"
