"""``spine_feed: kafka``: the spine's events on a topic, projectors as consumer groups.

The route's physical name is the topic. Every process that opens the feed runs a
:class:`~routing.backends.kafka.relay.Relay`, so every committed event reaches the
topic at least once. A consumer (a projector) subscribes as the consumer group
``<group_prefix><topic>.<consumer>``: the members of one group, in any processes,
split the topic's partitions, and a stream's events, all on one partition, are applied
by one member at a time.

**Positions.** A partition is ``<topic>/<n>``; a token is the offset of the next record
to read, 20 digits. Positions are kept in the routed checkpoint store, not in Kafka's
group offsets: the store's conditional put (move from what this member read, forward
only) fences a member whose partition was taken from it in a rebalance, and a reset
there is followed like any feed's. Nothing is committed before the view writes it
covers (the feed loop commits after ``apply``); auto-commit is off.

**Rebalances.** When partitions are revoked, the batches held for them are dropped and
this member forgets its positions there: a batch being applied is finished (the
runner's writes are conditional per stream, so another member applying the same events
changes nothing twice) and its commit is refused, which the feed loop treats as
"someone else moved it". Newly assigned partitions start from the stored positions.

**Catch-up.** A topic keeps what its retention allows, and a spine may be older than
its topic. A consumer with no position on the topic (new, or reset) first reads the
spine itself (``scan``), then the topic from the ends it had when the scan began (after
this process's relay has published what it appended): every event committed before the
scan is in it, every later one is on the topic after those ends. Catch-up batches come
from partition ``<topic>/spine`` (never stored); committing the last one stores the
ends for every partition, and until then no topic batch is delivered. A consumer
stopped during its catch-up starts it again (the runner skips what it applied).

**Now.** ``next_batch(0)`` means what is there now: it waits for this process's relay,
for the group to assign partitions, and for the fetches to reach the partitions' ends.

**Lag** per partition is the partition's end less the consumer's position; ``None``
where the consumer has none (how much of the spine lies before it is not known without
reading it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from routing.backends.kafka.client import (
    KafkaClients,
    partitions_of,
    stop_quietly,
    true_ends,
    unavailable,
)
from routing.backends.kafka.relay import Relay
from routing.backends.kafka.wire import NotSpineEvent, delivered_of, domain_of_key
from spine.errors import IntegrityError
from spine.feed import (
    CheckpointStore,
    Delivered,
    FeedBatch,
    MemoryCheckpoints,
    PositionedStore,
    RelaySource,
)
from spine.store import EventStore

log = logging.getLogger(__name__)

SPINE: Final = "spine"
"""The partition name (after ``<topic>/``) of a catch-up's batches."""
#: How long ``next_batch(0)`` waits for the group to assign partitions.
JOIN_WAIT: Final = 15.0
#: How often an idle subscription looks at its stored positions (a reset).
LOOK_EVERY: Final = 1.0
#: The most streams a catch-up remembers, to pass over what the topic repeats of it.
MAX_SCANNED: Final = 1_000_000


def token(offset: int) -> str:
    return f"{offset:020d}"


def offset_of(value: str) -> int:
    if len(value) != 20 or not value.isdigit():
        raise IntegrityError(f"checkpoint {value!r} is not a token of the kafka feed")
    return int(value)


