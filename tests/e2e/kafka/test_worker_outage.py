"""A worker outlives its broker's restart: it goes on answering once the broker is
back, and what it had not committed is answered again, not lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engines.client import CommandClient
from engines.runtime import Runtime
from engines.worker import CommandWorker, kafka_bus
from routing.backends.kafka.bus import Accepted
from tests.e2e.kafka.test_command_bus import create_note
from tests.servers.fixtures import TansuBroker, TansuOnS3

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


@pytest.fixture
def tansu(tansu_on_s3: TansuOnS3) -> TansuBroker:
    """This module's broker keeps its topics in S3, so it can be restarted."""
    return tansu_on_s3.broker


async def test_the_worker_goes_on_answering_after_the_broker_restarts(
    worker: CommandWorker,
    client: CommandClient,
    tansu_on_s3: TansuOnS3,
    tmp_path: Path,
    unique: str,
) -> None:
    before = await client.send_and_wait(create_note(tmp_path, f"{unique}a"), timeout=15)
    await asyncio.to_thread(tansu_on_s3.restart)

    after = await client.send_and_wait(create_note(tmp_path, f"{unique}b"), timeout=60)

    assert isinstance(before, Accepted)
    assert isinstance(after, Accepted)
    assert (after.version, after.deduplicated) == (1, False)


async def test_a_worker_started_while_the_broker_is_down_waits_for_it(
    runtime: Runtime, client: CommandClient, tansu_on_s3: TansuOnS3, tmp_path: Path, unique: str
) -> None:
    await asyncio.to_thread(tansu_on_s3.stop)
    stop = asyncio.Event()
    task = asyncio.create_task(CommandWorker(runtime, kafka_bus(runtime)).run(stop))
    try:
        await asyncio.sleep(1.0)  # it cannot connect: it must wait, not end
        assert not task.done()
        await asyncio.to_thread(tansu_on_s3.restart)

        answer = await client.send_and_wait(create_note(tmp_path, unique), timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    assert isinstance(answer, Accepted)
