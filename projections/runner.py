"""Applies events to one projector's view: idempotent and monotonic per stream, gaps
repaired from the spine, poison events parked, read-your-writes waits.

:meth:`ProjectorRunner.apply` is feed-agnostic: the feed loop
(:mod:`projections.driver`), a Kafka consumer, a rebuild from ``scan`` and a replay all
drive it. One call:

1. groups the events by stream (no view depends on order across streams) and drops
   streams that are parked (held back);
2. reads each stream's applied progress (the seq of the last event the view applied),
   drops what is applied already, and reads any seqs missing before the rest from the
   spine (the truth), not from the feed;
3. loads the records the events touch, from a cache bounded in bytes or the store;
4. applies each stream's events in seq order; an event that fails a few times is
   parked, its stream stops there, every other stream goes on. A record the view
   holds at or above the version the event would give it has the event already (its
   progress was read before another runner's commit, or lost): it is left as it is;
5. commits, per stream and atomically, the changed records and the new progress, each
   conditional on what was read; a refused stream (another runner got there first, or
   the cache was stale) is reloaded and redone.

A crash anywhere leaves each stream's records and progress as they were or moved
together, so whatever delivered the events can deliver them again, harmlessly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from projections.parking import Parked, ParkingStore, error_text
from projections.projector import Projector
from projections.views import ViewRecord, ViewStore, ViewWrite
from spine.codec import expected_hash
from spine.errors import BackendUnavailable, IntegrityError, InvalidInput
from spine.events import EventEnvelope
from spine.feed import Delivered, Unreadable
from spine.store import EventStore
from spine.upcasting import Upcasters

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How often a stream whose commit is refused is reloaded and redone before it is parked.
COMMIT_ATTEMPTS = 5
#: The longest pause between two looks at the view store while waiting for a write.
MAX_POLL_SECONDS = 0.1


class _Poison(Exception):
    """An event this projector cannot apply, after ``attempts`` tries."""

    def __init__(self, event: Delivered, cause: BaseException | str, attempts: int = 1) -> None:
        self.event = event
        self.error = cause if isinstance(cause, str) else error_text(cause)
        self.attempts = attempts
        super().__init__(self.error)


class _Stream:
    """One stream's part of a call to ``apply``."""

    __slots__ = ("applied", "cut_short", "events", "next_seq", "poison", "stream_id", "write")

    def __init__(self, stream_id: str, applied: int) -> None:
        self.stream_id = stream_id
        self.applied = applied
        self.next_seq = applied + 1
        """The seq of the next event to take."""
        self.events: list[EventEnvelope] = []
        """Each event to apply, readable and current."""
        self.write: ViewWrite | None = None
        self.poison: _Poison | None = None
        self.cut_short = False
        """Its write stopped before its last event, to fit in one write of the store."""


class _RecordCache:
    """The records this runner read or wrote, bounded by an estimate of their size in
    bytes; the least recently put goes first (the runner puts what it writes, which is
    what it reads next)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.records: dict[str, ViewRecord] = {}  # insertion order is put order
        self.sizes: dict[str, int] = {}
        self.size = 0

    def put(self, record: ViewRecord) -> None:
        key = record.key
        records, sizes = self.records, self.sizes
        if records.pop(key, None) is not None:
            self.size -= sizes.pop(key)
        size = len(orjson.dumps(record.data)) + len(key) + 400  # data, key and overhead
        if size > self.max_bytes:
            return
        records[key] = record
        sizes[key] = size
        self.size += size
        while self.size > self.max_bytes:
            self.drop(next(iter(records)))

    def drop(self, key: str) -> None:
        if self.records.pop(key, None) is not None:
            self.size -= self.sizes.pop(key)

    def clear(self) -> None:
        self.records.clear()
        self.sizes.clear()
        self.size = 0


class _ProgressCache:
    """Streams' applied progress as this runner last read or wrote it, bounded in count
    (an entry is a stream id and an int); the least recently put goes first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.seqs: dict[str, int] = {}

    def put(self, stream_id: str, seq: int) -> None:
        seqs = self.seqs
        seqs.pop(stream_id, None)
        seqs[stream_id] = seq
        if len(seqs) > self.max_entries:
            del seqs[next(iter(seqs))]

    def drop(self, stream_id: str) -> None:
        self.seqs.pop(stream_id, None)

    def clear(self) -> None:
        self.seqs.clear()


