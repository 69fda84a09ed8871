"""The ParkingStore contract (projections.parking): run unchanged against every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections.parking import Parked, ParkingStore
from tests.contract.conftest import Harness

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def parking(checkpoint_harness: Harness, unique: str) -> ParkingStore:
    route = checkpoint_harness.route(f"cp_{unique}")
    p: ParkingStore = await checkpoint_harness.backend.checkpoint_store(route)
    return p


def parked(stream: str, projector: str = "notes", seq: int = 3, minutes: int = 0) -> Parked:
    return Parked(
        projector=projector,
        stream_id=stream,
        seq=seq,
        event_id="e",
        event_type="note.updated",
        error="ValueError: boom",
        attempts=3,
        parked_at=T0 + timedelta(minutes=minutes),
    )


async def test_the_store_satisfies_the_protocol(parking: ParkingStore) -> None:
    assert isinstance(parking, ParkingStore)


async def test_parked_streams_read_back_oldest_first_per_projector(parking: ParkingStore) -> None:
    await parking.park(parked("b", minutes=2))
    await parking.park(parked("a", minutes=1))
    await parking.park(parked("a", projector="other"))
    assert [p.stream_id for p in await parking.parked("notes")] == ["a", "b"]
    assert len(await parking.parked()) == 3
    assert await parking.parked("notes") == [parked("a", minutes=1), parked("b", minutes=2)]


async def test_parking_again_replaces_the_record(parking: ParkingStore) -> None:
    await parking.park(parked("a", seq=3))
    await parking.park(parked("a", seq=5, minutes=1))
    assert [(p.stream_id, p.seq) for p in await parking.parked("notes")] == [("a", 5)]


async def test_find_answers_which_streams_are_parked(parking: ParkingStore) -> None:
    await parking.park(parked("a"))
    await parking.park(parked("b", projector="other"))
    found = await parking.find("notes", ["a", "b", "c"])
    assert list(found) == ["a"]
    assert found["a"] == parked("a")


async def test_release_forgets_one_stream(parking: ParkingStore) -> None:
    await parking.park(parked("a"))
    await parking.park(parked("b"))
    assert await parking.release("notes", "a") is True
    assert await parking.release("notes", "a") is False
    assert [p.stream_id for p in await parking.parked("notes")] == ["b"]