class KafkaFeed:
    """:class:`spine.feed.Feed` over a topic (see the module's docstring)."""

    def __init__(
        self,
        clients: KafkaClients,
        topic: str,
        store: EventStore,
        relay: Relay,
        *,
        route: str = "spine_feed",
        secret: bytes | None = None,
    ) -> None:
        self.clients = clients
        self.secret = secret
        """The record key: records without its signature are passed over."""
        self.topic = topic
        self.store = store
        self.relay = relay
        self.route = route
        self._probe: AIOKafkaConsumer | None = None
        self._probing = asyncio.Lock()
        self._subscriptions: set[KafkaSubscription] = set()

    def partition(self, number: int) -> str:
        return f"{self.topic}/{number}"

    def tp_of(self, partition: str) -> TopicPartition | None:
        topic, _, number = partition.rpartition("/")
        if topic != self.topic or not number.isdigit():
            return None
        return TopicPartition(topic, int(number))

    def group(self, consumer: str) -> str:
        return f"{self.clients.conn.group_prefix}{self.topic}.{consumer}"

    def subscribe(
        self,
        consumer: str,
        checkpoints: CheckpointStore,
        *,
        domains: frozenset[str] | None = None,
        batch_size: int = 1000,
    ) -> KafkaSubscription:
        subscription = KafkaSubscription(self, consumer, checkpoints, domains, max(batch_size, 1))
        self._subscriptions.add(subscription)
        return subscription

    async def ends(self, partitions: list[TopicPartition] | None = None) -> dict[int, int]:
        """Each partition's end offset (of ``partitions``, or all), by partition number."""
        async with self._probing, unavailable(self.route, "read the topic's ends"):
            if self._probe is None:
                probe = self.clients.consumer()
                await probe.start()
                self._probe = probe
            parts = partitions or await partitions_of(self._probe, self.topic, self.route)
            ends = await true_ends(self._probe, parts, self.clients.conn.timeout_seconds)
            return {tp.partition: end for tp, end in ends.items()}

    async def heads(self) -> dict[str, str]:
        return {self.partition(n): token(end) for n, end in (await self.ends()).items()}

    async def lag(self, positions: Mapping[str, str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for n, end in (await self.ends()).items():
            stored = positions.get(self.partition(n))
            out[self.partition(n)] = None if stored is None else max(end - offset_of(stored), 0)
        return out

    def closed(self, subscription: KafkaSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def aclose(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        await self.relay.aclose()
        probe, self._probe = self._probe, None
        if probe is not None:
            await stop_quietly(probe)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self.subscription = subscription

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.subscription.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.subscription.assigned(set(assigned))


class KafkaSubscription:
    def __init__(
        self,
        feed: KafkaFeed,
        consumer: str,
        checkpoints: CheckpointStore,
        domains: frozenset[str] | None,
        batch_size: int,
    ) -> None:
        self.feed = feed
        self.consumer = consumer
        self.checkpoints = checkpoints
        self.domains = domains
        self.batch_size = batch_size
        self.catchup_partition = f"{feed.topic}/{SPINE}"
        self._mode: str | None = None
        """``None`` (not started), ``catchup`` or ``live``."""
        self._held: dict[str, str | None] = {}
        """Per partition this member holds: the stored token as it last read or wrote it."""
        self._buffer: deque[FeedBatch] = deque()
        self._kafka: AIOKafkaConsumer | None = None
        self._assigned = asyncio.Event()
        self._reset = False
        """The topic lost what lies after a stored position: catch up from the spine."""
        self._untaken: set[TopicPartition] = set()
        """Assigned partitions whose positions could not be read yet (paused)."""
        self._looked = 0.0
        # catch-up
        self._scan: AsyncIterator[Delivered] | None = None
        self._ends: dict[int, int] = {}
        self._ahead: FeedBatch | None = None
        self._last_catchup: str | None = None
        self._count = 0
        self._scanned: dict[str, int] = {}
        """Per stream, the last seq the catch-up delivered: the topic's records of it up
        to ``_overlap`` are passed over (the scan gave them already)."""
        self._overlap: dict[int, int] = {}

    def _takes(self, key: bytes | None) -> bool:
        return self.domains is None or domain_of_key(key) in self.domains

    # -- starting ----------------------------------------------------------------------

    async def _start(self) -> None:
        stored = await self.checkpoints.get(self.consumer)
        mine = {p: t for p, t in stored.items() if self.feed.tp_of(p) is not None}
        if mine:
            await self._go_live()
        else:
            await self._catch_up()

    async def _catch_up(self) -> None:
        await self._stop_kafka()
        await self.feed.relay.flush(everything=True)
        self._mode = "catchup"
        self._scanned = {}
        self._ends = await self.feed.ends()
        self._scan = self._read_spine()
        self._last_catchup = None
        self._ahead = await self._scan_batch()
        if self._ahead is None:
            await self._finish_catch_up()

    async def _read_spine(self) -> AsyncIterator[Delivered]:
        domains: list[str | None] = [None] if self.domains is None else [*sorted(self.domains)]
        store = getattr(self.feed.store, "inner", self.feed.store)
        if isinstance(store, RelaySource):
            for domain in domains:
                async for event in store.scan_delivered(domain=domain, batch_size=500):
                    yield event
        elif isinstance(store, PositionedStore):
            own = store.own_feed().subscribe(
                f"catch-up:{self.consumer}", MemoryCheckpoints(), domains=self.domains
            )
            try:
                while (batch := await own.next_batch(0)) is not None:
                    for event in batch.events:
                        yield event
            finally:
                await own.aclose()
        else:
            for domain in domains:
                async for event in store.scan(domain=domain):
                    yield event

    async def _scan_batch(self) -> FeedBatch | None:
        """The next batch of the catch-up's scan, or ``None`` at its end."""
        assert self._scan is not None
        events: list[Delivered] = []
        async for event in self._scan:
            events.append(event)
            if len(events) >= self.batch_size:
                break
        if not events:
            return None
        if len(self._scanned) < MAX_SCANNED:
            for event in events:
                self._scanned[event.stream_id] = event.seq
        self._count += 1
        return FeedBatch(self.catchup_partition, events, f"c{self._count:019d}", len(events))

    async def _finish_catch_up(self) -> None:
        """Store the ends the catch-up began at, for every partition; then go live."""
        await self._stop_scan()
        # What was committed while the scan ran may be on the topic after the ends it
        # began at, up to the ends once the relay has published it: passed over there
        # where the scan gave it.
        self._overlap = {}
        if self._scanned:
            await self.feed.relay.flush(everything=True)
            self._overlap = await self.feed.ends()
        for n, end in self._ends.items():
            await self.checkpoints.put(
                self.consumer, self.feed.partition(n), token(end), after=None
            )
        await self._go_live()

    async def _stop_scan(self) -> None:
        scan, self._scan = self._scan, None
        self._ahead = None
        self._last_catchup = None
        if scan is not None:
            aclose = getattr(scan, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _go_live(self) -> None:
        self._mode = "live"
        if self._kafka is not None:
            return
        kafka = self.feed.clients.consumer(
            group_id=self.feed.group(self.consumer),
            max_poll_records=self.batch_size,
        )
        kafka.subscribe([self.feed.topic], listener=_Listener(self))
        self._kafka = kafka  # before it starts: the first assignment may come meanwhile
        try:
            async with unavailable(self.feed.route, "join the consumer group"):
                await kafka.start()
        except BaseException:
            await self._stop_kafka()
            raise

    async def _stop_kafka(self) -> None:
        kafka, self._kafka = self._kafka, None
        self._held = {}
        self._untaken = set()
        self._buffer.clear()
        self._assigned.clear()
        if kafka is not None:
            await stop_quietly(kafka)

    # -- rebalances ----------------------------------------------------------------------

    def revoked(self, revoked: set[TopicPartition]) -> None:
        self._untaken -= revoked
        names = {self.feed.partition(tp.partition) for tp in revoked}
        self._buffer = deque(b for b in self._buffer if b.partition not in names)
        for name in names:
            self._held.pop(name, None)
        self._assigned.clear()

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        kafka = self._kafka
        if kafka is None:
            return
        try:
            await self._take(kafka, assigned)
        except Exception as exc:  # a store down: fetch nothing there until it answers
            log.warning("%s: partitions assigned, positions not read yet: %s", self.consumer, exc)
            kafka.pause(*assigned)
            self._untaken |= assigned
        self._assigned.set()

    async def _take(self, kafka: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Start the assigned partitions at the stored positions."""
        stored = await self.checkpoints.get(self.consumer)
        lost = await self._lost(assigned, stored)
        self._lose(lost)
        for tp in assigned:
            name = self.feed.partition(tp.partition)
            held = self._held[name] = stored.get(name)
            if held is None:
                await kafka.seek_to_beginning(tp)
            else:
                kafka.seek(tp, offset_of(held))

    async def _lost(self, assigned: set[TopicPartition], stored: Mapping[str, str]) -> list[str]:
        """The assigned partitions whose stored position lies outside what the topic holds
        now, each described."""
        kafka = self._kafka
        held: dict[TopicPartition, str] = {}
        for tp in assigned:
            token_ = stored.get(self.feed.partition(tp.partition))
            if token_ is not None:
                held[tp] = token_
        if not held or kafka is None:
            return []
        ends = await self.feed.ends(list(held))
        starts = await kafka.beginning_offsets(list(held))
        lost = []
        for tp, t in held.items():
            at, end, start = offset_of(t), ends[tp.partition], starts[tp]
            if at > end or at < start:
                lost.append(f"{self.feed.partition(tp.partition)} at {at}, holds {start}..{end}")
        return lost

    # -- the Subscription protocol ---------------------------------------------------------

    async def next_batch(self, timeout: float) -> FeedBatch | None:
        if self._mode is None:
            await self._start()
        if self._untaken and self._kafka is not None:  # assigned while the store was down
            untaken = {tp for tp in self._untaken if tp in self._kafka.assignment()}
            await self._take(self._kafka, untaken)  # raises while it is still down
            self._untaken = set()
            self._kafka.resume(*untaken)
        if self._mode == "live" and not self._buffer:
            if timeout <= 0:
                await self._settle()
            else:
                # getmany may answer empty before its time (a seek, a rebalance): wait on
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while not (self._buffer or self._reset) and (left := deadline - loop.time()) > 0:
                    await self._fetch(left)
                if not (self._buffer or self._reset):
                    await self._look(force=True)  # idle: a reset is followed from here
        batch = await self._next(timeout)
        if batch is None and timeout <= 0 and self._mode == "live":
            await self._next_now()
            batch = await self._next(timeout)
        return batch

    async def _next(self, timeout: float) -> FeedBatch | None:
        """What is ready: a catch-up's batch (one begun here if the topic lost what
        follows a position), or one fetched."""
        if self._reset:
            self._reset = False
            await self.checkpoints.reset(self.consumer)
            await self._catch_up()
        if self._mode == "catchup":
            return await self._next_catchup(timeout)
        return self._buffer.popleft() if self._buffer else None

    async def _next_catchup(self, timeout: float) -> FeedBatch | None:
        batch = self._ahead
        if batch is None:  # the last one is delivered: wait for its commit
            if timeout > 0:
                await asyncio.sleep(min(timeout, 0.05))
            return None
        self._ahead = await self._scan_batch()
        if self._ahead is None:
            self._last_catchup = batch.token
        return batch

    async def _fetch(self, timeout: float) -> None:
        kafka = self._kafka
        assert kafka is not None
        async with unavailable(self.feed.route, "fetch"):
            data = await kafka.getmany(timeout_ms=int(timeout * 1000), max_records=self.batch_size)
        for tp, records in data.items():
            name = self.feed.partition(tp.partition)
            if name not in self._held or not records:
                continue  # revoked meanwhile
            events: list[Delivered] = []
            overlap = self._overlap.get(tp.partition, 0)
            for record in records:
                if not self._takes(record.key):
                    continue
                try:
                    event = delivered_of(record.key, record.value, record.headers, self.feed.secret)
                except NotSpineEvent as exc:
                    log.error(
                        "record %s/%d@%d is not a spine event (%s): passed over",
                        tp.topic,
                        tp.partition,
                        record.offset,
                        exc,
                    )
                    continue
                if record.offset < overlap and event.seq <= self._scanned.get(event.stream_id, 0):
                    continue  # the catch-up gave it
                events.append(event)
            self._buffer.append(
                FeedBatch(name, events, token(records[-1].offset + 1), len(records))
            )
            if overlap and records[-1].offset + 1 >= overlap:
                del self._overlap[tp.partition]
                if not self._overlap:
                    self._scanned = {}

    async def _settle(self) -> None:
        """Before ``next_batch(0)`` answers: this process's appends published, the
        group's partitions assigned, a reset noticed."""
        await self.feed.relay.flush()
        if not self._assigned.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._assigned.wait(), JOIN_WAIT)
        await self._look()

    async def _next_now(self) -> None:
        """Fetch what is on the topic now, once :meth:`_settle` has run (see the module's
        docstring): until a batch is ready or every assigned partition is at its end."""
        kafka = self._kafka
        assert kafka is not None
        mine = [tp for tp in kafka.assignment() if self.feed.partition(tp.partition) in self._held]
        if not mine:
            return
        ends = await self.feed.ends(mine)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.feed.clients.conn.timeout_seconds
        while loop.time() < deadline:
            behind = []
            for tp in mine:
                if tp in kafka.assignment() and await kafka.position(tp) < ends[tp.partition]:
                    behind.append(tp)
            if not behind:
                return
            await self._fetch(0.1)
            if self._buffer or self._reset:
                return

    async def _look(self, *, force: bool = False) -> None:
        """Follow positions moved in the store by someone else (a reset): at most every
        :data:`LOOK_EVERY` seconds unless ``force``."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._looked < LOOK_EVERY:
            return
        self._looked = loop.time()
        stored = await self.checkpoints.get(self.consumer)
        if not any(self.feed.tp_of(p) is not None for p in stored):
            await self._catch_up()  # reset: from the spine again
            return
        kafka = self._kafka
        if kafka is None:
            return
        for tp in kafka.assignment():
            name = self.feed.partition(tp.partition)
            if name in self._held and stored.get(name) != self._held[name]:
                self._follow(kafka, tp, stored.get(name))
        await self._past_the_end(kafka)

    async def _past_the_end(self, kafka: AIOKafkaConsumer) -> None:
        """Notice a position past its partition's end (the topic made again): a broker
        may answer such a fetch with nothing rather than an error (Tansu does). A fetch's
        high watermark below the position raises the suspicion; the partition's end,
        read afresh, settles it."""
        suspects = []
        for tp in kafka.assignment():
            high = kafka.highwater(tp)
            if high is not None and tp not in self._untaken and high < await kafka.position(tp):
                suspects.append(tp)
        if not suspects:
            return
        ends = await self.feed.ends(suspects)
        lost = [
            f"{self.feed.partition(tp.partition)} at {at}, ends at {ends[tp.partition]}"
            for tp in suspects
            if ends[tp.partition] < (at := await kafka.position(tp))
        ]
        self._lose(lost)

    def _lose(self, lost: list[str]) -> None:
        """The topic no longer holds what lies after these positions (it was made again,
        or retention passed them): the events in between are read from the spine, as
        for a new consumer, at the next batch."""
        if lost:
            log.error(
                "%s: the topic %s does not hold the records after its positions (%s): "
                "catching up from the spine",
                self.consumer,
                self.feed.topic,
                "; ".join(lost),
            )
            self._reset = True

    def _follow(self, kafka: AIOKafkaConsumer, tp: TopicPartition, stored: str | None) -> None:
        name = self.feed.partition(tp.partition)
        self._held[name] = stored
        self._buffer = deque(b for b in self._buffer if b.partition != name)
        if stored is None:
            kafka.seek(tp, 0)
        else:
            kafka.seek(tp, offset_of(stored))

    async def commit(self, batch: FeedBatch) -> bool:
        if batch.partition == self.catchup_partition:
            if self._mode == "catchup" and batch.token == self._last_catchup:
                await self._finish_catch_up()
            return True  # a catch-up stores nothing before its end
        if batch.partition not in self._held:
            return False  # revoked: another member has it now
        after = self._held[batch.partition]
        if after == batch.token:
            return True
        if await self.checkpoints.put(self.consumer, batch.partition, batch.token, after=after):
            self._held[batch.partition] = batch.token
            return True
        stored = (await self.checkpoints.get(self.consumer)).get(batch.partition)
        tp = self.feed.tp_of(batch.partition)
        if stored is not None and tp is not None and batch.token <= stored:
            # Behind the stored position: another member got there first, or the topic
            # no longer holds what lies after it (made again; a broker's reset of an
            # out-of-range fetch starts the partition over from an end).
            lost = await self._lost({tp}, {batch.partition: stored})
            if lost:
                self._lose(lost)
                return False
        if self._kafka is not None and tp is not None and tp in self._kafka.assignment():
            self._follow(self._kafka, tp, stored)
        return False

    async def aclose(self) -> None:
        await self._stop_scan()
        await self._stop_kafka()
        self._mode = None
        self.feed.closed(self)
