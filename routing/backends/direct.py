"""``spine_feed: direct``: the outbox relay, in process (DESIGN §4).

A cloud event store has no global position; it writes, in the same atomic write as
every append, a *pending marker* (:class:`spine.feed.Outbox`). :class:`DirectFeed`
delivers those appends to this process's subscriptions and clears a marker once they
have all taken it. It is for one process that runs the projectors (one-process
deployments, tests); several processes that each run projectors on one spine need
``spine_feed: kafka``. The lab uses ``spine_feed: sqlite``.

**One partition**, ``outbox``. A token is the relay's clock in microseconds, 20 digits
(a *catch-up* token adds ``c``: see Resume). Tokens handed out by a feed strictly
increase, and each sorts after the consumer's stored checkpoint, so a
:class:`~spine.feed.CheckpointStore` moving only forward holds across restarts.

**Notification.** The feed listens to the store (:meth:`Outbox.on_append`): an append
this process commits is handed, with its sealed events, to every subscription whose
domains take the stream, without reading it back. Each subscription has a bounded
queue; past its bound it stops queuing and later takes what it still owes from the
feed's table of markers in flight. That table is bounded too (``max_inflight``
markers; events held for at most ``max_held_events``, past which they are read again
with ``read_stream``); an append past it is left in the outbox for the sweeper.

**Clearing.** A marker waits for every *durable consumer* that takes its stream: every
consumer that subscribed here with a checkpoint store (not
:class:`~spine.feed.MemoryCheckpoints`: a tail observes and never clears), and every
consumer holding an ``outbox`` position in such a store, subscribed or not (so a
projector that subscribes a moment after another, or is backing off after a failure,
loses nothing). A consumer takes it when it commits a batch that covers it (a commit
covers every batch delivered before it). The marker is cleared (:meth:`Outbox.clear`)
once nobody waits for it; a marker of a stream no consumer takes is cleared at once.
A feed nobody has subscribed to with a checkpoint store clears nothing: it is not the
relay (a CLI process). A retired consumer keeps markers waiting until its checkpoint is
reset; a consumer that has no position and no subscription is forgotten.

**Resume.** A consumer that has a checkpoint gets, when it subscribes, every marker
still pending that it has not taken: those in flight here and those in the store
(another process's, or a crashed one's), read with ``read_stream``. A consumer with no
checkpoint (new, or reset) first catches up from the spine: the markers pending then
are taken as covered, and its domains are read through
:meth:`Outbox.scan_delivered` (a batch at a time, never the whole spine in memory);
its catch-up tokens end in ``c``, so a consumer stopped during its catch-up starts it
again. Its last catch-up batch has a plain token; then come the live deliveries, less
what the catch-up already gave for the same stream. Overlap is harmless either way:
the runner skips what it applied and repairs gaps from the spine.

**Sweeper.** Every ``sweep_interval`` seconds (1) the relay reads markers older than
``sweep_after`` seconds (2) that it does not hold (an append whose process died between
the commit and the delivery, or another process's append or import) and delivers them
like its own: a write from another process shows in the views within about three
seconds. So every committed event reaches its consumers at least once, even if the
process dies right after the commit. The sweeper also re-reads the checkpoint stores,
to learn consumers and forget reset ones.

**Order.** A stream's appends come in commit order as far as this process saw them;
across streams no order is promised. Redelivery happens (a resume, a sweep after a
failed clear, a refused commit).

**Heads and lag.** ``heads()`` is the relay's clock. ``lag(positions)`` counts the
events of pending markers written after the consumer's token (approximate: it knows
nothing of a marker's domain, nor of events no marker names); ``None`` for a consumer
with no position (how much of the spine lies before it is not known without reading it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from routing.config import Connections, Route
from spine.errors import EnginesError, IntegrityError, RoutingError
from spine.events import AppendResult, EventEnvelope
from spine.feed import (
    CheckpointStore,
    Delivered,
    FeedBatch,
    MemoryCheckpoints,
    Pending,
    RelaySource,
    Unreadable,
)
from spine.store import EventStore

__all__ = ["PARTITION", "DirectBackend", "DirectFeed", "DirectSubscription", "open_backend"]

log = logging.getLogger(__name__)

PARTITION: Final = "outbox"
#: How often the sweeper looks for markers it does not hold, and how old they must be
#: (seconds): another process's write (an import, a CLI, a crashed writer's) reaches
#: the projectors within about their sum. Each look is one query per outbox shard.
SWEEP_INTERVAL: Final = 1.0
SWEEP_AFTER: Final = 2.0
_CATCHUP: Final = "c"

_Key = tuple[str, str]


def _domain(stream_id: str) -> str:
    return stream_id.split("/", 1)[0]


def _takes(domains: frozenset[str] | None, stream_id: str) -> bool:
    return domains is None or _domain(stream_id) in domains


def _micros(token: str | None) -> int:
    """The clock reading of a token of this feed (0 for none)."""
    if token is None:
        return 0
    digits = token[:-1] if token.endswith(_CATCHUP) else token
    if len(digits) != 20 or not digits.isdigit():
        raise IntegrityError(f"checkpoint {token!r} is not a token of the direct feed")
    return int(digits)


def _is_catchup(token: str | None) -> bool:
    return token is not None and token.endswith(_CATCHUP)


@dataclass(eq=False)
class _Entry:
    """A marker in flight here: who still has to take it."""

    pending: Pending
    events: tuple[EventEnvelope, ...] | None
    """Held for delivery, or ``None``: read again when delivered."""
    waiting: set[str] = field(default_factory=set)
    """Durable consumers that take its stream and have not committed past it."""
    taken: set[str] = field(default_factory=set)
    clearing: bool = False

    @property
    def key(self) -> _Key:
        return (self.pending.stream_id, self.pending.marker)

    @property
    def size(self) -> int:
        return self.pending.last_seq - self.pending.first_seq + 1


@dataclass
class _Consumer:
    name: str
    domains: frozenset[str] | None
    """``None``: every domain (or not known yet: it has not subscribed here)."""
    subscriptions: set[DirectSubscription] = field(default_factory=set)

    def takes(self, stream_id: str) -> bool:
        return _takes(self.domains, stream_id)


class DirectFeed:
    """:class:`spine.feed.Feed` over an event store with an :class:`Outbox` (see the
    module's docstring)."""

    def __init__(
        self,
        store: EventStore,
        outbox: RelaySource,
        *,
        sweep_interval: float = SWEEP_INTERVAL,
        sweep_after: float = SWEEP_AFTER,
        max_inflight: int = 10_000,
        max_held_events: int = 50_000,
        queue_bound: int = 10_000,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.sweep_interval = sweep_interval
        self.sweep_after = sweep_after
        self.max_inflight = max_inflight
        self.max_held_events = max_held_events
        self.queue_bound = queue_bound
        self.inflight: dict[_Key, _Entry] = {}
        self._held = 0
        self._subscriptions: set[DirectSubscription] = set()
        self._consumers: dict[str, _Consumer] = {}
        self._stores: list[CheckpointStore] = []
        self._unread_stores: list[CheckpointStore] = []
        """Durable checkpoint stores whose consumers are not known yet: nothing is
        cleared for want of a consumer until they are read."""
        self._learning = asyncio.Lock()
        self._adopting = asyncio.Lock()
        self._adopt_next: asyncio.Future[None] | None = None
        self._watching: list[set[_Key]] = []
        """Per read of the outbox under way, the markers dropped from flight meanwhile."""
        self._clear_soon: list[_Entry] = []
        self._last = 0
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.swept = 0
        """Markers the sweeper found and delivered (for tests and status)."""
        self._unlisten = outbox.on_append(self._appended)

    # -- what the Feed protocol asks -------------------------------------------------------

    def subscribe(
        self,
        consumer: str,
        checkpoints: CheckpointStore,
        *,
        domains: frozenset[str] | None = None,
        batch_size: int = 1000,
    ) -> DirectSubscription:
        durable = not isinstance(checkpoints, MemoryCheckpoints)
        subscription = DirectSubscription(
            self, consumer, checkpoints, domains, max(batch_size, 1), durable=durable
        )
        self._subscriptions.add(subscription)
        if durable:
            known = self._consumers.get(consumer)
            if known is None:
                known = self._consumers[consumer] = _Consumer(consumer, domains)
            elif not known.subscriptions:
                known.domains = domains
            elif known.domains is not None:
                known.domains = None if domains is None else known.domains | domains
            known.subscriptions.add(subscription)
            self._narrow(known)
            if all(s is not checkpoints for s in self._stores):
                self._stores.append(checkpoints)
                self._unread_stores.append(checkpoints)
        self._start()
        return subscription

    async def heads(self) -> dict[str, str]:
        return {PARTITION: f"{max(self._last, time.time_ns() // 1000):020d}"}

    async def lag(self, positions: Mapping[str, str]) -> dict[str, int | None]:
        token = positions.get(PARTITION)
        if token is None:
            return {PARTITION: None}
        since = datetime.fromtimestamp(_micros(token) / 1e6, UTC)
        pending = await self.outbox.pending(limit=self.max_inflight)
        behind = sum(p.last_seq - p.first_seq + 1 for p in pending if p.written_at > since)
        return {PARTITION: behind}

    # -- tokens ----------------------------------------------------------------------------

    def token(self, after: str | None, *, catchup: bool = False) -> str:
        """A token after every one handed out here and after ``after``."""
        self._last = max(time.time_ns() // 1000, self._last + 1, _micros(after) + 1)
        return f"{self._last:020d}" + (_CATCHUP if catchup else "")

    # -- markers in flight -----------------------------------------------------------------

    @property
    def relaying(self) -> bool:
        """Whether this feed clears markers: someone subscribed with a checkpoint store."""
        return bool(self._stores)

    def _appended(self, pending: Pending, result: AppendResult) -> None:
        if self._closed or not (self._subscriptions or self._stores):
            return  # nobody to deliver to: the marker waits in the store for the relay
        self.track(pending, result.events)

    def track(
        self,
        pending: Pending,
        events: Sequence[EventEnvelope] | None,
        *,
        skip: DirectSubscription | None = None,
    ) -> _Entry | None:
        """Take a marker into flight and offer it to every subscription that takes its
        stream (but ``skip``); the entry already in flight if it is; ``None`` if the
        table is full (the marker stays in the store for the sweeper)."""
        key = (pending.stream_id, pending.marker)
        entry = self.inflight.get(key)
        if entry is not None:
            return entry
        if len(self.inflight) >= self.max_inflight:
            return None
        held: tuple[EventEnvelope, ...] | None = None
        size = pending.last_seq - pending.first_seq + 1
        if events is not None and self._held + size <= self.max_held_events:
            held = tuple(events)
            self._held += size
        entry = _Entry(pending, held)
        entry.waiting = {c.name for c in self._consumers.values() if c.takes(pending.stream_id)}
        self.inflight[key] = entry
        for subscription in self._subscriptions:
            if subscription is not skip and subscription.takes(pending.stream_id):
                subscription.offer(entry)
        if not entry.waiting:
            self._clear_later(entry)
        return entry

    async def adopt_pending(self) -> None:
        """Take into flight every marker pending in the store now (a subscription that
        starts or resumes). Subscriptions starting together share the reads: a call
        arriving while one runs waits for the next, which starts after it arrived, so
        it still sees every marker written before it (at start-up, every projector of
        the service would otherwise read every outbox shard)."""
        joining = self._adopt_next
        if joining is not None:
            try:
                await asyncio.shield(joining)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not joining.cancelled() or (task is not None and task.cancelling()):
                    raise  # this call was cancelled (perhaps with the run it joined)
                await self.adopt_pending()  # only the run it joined was: take another
            return
        mine = self._adopt_next = asyncio.get_running_loop().create_future()
        try:
            async with self._adopting:  # the run in progress, which began before this call
                if self._adopt_next is mine:
                    self._adopt_next = None
                await self.adopt(older_than=0.0)
        except BaseException as exc:
            if self._adopt_next is mine:  # cancelled while waiting: nobody may join it now
                self._adopt_next = None
            if isinstance(exc, asyncio.CancelledError):
                mine.cancel()
            else:
                mine.set_exception(exc)
                mine.exception()  # retrieved: whoever joined raises it, nobody else must
            raise
        mine.set_result(None)

    async def adopt(
        self, *, older_than: float, skip: DirectSubscription | None = None
    ) -> list[_Entry]:
        """Take into flight the markers pending in the store for ``older_than`` seconds
        (as many as the table has room for); return every one found, in flight now."""
        room = self.max_inflight - len(self.inflight)
        if room <= 0:
            return []
        # A marker cleared while this read runs may still be in what it returns (read
        # before the clear): it was delivered and taken, so it is not taken again.
        cleared: set[_Key] = set()
        self._watching.append(cleared)
        try:
            found = await self.outbox.pending(
                older_than=older_than, limit=min(self.max_inflight, len(self.inflight) + room)
            )
        finally:
            self._watching.remove(cleared)
        entries = []
        for pending in found:
            key = (pending.stream_id, pending.marker)
            if key in cleared:
                continue
            known = key in self.inflight
            entry = self.track(pending, None, skip=skip)
            if entry is not None:
                entries.append(entry)
                if not known:
                    self.swept += 1
        return entries

    def join(self, consumer: str, entry: _Entry) -> bool:
        """``consumer`` waits for ``entry`` unless it has taken it; whether it waits."""
        if entry.clearing or consumer in entry.taken:
            return False
        entry.waiting.add(consumer)
        if entry in self._clear_soon:
            self._clear_soon.remove(entry)
        return True

    async def taken(self, consumer: str, entries: Sequence[_Entry]) -> None:
        """``consumer`` committed past ``entries``: clear those nobody waits for."""
        done = []
        for entry in entries:
            if consumer in entry.waiting:
                entry.waiting.discard(consumer)
                entry.taken.add(consumer)
                if not entry.waiting and not entry.clearing:
                    done.append(entry)
        await self._clear(done)

    def _clear_later(self, entry: _Entry) -> None:
        if entry not in self._clear_soon:
            self._clear_soon.append(entry)
        self._wake.set()

    async def _clear(self, entries: Sequence[_Entry]) -> None:
        entries = [e for e in entries if not e.clearing and self.inflight.get(e.key) is e]
        if not entries or not self.relaying:
            return
        for entry in entries:
            entry.clearing = True
        try:
            await self.outbox.clear([e.pending for e in entries])
        except EnginesError as exc:  # left in the store: the sweeper delivers them again
            log.warning("the direct feed could not clear %d markers: %s", len(entries), exc)
        finally:
            for entry in entries:
                self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if self.inflight.get(entry.key) is entry:
            del self.inflight[entry.key]
            for cleared in self._watching:
                cleared.add(entry.key)
            if entry.events is not None:
                self._held -= entry.size

    async def read(self, entry: _Entry, from_seq: int) -> list[Delivered]:
        """The entry's events from ``from_seq``: held, or read from the store (one by one
        where one cannot be decoded, which comes as :class:`Unreadable`)."""
        first, last = max(entry.pending.first_seq, from_seq), entry.pending.last_seq
        if entry.events is not None:
            return [e for e in entry.events if e.seq >= first]
        sid = entry.pending.stream_id
        try:
            return list(await self.store.read_stream(sid, first, last))
        except IntegrityError:
            out: list[Delivered] = []
            for seq in range(first, last + 1):
                try:
                    out += await self.store.read_stream(sid, seq, seq)
                except IntegrityError as exc:
                    out.append(Unreadable(sid, seq, str(exc)))
            return out

    # -- consumers -------------------------------------------------------------------------

    async def learn(self) -> None:
        """Read the checkpoint stores not read yet: every consumer with a position waits
        for what is in flight (its domains unknown until it subscribes)."""
        # One learner at a time: another subscription's learner must not find the list
        # empty while a store is still being read, and clear what its consumers wait for.
        async with self._learning:
            while self._unread_stores:
                store = self._unread_stores[0]
                positions = await store.all()
                if store in self._unread_stores:  # not read meanwhile by a refresh
                    self._unread_stores.remove(store)
                self._know({c for c, p in positions.items() if PARTITION in p})
            self._clear_soon = []
            await self._clear([e for e in self.inflight.values() if not e.waiting])

    def _narrow(self, consumer: _Consumer) -> None:
        """``consumer``'s domains are known now: it no longer waits for other streams."""
        if consumer.domains is None:
            return
        for entry in self.inflight.values():
            if consumer.name in entry.waiting and not consumer.takes(entry.pending.stream_id):
                entry.waiting.discard(consumer.name)
                if not entry.waiting and not entry.clearing:
                    self._clear_later(entry)

    def _know(self, names: set[str]) -> None:
        for name in names - self._consumers.keys():
            self._consumers[name] = _Consumer(name, None)
            for entry in self.inflight.values():
                self.join(name, entry)

    async def _refresh(self) -> None:
        """Re-read every checkpoint store: learn consumers, forget those with neither a
        position nor a subscription (reset, or never committed)."""
        positioned: set[str] = set()
        for store in self._stores:
            positions = await store.all()
            positioned |= {c for c, p in positions.items() if PARTITION in p}
        self._unread_stores.clear()
        self._know(positioned)
        gone = [
            c.name
            for c in self._consumers.values()
            if not c.subscriptions and c.name not in positioned
        ]
        for name in gone:
            del self._consumers[name]
            for entry in self.inflight.values():
                entry.waiting.discard(name)
                if not entry.waiting and not entry.clearing:
                    self._clear_later(entry)

    def closed(self, subscription: DirectSubscription) -> None:
        self._subscriptions.discard(subscription)
        consumer = self._consumers.get(subscription.consumer)
        if consumer is not None:
            consumer.subscriptions.discard(subscription)

    # -- the worker: at-once clears and the sweeper ----------------------------------------

    def _start(self) -> None:
        if self._worker is None and not self._closed:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_sweep - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if not self._unread_stores:
                    soon, self._clear_soon = self._clear_soon, []
                    await self._clear([e for e in soon if not e.waiting])
                if time.monotonic() >= next_sweep:
                    await self.sweep()
                    next_sweep = time.monotonic() + self.sweep_interval
            except EnginesError as exc:
                log.warning("the direct feed's sweeper: %s", exc)
                next_sweep = time.monotonic() + self.sweep_interval
            except Exception:
                log.exception("the direct feed's sweeper failed")
                next_sweep = time.monotonic() + self.sweep_interval

    async def sweep(self) -> int:
        """One round of the sweeper; return how many markers it took into flight."""
        if self._stores:
            await self._refresh()
        before = self.swept
        await self.adopt(older_than=self.sweep_after)
        for subscription in self._subscriptions:
            subscription.refill()
        return self.swept - before

    async def aclose(self) -> None:
        self._closed = True
        self._unlisten()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for subscription in list(self._subscriptions):
            await subscription.aclose()


_Batch = tuple[str, list[_Entry]]


class DirectSubscription:
    """One consumer's subscription to a :class:`DirectFeed`."""

    def __init__(
        self,
        feed: DirectFeed,
        consumer: str,
        checkpoints: CheckpointStore,
        domains: frozenset[str] | None,
        batch_size: int,
        *,
        durable: bool,
    ) -> None:
        self.feed = feed
        self.consumer = consumer
        self.checkpoints = checkpoints
        self.domains = domains
        self.batch_size = batch_size
        self.durable = durable
        self._queue: deque[tuple[_Entry, int]] = deque()
        """Markers to deliver, each from a seq (less what a catch-up already gave)."""
        self._queued: set[_Key] = set()
        self._overflow = False
        self._head = 0
        """Events of the queue's first entry already delivered."""
        self._delivered: deque[_Batch] = deque()
        """Batches delivered and not committed: their tokens and the entries they end."""
        self._stored: str | None = None
        self._given: str | None = None
        self._loaded = False
        self._closed = False
        self._wake = asyncio.Event()
        self._scan: AsyncIterator[Delivered] | None = None
        self._ahead: Delivered | None = None
        self._covered: list[_Entry] = []
        self._scanned: dict[str, int] = {}
        """During a catch-up: the last seq it gave per stream (bounded), so the live
        deliveries queued meanwhile skip what it gave."""

    def takes(self, stream_id: str) -> bool:
        return _takes(self.domains, stream_id)

    # -- offers from the feed --------------------------------------------------------------

    def offer(self, entry: _Entry) -> None:
        if self._closed or entry.key in self._queued:
            return
        if len(self._queue) >= self.feed.queue_bound:
            self._overflow = True  # taken from the feed's table once the queue drains
            return
        self._queue.append((entry, entry.pending.first_seq))
        self._queued.add(entry.key)
        self._wake.set()

    def refill(self) -> None:
        """After an overflow: queue what this consumer still waits for in the feed's
        table (an observer, which waits for nothing, misses what was cleared)."""
        if not self._overflow or len(self._queue) >= self.feed.queue_bound:
            return
        self._overflow = False
        for entry in list(self.feed.inflight.values()):
            if self.consumer in entry.waiting and self.takes(entry.pending.stream_id):
                self.offer(entry)

    # -- following the checkpoint ----------------------------------------------------------

    async def _load(self) -> None:
        """Take the stored checkpoint; when it is not where this subscription left it
        (first load, a reset, another subscription of this consumer), follow it."""
        if self.durable:
            await self.feed.learn()
        stored = (await self.checkpoints.get(self.consumer)).get(PARTITION)
        _micros(stored)  # refuses a token of another feed
        if self._loaded and stored == self._stored:
            return
        self._loaded = True
        self._stored = self._given = stored
        for _, entries in self._delivered:  # not taken: delivered again
            for entry in entries:
                self._queued.discard(entry.key)
        self._delivered.clear()
        await self._stop_scan()
        if stored is None or _is_catchup(stored):
            await self._catch_up()
        else:
            await self._resume()

    async def _resume(self) -> None:
        """Every marker still pending that this consumer has not taken."""
        await self.feed.adopt_pending()
        for entry in list(self.feed.inflight.values()):
            if not self.takes(entry.pending.stream_id):
                continue
            if not self.durable or self.feed.join(self.consumer, entry):
                self.offer(entry)

    async def _catch_up(self) -> None:
        """From the spine: what is pending now is covered by the scan that follows."""
        await self.feed.adopt_pending()  # offered to this one too: dropped just below
        covered = []
        for entry in list(self.feed.inflight.values()):
            if self.takes(entry.pending.stream_id) and (
                not self.durable or self.feed.join(self.consumer, entry)
            ):
                covered.append(entry)
        keys = {e.key for e in covered}
        self._queue = deque(q for q in self._queue if q[0].key not in keys)
        self._queued -= keys
        self._head = 0
        self._covered = covered
        self._scanned = {}
        self._scan = self._read_spine()
        self._ahead = None

    async def _read_spine(self) -> AsyncIterator[Delivered]:
        domains: list[str | None] = [None]
        if self.domains is not None:
            domains = [*sorted(self.domains)]
        for domain in domains:
            async for event in self.feed.outbox.scan_delivered(
                domain=domain, batch_size=self.batch_size
            ):
                yield event

    async def _stop_scan(self) -> None:
        scan, self._scan = self._scan, None
        self._ahead = None
        if scan is not None:
            aclose = getattr(scan, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- the Subscription protocol ---------------------------------------------------------

    async def next_batch(self, timeout: float) -> FeedBatch | None:
        if not self._loaded:
            await self._load()
        batch = await self._next()
        if batch is None and timeout > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if self._given == self._stored:
                await self._load()  # a reset or a move while idle is followed from here
            batch = await self._next()
        return batch

    async def _next(self) -> FeedBatch | None:
        if self._scan is not None:
            batch = await self._next_scanned()
            if batch is not None:
                return batch
        if not self._queue:
            self.refill()
        return await self._next_live()

    async def _next_scanned(self) -> FeedBatch | None:
        assert self._scan is not None
        events: list[Delivered] = []
        if self._ahead is not None:
            events.append(self._ahead)
            self._ahead = None
        final = False
        while True:
            try:
                event = await anext(self._scan)
            except StopAsyncIteration:
                final = True
                break
            if len(events) >= self.batch_size:
                self._ahead = event
                break
            events.append(event)
        for event in events:
            if len(self._scanned) < self.feed.max_inflight or event.stream_id in self._scanned:
                self._scanned[event.stream_id] = event.seq
        if final:
            self._scan = None
            covered, self._covered = self._covered, []
            covered += self._trim()
            if not events:  # nothing of its domains in the spine: nothing to apply
                await self._take(covered)
                return None
            token = self.feed.token(self._given)
            self._delivered.append((token, covered))
        else:
            token = self.feed.token(self._given, catchup=True)
            self._delivered.append((token, []))
        self._given = token
        return FeedBatch(PARTITION, events, token, len(events))

    def _trim(self) -> list[_Entry]:
        """The catch-up is over: live deliveries queued meanwhile start after what it
        gave; return the markers it gave in full (taken with its last batch)."""
        scanned, self._scanned = self._scanned, {}
        kept: deque[tuple[_Entry, int]] = deque()
        given_all = []
        for entry, start in self._queue:
            given = scanned.get(entry.pending.stream_id, 0)
            if given >= entry.pending.last_seq:
                given_all.append(entry)
            else:
                kept.append((entry, max(start, given + 1)))
        self._queue = kept
        return given_all

    async def _next_live(self) -> FeedBatch | None:
        events: list[Delivered] = []
        ended: list[_Entry] = []
        while self._queue and len(events) < self.batch_size:
            entry, start = self._queue[0]
            got = await self.feed.read(entry, start)
            room = self.batch_size - len(events)
            rest = got[self._head :]
            events += rest[:room]
            if len(rest) <= room:
                self._queue.popleft()
                self._head = 0
                ended.append(entry)
            else:
                self._head += room
        if not events and not ended:
            return None
        if not events:  # markers whose events were all given by a catch-up
            await self._take(ended)
            return None
        token = self.feed.token(self._given)
        self._delivered.append((token, ended))
        self._given = token
        return FeedBatch(PARTITION, events, token, len(events))

    async def commit(self, batch: FeedBatch) -> bool:
        if batch.token == self._stored:
            return True
        if await self.checkpoints.put(
            self.consumer, batch.partition, batch.token, after=self._stored
        ):
            self._stored = batch.token
            done: list[_Entry] = []
            while self._delivered and self._delivered[0][0] <= batch.token:
                done += self._delivered.popleft()[1]
            await self._take(done)
            return True
        await self._load()
        return False

    async def _take(self, entries: Sequence[_Entry]) -> None:
        for entry in entries:
            self._queued.discard(entry.key)
        if self.durable:
            await self.feed.taken(self.consumer, entries)

    async def aclose(self) -> None:
        """Close; what this consumer has not committed waits for its next subscription."""
        if self._closed:
            return
        self._closed = True
        await self._stop_scan()
        self._queue.clear()
        self.feed.closed(self)


class DirectBackend:
    """Serves ``spine_feed: direct``: one relay per event store."""

    def __init__(
        self, *, sweep_interval: float = SWEEP_INTERVAL, sweep_after: float = SWEEP_AFTER
    ) -> None:
        self.sweep_interval = sweep_interval
        self.sweep_after = sweep_after
        self._feeds: list[DirectFeed] = []

    async def feed(
        self, route: Route, spine: EventStore, *, checkpoints: CheckpointStore | None = None
    ) -> DirectFeed:
        del route, checkpoints  # the outbox is its own record of what is delivered
        inner: EventStore = getattr(spine, "inner", spine)  # an upcasting wrapper: its store
        if not isinstance(inner, RelaySource):
            raise RoutingError(
                "spine_feed: direct needs a cloud event store whose outbox a relay can "
                "follow (event_spine on dynamodb, cosmos or firestore); "
                "the lab uses spine_feed: sqlite"
            )
        for feed in self._feeds:
            if feed.store is inner:
                return feed  # one relay per store: two would clear each other's markers
        feed = DirectFeed(
            inner, inner, sweep_interval=self.sweep_interval, sweep_after=self.sweep_after
        )
        self._feeds.append(feed)
        return feed

    async def aclose(self) -> None:
        feeds, self._feeds = self._feeds, []
        for feed in feeds:
            await feed.aclose()


async def open_backend(
    connections: Connections,
    data_dir: Path,
    *,
    create: bool = True,
    sweep_interval: float = SWEEP_INTERVAL,
    sweep_after: float = SWEEP_AFTER,
) -> DirectBackend:
    del connections, data_dir, create
    return DirectBackend(sweep_interval=sweep_interval, sweep_after=sweep_after)
