"""The feed loop: follows a :class:`~spine.feed.Feed` for one projector, applies each batch
with :meth:`ProjectorRunner.apply`, and only then moves the checkpoint of the batch's
partition. A crash between the two replays the batch, which the runner takes as a no-op
(it tracks applied progress per stream)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from projections.parking import ParkingStore
from projections.runner import ProjectorRunner
from spine.feed import CheckpointStore, Feed, FeedBatch, Subscription


@dataclass(frozen=True)
class PartitionStatus:
    partition: str
    checkpoint: str | None
    lag: int | None


@dataclass(frozen=True)
class ProjectorStatus:
    name: str
    partitions: tuple[PartitionStatus, ...]
    parked: int

    @property
    def lag(self) -> int | None:
        """Events not yet delivered, over every partition (``None`` if any is unknown)."""
        lags = [p.lag for p in self.partitions]
        return None if None in lags else sum(p or 0 for p in lags)


class FeedLoop:
    """Drives one runner from one feed. The checkpoint moves after every batch that
    leaves the loop caught up having applied something, and otherwise at most every
    ``checkpoint_seconds`` (while it works through a backlog, or passes over other
    domains' events) and when the feed goes idle: a replay after a crash is harmless, a
    write per batch is not free.

    Batches are small on purpose: everything a batch decodes and builds (envelopes,
    records, rows) lives until its commit, and a batch of 1,000 outlives the garbage
    collector's young generations, so the collector keeps walking it and promotes it to
    be walked again in full collections; below about 128 the commit per batch (an fsync
    where durability asks for one) costs more than that saves."""

    def __init__(
        self,
        runner: ProjectorRunner,
        feed: Feed,
        checkpoints: CheckpointStore,
        *,
        batch_size: int = 256,
        idle_timeout: float = 0.5,
        checkpoint_seconds: float = 1.0,
    ) -> None:
        self.runner = runner
        self.feed = feed
        self.checkpoints = checkpoints
        self.batch_size = batch_size
        self.idle_timeout = idle_timeout
        self.checkpoint_seconds = checkpoint_seconds
        self._subscription: Subscription | None = None
        self._applied: dict[str, FeedBatch] = {}
        """Per partition, the last batch applied and not yet checkpointed."""
        self._checkpointed = time.monotonic()

    @property
    def name(self) -> str:
        return self.runner.name

    def _subscribe(self) -> Subscription:
        if self._subscription is None:
            self._subscription = self.feed.subscribe(
                self.name,
                self.checkpoints,
                domains=self.runner.projector.domains,
                batch_size=self.batch_size,
            )
        return self._subscription

    async def step(self, timeout: float) -> int:
        """Apply one batch; return how many feed events it covered (0 if none arrived
        within ``timeout``, having checkpointed what was applied)."""
        subscription = self._subscribe()
        batch = await subscription.next_batch(timeout)
        if batch is None:
            await self.checkpoint()
            return 0
        if batch.events:
            await self.runner.apply(batch.events)
        # what a checkpoint needs is the token: let the events go now, not a batch later
        self._applied[batch.partition] = replace(batch, events=())
        now = time.monotonic()
        # Caught up with something applied: checkpoint now. A batch of other domains'
        # events only (every write wakes every projector) moves the checkpoint with the
        # next that applies something, or within checkpoint_seconds: a replay of it after
        # a crash costs a read, and a checkpoint written for it would cost a write per
        # projector per request.
        caught_up = batch.read < self.batch_size and bool(batch.events)
        if caught_up or now - self._checkpointed >= self.checkpoint_seconds:
            await self.checkpoint()
        return batch.read

    async def checkpoint(self) -> None:
        """Move the checkpoint of every partition to the last batch applied from it."""
        subscription = self._subscription
        applied, self._applied = self._applied, {}
        self._checkpointed = time.monotonic()
        if subscription is None:
            return
        for batch in applied.values():
            if not await subscription.commit(batch):
                # Someone else moved the checkpoint (a reset, or another process applying
                # this projector): the view may have changed under the runner's cache.
                self.runner.invalidate()

    async def catch_up(self) -> int:
        """Apply until the feed has nothing more right now; return the events covered."""
        total = 0
        try:
            while (n := await self.step(0)) > 0:
                total += n
        except BaseException:
            await self.aclose()
            raise
        return total

    async def run(self) -> None:
        """Follow the feed until cancelled."""
        try:
            while True:
                await self.step(self.idle_timeout)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the subscription; what was applied and not checkpointed is applied again
        by the next one (harmlessly)."""
        subscription, self._subscription = self._subscription, None
        self._applied = {}
        if subscription is not None:
            await subscription.aclose()


async def projector_status(
    name: str, feed: Feed, checkpoints: CheckpointStore, parking: ParkingStore
) -> ProjectorStatus:
    """Where ``name`` stands: its checkpoint and lag per partition, and parked streams."""
    positions = await checkpoints.get(name)
    lags = await feed.lag(positions)
    partitions = tuple(
        PartitionStatus(p, positions.get(p), lags.get(p))
        for p in sorted(set(lags) | set(positions))
    )
    return ProjectorStatus(name, partitions, len(await parking.parked(name)))
