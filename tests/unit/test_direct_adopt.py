"""How subscriptions starting together share the relay's reads of the outbox
(:meth:`routing.backends.direct.DirectFeed.adopt_pending`), with a fake outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from routing.backends.direct import DirectFeed
from spine.feed import AppendListener, Delivered, Pending


class SlowOutbox:
    """An outbox whose ``pending`` waits until let go, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.go = asyncio.Event()

    async def pending(self, *, older_than: float = 0.0, limit: int = 1000) -> list[Pending]:
        self.calls += 1
        await self.go.wait()
        return []

    async def clear(self, pending: Sequence[Pending]) -> None:
        return None

    def on_append(self, listener: AppendListener) -> Callable[[], None]:
        return lambda: None

    async def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]:
        return
        yield


def feed(outbox: SlowOutbox) -> DirectFeed:
    store: Any = object()
    return DirectFeed(store, outbox)


async def test_calls_arriving_during_a_read_share_the_next_one() -> None:
    outbox = SlowOutbox()
    direct = feed(outbox)
    first = asyncio.create_task(direct.adopt_pending())
    await asyncio.sleep(0)  # the first read is under way
    joiners = [asyncio.create_task(direct.adopt_pending()) for _ in range(10)]
    await asyncio.sleep(0)
    outbox.go.set()

    await asyncio.gather(first, *joiners)

    assert outbox.calls == 2  # the one under way, and one after all ten arrived


async def test_a_read_abandoned_by_its_caller_is_taken_up_by_those_who_joined_it() -> None:
    outbox = SlowOutbox()
    direct = feed(outbox)
    running = asyncio.create_task(direct.adopt_pending())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(direct.adopt_pending())  # will run the next read
    await asyncio.sleep(0)
    joined = asyncio.create_task(direct.adopt_pending())  # joins that next read
    await asyncio.sleep(0)

    waiting.cancel()  # its caller goes away before its read began
    with pytest.raises(asyncio.CancelledError):
        await waiting
    outbox.go.set()
    await asyncio.wait_for(asyncio.gather(running, joined), 5)

    assert not joined.cancelled()
    assert outbox.calls == 2
    await asyncio.wait_for(direct.adopt_pending(), 5)  # and later calls still work
    assert outbox.calls == 3


async def test_cancelling_every_caller_at_once_ends_them_all() -> None:
    """A service stopping cancels every projector at once, the one running the next
    read and those that joined it: none may take the abandoned read up and go on."""
    outbox = SlowOutbox()
    direct = feed(outbox)
    running = asyncio.create_task(direct.adopt_pending())
    await asyncio.sleep(0)
    callers = [asyncio.create_task(direct.adopt_pending()) for _ in range(5)]
    await asyncio.sleep(0)

    for task in (running, *callers):
        task.cancel()
    done = await asyncio.wait_for(asyncio.gather(running, *callers, return_exceptions=True), 5)

    assert all(isinstance(result, asyncio.CancelledError) for result in done)
    assert outbox.calls == 1


class ClearedMeanwhile(SlowOutbox):
    """An outbox whose ``pending`` answers with a marker read before it was cleared."""

    def __init__(self, marker: Pending) -> None:
        super().__init__()
        self.marker = marker
        self.cleared: list[Pending] = []

    async def pending(self, *, older_than: float = 0.0, limit: int = 1000) -> list[Pending]:
        self.calls += 1
        await self.go.wait()
        return [self.marker]

    async def clear(self, pending: Sequence[Pending]) -> None:
        self.cleared += pending


async def test_a_marker_cleared_while_the_sweeper_reads_is_not_delivered_again() -> None:
    """The relay delivers and clears a marker while a sweep's read of the outbox is under
    way; the read still returns it (read before the clear). Taking it into flight again
    would deliver its events a second time."""
    from datetime import UTC, datetime

    marker = Pending("notes/t/lab/n1", 1, 1, "m1", datetime.now(UTC))
    outbox = ClearedMeanwhile(marker)
    direct = feed(outbox)
    direct._stores.append(object())  # type: ignore[arg-type]  # a relay that clears
    entry = direct.track(marker, None)
    assert entry is not None
    sweeping = asyncio.create_task(direct.adopt(older_than=0.0))
    await asyncio.sleep(0)  # the read is under way
    await direct._clear([entry])  # delivered and taken: cleared meanwhile
    assert outbox.cleared == [marker]
    outbox.go.set()

    assert await sweeping == []
    assert direct.swept == 0
    assert direct.inflight == {}