def _latest(changed: list[tuple[ViewRecord, int]]) -> list[tuple[ViewRecord, int]]:
    """One entry per key of ``changed`` (in the order keys first come): its last record,
    and the stored version its first one replaces."""
    first: dict[str, tuple[ViewRecord, int]] = {}
    for record, replaced in changed:
        earlier = first.get(record.key)
        first[record.key] = (record, replaced if earlier is None else earlier[1])
    return list(first.values())


def _split(keys: Iterable[str], cached: Mapping[str, T]) -> tuple[dict[str, T], list[str]]:
    """The cached values of ``keys``, and the keys the cache does not hold."""
    found: dict[str, T] = {}
    missing = []
    for key in keys:
        hit = cached.get(key)
        if hit is None:
            missing.append(key)
        else:
            found[key] = hit
    return found, missing


class ProjectorRunner:
    def __init__(
        self,
        projector: Projector,
        *,
        spine: EventStore,
        views: ViewStore,
        parking: ParkingStore,
        upcasters: Upcasters | None = None,
        cache_bytes: int = 64 * 1024 * 1024,
        max_attempts: int = 3,
    ) -> None:
        self.projector = projector
        self.name = projector.name
        self.spine = spine
        self.views = views
        self.parking = parking
        self.upcasters = upcasters
        self.max_attempts = max_attempts
        self._prefixes = tuple(d + "/" for d in sorted(projector.domains))
        self._records = _RecordCache(cache_bytes)
        self._progress = _ProgressCache(max(cache_bytes // 8 // 160, 1024))
        self._parked: dict[str, Parked] | None = None
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.gaps_repaired = 0

    # -- applying ----------------------------------------------------------------------

    async def apply(self, events: Iterable[Delivered]) -> int:
        """Apply ``events`` (seq order within each stream); return how many events the
        view took. Events of other domains, of parked streams, or applied already are
        passed over. Raises only when a store fails (nothing half-written)."""
        by_stream: dict[str, list[Delivered]] = {}
        mine = self._prefixes
        for event in events:
            group = by_stream.get(event.stream_id)
            if group is not None:
                group.append(event)
            elif event.stream_id.startswith(mine):
                by_stream[event.stream_id] = [event]
        await self._hold_back(by_stream)
        applied = 0
        refusals = 0
        singly: set[str] = set()
        """Streams whose write the store refused as invalid: applied one event a write,
        to find the event it cannot take."""
        while by_stream:
            streams, keys = await self._prepare(by_stream)
            writes = self._decide(streams, await self._load(keys), singly)
            refused, invalid = await self._commit(writes)
            applied += self._settle(streams, refused | invalid.keys())
            redo = {
                s.stream_id
                for s in streams
                if s.stream_id in invalid and self._invalid(s, invalid[s.stream_id], singly)
            }
            poisoned = [s for s in streams if s.poison is not None and s.stream_id not in refused]
            if poisoned:
                refused |= await self._park_unless_passed(poisoned)
            if refused:
                refusals += 1
                if refusals == COMMIT_ATTEMPTS:
                    why = f"the view refused this stream's writes {COMMIT_ATTEMPTS} times"
                    for s in streams:
                        if s.stream_id in refused:
                            stuck = Unreadable(s.stream_id, s.applied + 1, why)
                            await self._park(_Poison(stuck, why, COMMIT_ATTEMPTS))
                    refused = set()
            # a stream cut short to fit the store's write goes on from where it stopped
            again = refused | {s.stream_id for s in streams if s.cut_short}
            again |= redo
            by_stream = {sid: by_stream[sid] for sid in again}
        return applied

    async def _commit(self, writes: list[ViewWrite]) -> tuple[set[str], dict[str, InvalidInput]]:
        """Commit ``writes``: the streams refused (a race), and those whose write the
        store can never take (:class:`InvalidInput`: too large for it), each with why.
        A store refuses an invalid commit whole, so then each write goes alone."""
        if not writes:
            return set(), {}
        try:
            return set(await self.views.commit(self.name, writes)), {}
        except InvalidInput as exc:
            if len(writes) == 1:
                return set(), {writes[0].stream_id: exc}
        refused: set[str] = set()
        invalid: dict[str, InvalidInput] = {}
        for write in writes:
            try:
                refused |= set(await self.views.commit(self.name, [write]))
            except InvalidInput as exc:
                invalid[write.stream_id] = exc
        return refused, invalid

    def _invalid(self, stream: _Stream, why: InvalidInput, singly: set[str]) -> bool:
        """``stream``'s write cannot be stored: if it held one event, that event is
        poison (parked, its stream held back, every other stream going on); else the
        stream is to be redone (True) one event a write, to find which."""
        write = stream.write
        assert write is not None
        if write.applied_to - write.applied_from > 1:
            singly.add(stream.stream_id)
            return True
        event = next(e for e in stream.events if e.seq == write.applied_to)
        stream.poison = _Poison(event, why)
        stream.cut_short = False  # it stops at the poison, held back once parked
        return False

    async def _park_unless_passed(self, poisoned: list[_Stream]) -> set[str]:
        """Park each poisoned stream's event, unless the view store says the stream has
        moved past it meanwhile (an operator's ``skip`` or another process): then this
        runner's progress was stale, and the stream is returned to be redone."""
        stored = await self.views.applied(self.name, [s.stream_id for s in poisoned])
        redo: set[str] = set()
        for s in poisoned:
            assert s.poison is not None
            if stored.get(s.stream_id, 0) >= s.poison.event.seq:
                self._progress.drop(s.stream_id)
                redo.add(s.stream_id)
            else:
                await self._park(s.poison)
        return redo

    async def _hold_back(self, by_stream: dict[str, list[Delivered]]) -> None:
        """Drop the streams that are parked; a stream released since is let through (its
        held-back events are then read from the spine as a gap)."""
        if self._parked is None:
            self._parked = {p.stream_id: p for p in await self.parking.parked(self.name)}
        if not self._parked:
            return
        held = [sid for sid in by_stream if sid in self._parked]
        if not held:
            return
        still = await self.parking.find(self.name, held)
        for sid in held:
            if sid in still:
                self._parked[sid] = still[sid]
                del by_stream[sid]
            else:  # released, perhaps past its event: read its progress afresh
                del self._parked[sid]
                self._progress.drop(sid)

    async def _prepare(
        self, by_stream: dict[str, list[Delivered]]
    ) -> tuple[list[_Stream], set[str]]:
        """Each stream's events still to apply (gaps read from the spine), decoded and
        upcast; and the keys of every record they read."""
        progress = await self.applied(list(by_stream))
        keys: set[str] = set()
        streams: list[_Stream] = []
        take = self._take
        for sid, delivered in by_stream.items():
            stream = _Stream(sid, progress.get(sid, 0))
            rest = take(stream, delivered, keys)
            while rest and await self._repair(stream, rest[0].seq - 1, keys):
                rest = take(stream, rest, keys)
            if stream.events or stream.poison:
                streams.append(stream)
        return streams, keys

    def _take(
        self, stream: _Stream, events: Sequence[Delivered], keys: set[str]
    ) -> Sequence[Delivered]:
        """Add ``events`` that ``stream`` has not applied to its own (readable, upcast)
        and the keys they read to ``keys``, up to the first that comes after a gap;
        return the events from that one on (none: all taken, or the stream poisoned)."""
        expected = stream.next_seq
        taken = stream.events
        keys_of = self.projector.keys
        add_keys = keys.update
        upcasters = self.upcasters
        n = -1
        for event in events:
            n += 1
            if event.seq != expected:
                if event.seq < expected:
                    continue  # applied before: redelivery or replay
                stream.next_seq = expected
                return events[n:]
            try:
                if isinstance(event, Unreadable):
                    raise IntegrityError(event.error)
                if expected_hash(event) != event.hash:
                    raise IntegrityError(  # the parked record names the stream and seq
                        "the stored event does not match its hash (changed behind the "
                        "spine's back?): `engines spine read STREAM --verify` says more"
                    )
                env = upcasters.upcast(event) if upcasters is not None else event
                add_keys(keys_of(env))
            except Exception as exc:
                stream.poison = _Poison(event, exc)
                break
            taken.append(env)
            expected += 1
        stream.next_seq = expected
        return ()

    async def _repair(self, stream: _Stream, last: int, keys: set[str]) -> bool:
        """Take ``stream``'s events from its next seq to ``last`` (a gap in what was
        delivered) from the spine; False, the stream poisoned, if one of them is missing
        or not readable."""
        first = stream.next_seq
        found, broken = await self._read_spine(stream.stream_id, first, last)
        self.gaps_repaired += 1
        log.warning(
            "projector %s repairs a gap in %s: seq %d..%d read from the spine",
            self.name,
            stream.stream_id,
            first,
            last,
        )
        self._take(stream, found, keys)  # contiguous from ``first``: no gap
        if stream.poison is None and broken is not None:
            stream.poison = _Poison(broken, broken.error)
        return stream.poison is None

    async def _read_spine(
        self, stream_id: str, first: int, last: int, *, to_the_end: bool = True
    ) -> tuple[list[Delivered], Unreadable | None]:
        """Seq ``first``..``last`` of a stream from the spine: the events up to the first
        that cannot be read or is missing, and that one (``None`` if none is). Unless
        ``to_the_end``, a range that runs past the stream's last event is no fault."""
        try:
            events: list[Delivered] = list(await self.spine.read_stream(stream_id, first, last))
        except IntegrityError:  # a broken event in the range: find which, one by one
            events = []
            for seq in range(first, last + 1):
                try:
                    one = await self.spine.read_stream(stream_id, seq, seq)
                except IntegrityError as exc:
                    return events, Unreadable(stream_id, seq, str(exc))
                if not one:
                    break
                events += one
        for expected, event in enumerate(events, start=first):
            if event.seq != expected:
                return events[: expected - first], self._missing(stream_id, expected)
        end = first + len(events)
        if to_the_end and end <= last:
            return events, self._missing(stream_id, end)
        return events, None

    @staticmethod
    def _missing(stream_id: str, seq: int) -> Unreadable:
        return Unreadable(stream_id, seq, f"the spine holds no seq {seq} of {stream_id}")

    def _decide(
        self,
        streams: list[_Stream],
        current: dict[str, ViewRecord],
        singly: Container[str] = frozenset(),
    ) -> list[ViewWrite]:
        """Apply every stream's events to ``current``, the records they touch (pure, in
        memory); leave each stream's :class:`ViewWrite` on it and return them all. A
        stream of ``singly`` writes one event."""
        apply = self.projector.apply
        limit = self.views.max_write_records
        writes: list[ViewWrite] = []
        for stream in streams:
            changed: list[tuple[ViewRecord, int]] = []
            touched: set[str] = set()
            last = stream.applied
            one = stream.stream_id in singly
            for env in stream.events:
                if one and last > stream.applied:
                    stream.cut_short = True
                    break
                try:
                    records = apply(env, current)
                except BackendUnavailable:
                    raise
                except Exception as exc:
                    try:
                        records = self._retry(env, current, exc)
                    except _Poison as poison:
                        stream.poison = poison
                        break
                keys = {record.key for record in records}
                if len(touched | keys) > limit:
                    if touched:  # the rest goes in another write
                        stream.cut_short = True
                    else:
                        why = (
                            f"applying it changes {len(keys)} records; the view store"
                            f" takes at most {limit} in one write"
                        )
                        stream.poison = _Poison(env, why, 1)
                    break
                touched |= keys
                for record in records:
                    before = current.get(record.key)
                    if before is None:
                        changed.append((record, 0))
                    elif record.version > before.version:
                        changed.append((record, before.version))
                    else:
                        continue  # the view has this already (progress was read stale)
                    current[record.key] = record
                last = env.seq
            if last > stream.applied:
                if len(changed) > 1:
                    changed = _latest(changed)
                stream.write = ViewWrite(stream.stream_id, stream.applied, last, changed)
                writes.append(stream.write)
        return writes

    def _retry(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord], failure: Exception
    ) -> Sequence[ViewRecord]:
        """The projector's records for ``event``, which failed once with ``failure``,
        tried up to ``max_attempts`` times in all; :class:`_Poison` if it keeps failing.
        ``records`` holds (at least) every record under the event's keys that exists."""
        for _ in range(self.max_attempts - 1):
            try:
                return self.projector.apply(event, records)
            except BackendUnavailable:
                raise
            except Exception as exc:
                failure = exc
        raise _Poison(event, failure, self.max_attempts) from failure

    async def _load(self, keys: set[str]) -> dict[str, ViewRecord]:
        """The records under ``keys`` (tombstones and expired ones included), from the
        cache where it has them. A stale cache costs a refused commit, never a wrong
        view: every write is conditional on the version read."""
        found, missing = _split(keys, self._records.records)
        if missing:
            loaded = await self.views.get_many(missing, include_deleted=True)
            put = self._records.put
            for key, record in loaded.items():
                found[key] = record
                put(record)
        return found

    def _settle(self, streams: list[_Stream], refused: set[str]) -> int:
        """After a commit: remember what was written (and wake whoever waits for it),
        forget what a refused stream read; return how many events the view took."""
        taken = 0
        progress = self._progress
        put, drop = self._records.put, self._records.drop
        for stream in streams:
            write = stream.write
            if write is None:
                continue
            if stream.stream_id in refused:
                progress.drop(stream.stream_id)
                for record, _ in write.records:
                    drop(record.key)
            else:
                taken += write.applied_to - write.applied_from
                progress.put(write.stream_id, write.applied_to)
                for record, _ in write.records:
                    put(record)
                if self._waiters:
                    self._wake(write.stream_id, write.applied_to)
        return taken

    async def _park(self, poison: _Poison) -> None:
        event = poison.event
        parked = Parked(
            projector=self.name,
            stream_id=event.stream_id,
            seq=event.seq,
            event_id=getattr(event, "event_id", None),
            event_type=getattr(event, "event_type", None),
            error=poison.error,
            attempts=poison.attempts,
            parked_at=datetime.now(UTC),
        )
        await self.parking.park(parked)
        if self._parked is not None:
            self._parked[event.stream_id] = parked
        log.error(
            "projector %s parked %s at seq %d after %d attempts: %s",
            self.name,
            event.stream_id,
            event.seq,
            poison.attempts,
            poison.error,
        )

    async def applied(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Each stream's applied progress (streams never applied are left out)."""
        found, missing = _split(stream_ids, self._progress.seqs)
        if missing:
            for sid, seq in (await self.views.applied(self.name, missing)).items():
                found[sid] = seq
                self._progress.put(sid, seq)
        return found

    def invalidate(self) -> None:
        """Forget every cached record and progress (after someone else changed the view)."""
        self._records.clear()
        self._progress.clear()
        self._parked = None

    # -- operators: one stream at a time --------------------------------------------------

    async def catch_up_stream(self, stream_id: str, *, batch_size: int = 1000) -> int:
        """Apply whatever the spine holds of ``stream_id`` beyond the view's progress."""
        total = 0
        while True:
            self._progress.drop(stream_id)
            done = (await self.applied([stream_id])).get(stream_id, 0)
            events, broken = await self._read_spine(
                stream_id, done + 1, done + batch_size, to_the_end=False
            )
            if not events and broken is None:
                return total
            taken = await self.apply([*events, *([broken] if broken else [])])
            total += taken
            if taken == 0 or broken is not None:
                return total  # parked (again), or someone else is applying it

    async def retry(self, stream_id: str) -> Parked | None:
        """Release a parked stream and apply it from the spine; the new parked record if
        it fails again, else ``None``."""
        await self.parking.release(self.name, stream_id)
        self.invalidate()
        await self.catch_up_stream(stream_id)
        return (await self.parking.find(self.name, [stream_id])).get(stream_id)

    async def skip(self, stream_id: str) -> Parked | None:
        """Pass over a parked stream's failing event (the view never applies it), release
        the stream and apply the rest of it; the new parked record if another event
        fails, else ``None``."""
        parked = (await self.parking.find(self.name, [stream_id])).get(stream_id)
        if parked is None:
            raise IntegrityError(f"{stream_id} is not parked for projector {self.name}")
        self.invalidate()
        done = (await self.applied([stream_id])).get(stream_id, 0)
        if done != parked.seq - 1:
            raise IntegrityError(
                f"{stream_id}: the view has applied seq {done}, the parked event is seq "
                f"{parked.seq}; retry it instead"
            )
        write = ViewWrite(stream_id, done, parked.seq)
        if await self.views.commit(self.name, [write]):
            raise IntegrityError(f"{stream_id}: the view moved while skipping; try again")
        log.warning("projector %s skipped %s seq %d", self.name, stream_id, parked.seq)
        return await self.retry(stream_id)

    # -- read-your-writes -----------------------------------------------------------------

    def _wake(self, stream_id: str, applied: int) -> None:
        waiting = self._waiters.get(stream_id)
        if not waiting:
            return
        still = []
        for seq, future in waiting:
            if future.done():
                continue
            if seq <= applied:
                future.set_result(None)
            else:
                still.append((seq, future))
        if still:
            self._waiters[stream_id] = still
        else:
            self._waiters.pop(stream_id, None)

    async def wait_for(self, stream_id: str, seq: int, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until the view has applied ``seq`` of
        ``stream_id``; False if it has not by then. The view store is asked, so an event
        applied by another process counts; this runner's own applies wake it sooner."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(stream_id, []).append((seq, future))
        pause = 0.005
        try:
            while True:
                stored = await self.views.applied(self.name, [stream_id])
                if stored.get(stream_id, 0) >= seq:
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                done, _ = await asyncio.wait([future], timeout=min(pause, left))
                if done:
                    return True
                pause = min(pause * 2, MAX_POLL_SECONDS)
        finally:
            if not future.done():
                future.cancel()
            entries = self._waiters.get(stream_id)
            if entries is not None:
                entries[:] = [(s, f) for s, f in entries if f is not future]
                if not entries:
                    self._waiters.pop(stream_id, None)
