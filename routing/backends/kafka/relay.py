"""The relay: every committed event of the spine reaches the topic at least once.

Every process that opens ``spine_feed: kafka`` runs one, so what a process appends is
published by that process at once; what a process appended and did not publish (it
died right after the commit, or the broker was down) is published by the relay of any
process later. Two ways, by what the event store offers:

* **An outbox store** (DynamoDB, Cosmos DB, Firestore: :class:`spine.feed.RelaySource`).
  Each append this process commits is handed over with its sealed events and its
  pending marker; the relay publishes the events (``acks=all``) and only then clears
  the marker. Every ``sweep_interval`` seconds it reads the markers older than
  ``sweep_after`` seconds (another process's, or one it could not publish), publishes
  their events read from the spine, and clears them. Relays of several processes may
  publish one append twice (a slow publisher and a sweeper); consumers apply
  idempotently. The queue of appends waiting here is bounded: past it, an append waits
  in the store for a sweep.
* **A store with a global position** (the lab's SQLite: :class:`spine.feed.PositionedStore`).
  The relay follows the store's own feed as consumer ``relay:<topic>`` with a checkpoint
  in the projection checkpoint store, publishes each batch and only then moves the
  checkpoint; after a crash it publishes again from the checkpoint. A new relay
  publishes the spine from its start.

Nothing here relies on idempotent producers or transactions: a record published twice
is a redelivery, which the runner skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Final

from aiokafka import AIOKafkaProducer

from routing.backends.kafka.client import unavailable
from routing.backends.kafka.wire import record_of
from spine.errors import IntegrityError
from spine.events import AppendResult, EventEnvelope
from spine.feed import CheckpointStore, Delivered, Feed, Pending, RelaySource, Unreadable
from spine.store import EventStore

log = logging.getLogger(__name__)

MAX_BACKOFF: Final = 5.0


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    events: Sequence[Delivered],
    secret: bytes | None = None,
) -> None:
    """Send ``events`` to ``topic`` (signed with ``secret``, if given) and wait until the
    broker has every one (acks=all)."""
    async with unavailable("spine_feed", f"publish to {topic}"):
        sent = []
        for event in events:
            key, value, headers = record_of(event, secret)
            sent.append(await producer.send(topic, key=key, value=value, headers=headers))
        await asyncio.gather(*sent)


async def read_pending(store: EventStore, pending: Pending) -> list[Delivered]:
    """A marker's events from the spine; one that cannot be decoded as :class:`Unreadable`."""
    sid, first, last = pending.stream_id, pending.first_seq, pending.last_seq
    try:
        return list(await store.read_stream(sid, first, last))
    except IntegrityError:
        out: list[Delivered] = []
        for seq in range(first, last + 1):
            try:
                out += await store.read_stream(sid, seq, seq)
            except IntegrityError as exc:
                out.append(Unreadable(sid, seq, str(exc)))
        return out


