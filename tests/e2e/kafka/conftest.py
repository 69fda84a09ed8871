"""The command bus on a session Tansu broker: a routes file that is the packaged lab
configuration with ``command_bus: kafka`` on a topic of the test's own, the runtime over
it, a worker in process, the producer client, and raw access to the topics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engines.client import CommandClient, client_for
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from engines.worker import CommandWorker, kafka_bus
from routing.backends.kafka.bus import Accepted, Refused, decode_answer
from tests.e2e.support import lab_routes_with
from tests.servers.fixtures import TansuBroker

ROOT = Path(__file__).resolve().parents[3]
ANSWER_SECONDS = 15.0


@pytest.fixture
def topic(unique: str) -> str:
    return f"commands-{unique}"


@pytest.fixture
def routes_file(tansu: TansuBroker, tmp_path: Path, topic: str) -> Path:
    path = lab_routes_with(
        tmp_path, "command_bus", f"  command_bus: {{backend: kafka, name: {topic}}}"
    )
    kafka = (
        "  kafka:\n"
        f"    bootstrap_servers: '{tansu.bootstrap}'\n"
        "    partitions: 2\n"
        # Tansu holds a join until half a session has passed: keep sessions short.
        "    session_timeout_ms: 1000\n"
        "    heartbeat_interval_ms: 100\n"
        "    rebalance_timeout_ms: 1000\n"
    )
    text = path.read_text(encoding="utf-8").replace("connections:\n", "connections:\n" + kafka)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def settings(routes_file: Path) -> Settings:
    return load_settings(routes_file)[0]


@pytest.fixture
async def runtime(settings: Settings, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with bootstrap(settings, tmp_path) as rt:
        yield rt


@contextlib.asynccontextmanager
async def running_worker(runtime: Runtime) -> AsyncIterator[CommandWorker]:
    worker = CommandWorker(runtime, kafka_bus(runtime))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[CommandWorker]:
    async with running_worker(runtime) as w:
        yield w


@pytest.fixture
async def client(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> AsyncIterator[CommandClient]:
    async with client_for(settings, tmp_path) as c:
        yield c


@pytest.fixture
async def raw_producer(tansu: TansuBroker) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=tansu.bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def answers_to(
    tansu: TansuBroker, topic: str, command_id: str, count: int, timeout: float = ANSWER_SECONDS
) -> list[Accepted | Refused]:
    """The first ``count`` answers to ``command_id`` on ``topic``'s results, read from the
    beginning (fails if they do not come within ``timeout``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=tansu.bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[Accepted | Refused] = []
    try:
        results = f"{topic}.results"
        parts = [
            TopicPartition(results, p) for p in sorted(consumer.partitions_for_topic(results) or ())
        ]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [
                TopicPartition(results, p)
                for p in sorted(consumer.partitions_for_topic(results) or ())
            ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    found += [
                        decode_answer(r.value or b"")
                        for r in records
                        if r.key == command_id.encode()
                    ]
    finally:
        await consumer.stop()
    return found[:count]


Spawn = Callable[..., subprocess.Popen[str]]
"""``spawn(*python_args, stdout=..., stderr=...)``: a Python child of the repository."""


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts Python children (``python <args>`` in the repository, its code on the
    path); any still running at the test's end are killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, **options: Any) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, **options)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
