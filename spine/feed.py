"""Delivery of committed events to consumers, by partition (DESIGN §4).

A :class:`Feed` hands a consumer (a projector, a tail) batches of committed events. Each
batch comes from one *partition* and carries an opaque *token*: the consumer's position
in that partition after the batch. What a partition and a token are is the feed's
business (SQLite: one partition and its global position; an outbox relay: its cursor;
Kafka: topic-partitions and offsets); nothing above a feed may assume a global position.

Guarantees, for every feed:

* **Committed only, at least once.** A batch holds committed events. Every event
  committed to a partition after a consumer's position is delivered to it at least
  once; redelivery is possible (after a crash, a refused commit, a reset), so
  consumers apply idempotently.
* **Order.** Within a partition, events come in commit order, so one stream's events
  come in seq order (a stream lives in one partition).
* **Tokens sort.** Within one partition, a later token sorts after an earlier one
  (plain string comparison), so a :class:`CheckpointStore` can refuse to move
  backwards without knowing what a token means.
* **A consumer's position is its checkpoint.** A subscription starts each partition
  at the consumer's checkpoint and moves it only when told (:meth:`Subscription.commit`),
  which the consumer does after the writes the batches caused. A checkpoint moved by
  someone else (a reset, another process) is noticed and followed.
* A stored event that cannot be decoded is delivered as :class:`Unreadable` (its stream
  and seq, and why), never as an error that stops the feed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from spine.events import AppendResult, EventEnvelope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unreadable:
    """A stored event that could not be decoded: where it is, and why."""

    stream_id: str
    seq: int
    error: str


Delivered = EventEnvelope | Unreadable


@dataclass(frozen=True)
class FeedBatch:
    partition: str
    events: Sequence[Delivered]
    """In partition order; only the domains the subscription asked for."""
    token: str
    """The consumer's position in ``partition`` once this batch is applied."""
    read: int
    """How many events the feed passed over for this batch, asked-for or not (>= 1)."""


@dataclass(frozen=True)
class Pending:
    """An append not yet delivered: its stream, its seqs, and the store's marker for it
    (opaque: handed back to :meth:`Outbox.clear`)."""

    stream_id: str
    first_seq: int
    last_seq: int
    marker: str
    written_at: datetime


AppendListener = Callable[[Pending, AppendResult], None]
"""Told of an append this process committed: its marker and its sealed events."""


@runtime_checkable
class Outbox(Protocol):
    """What an event store without a global position offers a relay (DESIGN §4): every
    append writes, in the same atomic write, a *pending* marker; the relay delivers the
    append's events and then clears the marker; a sweeper delivers markers older than a
    bound again (an append whose process died before delivery). So every committed
    event reaches its consumers at least once."""

    async def pending(self, *, older_than: float = 0.0, limit: int = 1000) -> list[Pending]:
        """Markers not cleared yet, written at least ``older_than`` seconds ago, oldest
        first as far as the store can tell (no order is promised across streams)."""
        ...

    async def clear(self, pending: Sequence[Pending]) -> None:
        """Remove these markers (delivered); one already removed is no error."""
        ...


@runtime_checkable
class RelaySource(Outbox, Protocol):
    """An :class:`Outbox` an in-process relay (``spine_feed: direct``) can follow: it
    hears this process's appends at once, and scans without stopping at a bad event."""

    def on_append(self, listener: AppendListener) -> Callable[[], None]:
        """Call ``listener`` after every append this process commits through this store
        (not a deduplicated one), with its marker and sealed events, so an in-process
        relay delivers them at once without reading them back. A listener must not
        block or raise (what it raises is logged, never the appender's error). Returns
        what removes the listener."""
        ...

    def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]:
        """As :meth:`spine.store.EventStore.scan` of ``domain``, for a relay's catch-up: an
        event that cannot be decoded comes as :class:`Unreadable` instead of ending the
        scan, so one bad event never stops a consumer's catch-up."""
        ...


