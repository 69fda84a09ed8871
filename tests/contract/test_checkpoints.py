"""The CheckpointStore contract (spine.feed): positions per consumer and partition,
moved forward only, from what was read. Run against every backend whose checkpoint
store is built."""

from __future__ import annotations

import asyncio

import pytest

from spine.feed import CheckpointStore
from tests.contract.conftest import Harness


@pytest.fixture
async def checkpoints(checkpoint_harness: Harness, unique: str) -> CheckpointStore:
    route = checkpoint_harness.route(f"cp_{unique}")
    c: CheckpointStore = await checkpoint_harness.backend.checkpoint_store(route)
    return c


async def test_the_store_satisfies_the_protocol(checkpoints: CheckpointStore) -> None:
    assert isinstance(checkpoints, CheckpointStore)


async def test_checkpoints_start_empty_and_move_forward_only_from_what_was_read(
    checkpoints: CheckpointStore,
) -> None:
    assert await checkpoints.get("p") == {}
    assert await checkpoints.put("p", "0", "005", after=None) is True
    assert await checkpoints.put("p", "0", "009", after=None) is False  # not new any more
    assert await checkpoints.put("p", "0", "007", after="004") is False  # not what is stored
    assert await checkpoints.put("p", "0", "003", after="005") is False  # backwards
    assert await checkpoints.put("p", "0", "005", after="005") is False  # not forward
    assert await checkpoints.put("p", "0", "010", after="005") is True
    assert await checkpoints.put("p", "1", "002", after=None) is True
    assert await checkpoints.get("p") == {"0": "010", "1": "002"}


async def test_checkpoints_are_per_consumer_and_reset_forgets_one_consumer(
    checkpoints: CheckpointStore,
) -> None:
    await checkpoints.put("p", "0", "5", after=None)
    await checkpoints.put("q", "0", "3", after=None)
    assert await checkpoints.all() == {"p": {"0": "5"}, "q": {"0": "3"}}
    await checkpoints.reset("p")
    assert await checkpoints.get("p") == {}
    assert await checkpoints.all() == {"q": {"0": "3"}}
    assert await checkpoints.put("p", "0", "1", after=None) is True


async def test_twenty_racing_moves_from_one_position_have_one_winner(
    checkpoints: CheckpointStore,
) -> None:
    await checkpoints.put("p", "0", "100", after=None)
    outcomes = await asyncio.gather(
        *(checkpoints.put("p", "0", f"{101 + i}", after="100") for i in range(20))
    )
    assert outcomes.count(True) == 1
