"""Stopping an aiokafka client whose broker went away: its own tasks' CancelledError is
not this task's cancellation (a worker stopping its clients to retry must not end)."""

from __future__ import annotations

import asyncio

import pytest

from routing.backends.kafka.client import stop_quietly


class Client:
    def __init__(self, error: BaseException | None = None, wait: bool = False) -> None:
        self.error = error
        self.wait = wait
        self.stopped = False

    async def stop(self) -> None:
        if self.wait:
            await asyncio.sleep(10)
        self.stopped = True
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("error", [asyncio.CancelledError(), RuntimeError("gone"), None])
async def test_a_client_whose_own_tasks_fail_as_it_stops_is_stopped_quietly(
    error: BaseException | None,
) -> None:
    client = Client(error)

    await stop_quietly(client)

    assert client.stopped


async def test_a_cancellation_of_the_stopping_task_still_propagates() -> None:
    task = asyncio.create_task(stop_quietly(Client(wait=True)))
    await asyncio.sleep(0.01)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