@runtime_checkable
class PositionedStore(Protocol):
    """An event store that delivers its own commits by a global position (the lab's
    SQLite): a relay to another transport follows :meth:`own_feed` with a checkpoint,
    where an outbox store's relay follows its markers."""

    def own_feed(self) -> Feed:
        """The store's feed by position (the one ``spine_feed`` on this backend serves)."""
        ...


class AppendListeners:
    """The listeners of a :class:`RelaySource`'s appends, for an event store to keep:
    :meth:`add` is its ``on_append``; :meth:`tell` calls each after a committed append,
    logging (never raising) what a listener raises, since the append stands."""

    def __init__(self, route: str) -> None:
        self.route = route
        self._listeners: list[AppendListener] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: AppendListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def tell(self, pending: Pending, result: AppendResult) -> None:
        for listener in list(self._listeners):
            try:
                listener(pending, result)
            except Exception:  # the append is committed: a listener's fault is not its
                log.exception("an append listener of %s failed", self.route)


@runtime_checkable
class CheckpointStore(Protocol):
    """Durable consumer positions: one opaque token per consumer and partition."""

    async def get(self, consumer: str) -> dict[str, str]:
        """The consumer's token per partition (partitions never committed are absent)."""
        ...

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        """Move the consumer's position in ``partition`` from ``after`` (``None``: no
        position yet) to ``token``. Writes nothing and returns False if the stored
        position is not ``after`` (it was reset or moved by someone else) or if
        ``token`` does not sort after it."""
        ...

    async def reset(self, consumer: str) -> None:
        """Forget every position of ``consumer``: its feeds start from the beginning."""
        ...

    async def all(self) -> dict[str, dict[str, str]]:
        """Every consumer's positions."""
        ...


@runtime_checkable
class Subscription(Protocol):
    async def next_batch(self, timeout: float) -> FeedBatch | None:
        """The next batch after the consumer's position in some partition; ``None`` if
        nothing arrives within ``timeout`` seconds (0: only what is there now)."""
        ...

    async def commit(self, batch: FeedBatch) -> bool:
        """Move the consumer's checkpoint to ``batch.token``, which covers every batch
        delivered before it from the same partition (a consumer may commit only every
        few batches). False if the checkpoint had been moved by someone else since this
        subscription read or last moved it: it then follows the stored one."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Feed(Protocol):
    def subscribe(
        self,
        consumer: str,
        checkpoints: CheckpointStore,
        *,
        domains: frozenset[str] | None = None,
        batch_size: int = 1000,
    ) -> Subscription:
        """Deliver to ``consumer`` from its checkpoints: the events of ``domains`` (the
        first segment of their stream ids; ``None``: every domain). Batches hold at most
        ``batch_size`` events."""
        ...

    async def heads(self) -> dict[str, str]:
        """Every partition's latest token (the position after its last committed event)."""
        ...

    async def lag(self, positions: Mapping[str, str]) -> dict[str, int | None]:
        """Per partition: how many committed events lie after ``positions`` (a partition
        missing there: after its start); ``None`` where the feed cannot say."""
        ...


@dataclass
class MemoryCheckpoints:
    """Positions held in this process only: for a tail that need not survive a restart.
    Never a stand-in for the routed checkpoint store."""

    positions: dict[str, dict[str, str]] = field(default_factory=dict)

    async def get(self, consumer: str) -> dict[str, str]:
        return dict(self.positions.get(consumer, {}))

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        mine = self.positions.setdefault(consumer, {})
        stored = mine.get(partition)
        if stored != after or (stored is not None and token <= stored):
            return False
        mine[partition] = token
        return True

    async def reset(self, consumer: str) -> None:
        self.positions.pop(consumer, None)

    async def all(self) -> dict[str, dict[str, str]]:
        return {c: dict(p) for c, p in self.positions.items()}