class Relay:
    """Publishes a spine's committed events to ``topic`` (see the module's docstring)."""

    def __init__(
        self,
        store: EventStore,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        checkpoints: CheckpointStore | None,
        secret: bytes | None = None,
        sweep_interval: float = 2.0,
        sweep_after: float = 5.0,
        queue_bound: int = 10_000,
    ) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.checkpoints = checkpoints
        self.secret = secret
        """The record key each record is signed with (:mod:`.wire`), if any."""
        self.sweep_interval = sweep_interval
        self.sweep_after = sweep_after
        self.queue_bound = queue_bound
        self.consumer = f"relay:{topic}"
        self.published = 0
        """Events published (for tests and status)."""
        self.swept = 0
        """Markers the sweeper found and published."""
        self._queue: deque[tuple[Pending, tuple[EventEnvelope, ...]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._position: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._unlisten = None
        if isinstance(store, RelaySource):
            self._unlisten = store.on_append(self._appended)
        elif not callable(getattr(store, "own_feed", None)):
            raise TypeError(f"{type(store).__name__} has neither an outbox nor a position")

    def start(self) -> None:
        if self._task is None:
            run = self._run_outbox() if isinstance(self.store, RelaySource) else self._run_feed()
            self._task = asyncio.create_task(run, name=f"relay {self.topic}")

    # -- an outbox store ---------------------------------------------------------------

    def _appended(self, pending: Pending, result: AppendResult) -> None:
        if len(self._queue) >= self.queue_bound:
            return  # it waits in the store for a sweep
        self._queue.append((pending, tuple(result.events)))
        self._idle.clear()
        self._wake.set()

    async def _run_outbox(self) -> None:
        assert isinstance(self.store, RelaySource)
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_interval
        backoff = 0.1
        while True:
            try:
                if self._queue:
                    await self._publish_queued(self.store)
                elif loop.time() >= next_sweep:
                    await self.sweep()
                    next_sweep = loop.time() + self.sweep_interval
                else:
                    self._idle.set()
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), next_sweep - loop.time())
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay to %s failed (%s); retrying in %.1fs", self.topic, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _publish_queued(self, outbox: RelaySource) -> None:
        taken = list(self._queue)[:1000]
        events = [e for _, events in taken for e in events]
        await publish(self.producer, self.topic, events, self.secret)
        for _ in taken:  # published: nothing is lost if the clear below fails
            self._queue.popleft()
        self.published += sum(len(events) for _, events in taken)
        await outbox.clear([p for p, _ in taken])

    async def sweep(self, older_than: float | None = None) -> int:
        """Publish and clear the markers older than ``older_than`` seconds (default
        ``sweep_after``) not queued here; return how many."""
        assert isinstance(self.store, RelaySource)
        age = self.sweep_after if older_than is None else older_than
        queued = {(p.stream_id, p.marker) for p, _ in self._queue}
        found = 0
        while True:
            pending = [
                p
                for p in await self.store.pending(older_than=age, limit=500)
                if (p.stream_id, p.marker) not in queued
            ]
            if not pending:
                return found
            events = [e for p in pending for e in await read_pending(self.store, p)]
            await publish(self.producer, self.topic, events, self.secret)
            self.published += len(events)
            await self.store.clear(pending)
            found += len(pending)
            self.swept += len(pending)
            if len(pending) < 500:
                return found

    # -- a store with a position -------------------------------------------------------

    def _own_feed(self) -> Feed:
        own: Feed = self.store.own_feed()  # type: ignore[attr-defined]
        return own

    async def _run_feed(self) -> None:
        assert self.checkpoints is not None, "a relay by position keeps a checkpoint"
        feed = self._own_feed()
        backoff = 0.1
        while True:
            subscription = feed.subscribe(self.consumer, self.checkpoints, batch_size=500)
            try:
                while True:
                    batch = await subscription.next_batch(0.5)
                    if batch is None:
                        continue
                    if batch.events:
                        await publish(self.producer, self.topic, batch.events, self.secret)
                        self.published += len(batch.events)
                    if await subscription.commit(batch):
                        self._position = batch.token
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay to %s failed (%s); retrying in %.1fs", self.topic, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                await subscription.aclose()

    # -- both --------------------------------------------------------------------------

    async def flush(self, timeout: float = 10.0, *, everything: bool = False) -> bool:
        """Wait (at most ``timeout`` seconds) until what this process appended before the
        call is on the topic (by position: everything committed before the call); with
        ``everything``, an outbox's every pending marker too, whoever wrote it (a
        catch-up's start). False if it is not in time."""
        try:
            async with asyncio.timeout(timeout):
                if isinstance(self.store, RelaySource):
                    await self._idle.wait()
                    if everything:
                        await self.sweep(older_than=0.0)
                    return True
                heads = await self._own_feed().heads()
                target = max(heads.values(), default="")
                nothing = "0" * len(target)  # a head of 0: nothing committed yet
                while target > nothing and (self._position or "") < target:
                    stored = {}
                    if self.checkpoints is not None:
                        stored = await self.checkpoints.get(self.consumer)
                    if max(stored.values(), default="") >= target:
                        break
                    await asyncio.sleep(0.02)
                return True
        except TimeoutError:
            return False

    async def aclose(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        task, self._task = self._task, None
        if task is not None:
            try:
                await self.flush(2.0)  # what this process appended, if it can
            except Exception as exc:  # what is not published is published by a later relay
                log.warning("relay to %s closing without a flush: %s", self.topic, exc)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
