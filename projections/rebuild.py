"""Rebuilding a view from the spine (DESIGN §4): the truth, read with ``scan``, driven
through the projectors' own runner (:meth:`ProjectorRunner.apply`).

The unit is a view: every projector writing it is rebuilt together, into a view store
the caller opened (a new physical name beside the live one, or the live one emptied).
:class:`Rebuild` does it in three steps, each bounded in memory whatever the spine's
size (a batch of events at a time; the runners' caches are bounded; no per-event state):

1. **Start.** The feed's heads are taken *before* the scan and kept as the positions
   of the rebuild's own feed consumer (``consumer``) in the routed checkpoint store.
2. **Scan.** Each domain's events are read with ``scan`` and applied in batches. The
   position (which domains are done, how many events of the current one were read) is
   kept beside, under ``consumer + ":scan"``, so a killed rebuild resumes: domains done
   are passed over, and the events of the current one read before are read again but
   not applied (a scan of a given set of events comes in the same order, and events
   that arrive meanwhile come after the heads, which the drain delivers; whatever is
   applied twice is skipped by the runner, per stream).
3. **Drain.** What the feed delivered to the rebuild's consumer since the heads (what
   arrived during the scan) is applied.

:meth:`Rebuild.verify` then folds the spine afresh into a scratch view store, brings
the two to the same events per stream (events appended meanwhile land in one and not
yet in the other), and compares record count and content checksum (:func:`tally`).

Parking: a rebuild parks under a namespace of its own (:class:`NamespacedParking`), so
it never holds back the live projector's streams; verification fails if it parked a
stream the live projector has not parked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from projections.parking import Parked, ParkingStore
from projections.projector import Projector
from projections.runner import ProjectorRunner
from projections.views import ViewRecord, ViewStore
from spine.errors import EnginesError
from spine.feed import CheckpointStore, Delivered, Feed
from spine.store import EventStore
from spine.upcasting import Upcasters

#: The checkpoint partition holding a rebuild's scan position.
SCAN_PARTITION = "scan"
#: How often the scan position is saved while a rebuild runs.
SAVE_SECONDS = 2.0
#: The runners' record caches during a rebuild (each): bounded, whatever the spine.
CACHE_BYTES = 16 * 1024 * 1024

Progress = Callable[[str, int], None]
"""Told the phase (``scan``, ``drain``, ``fold``) and the events read in it so far."""


class RebuildConflict(EnginesError):
    """Another rebuild moved this rebuild's checkpoint: two are running into one name."""


def tenant_of(stream_id: str) -> str:
    """A stream id's tenant: its second segment."""
    parts = stream_id.split("/", 2)
    return parts[1] if len(parts) > 1 else ""


def rebuild_consumer(kind: str, name: str) -> str:
    """The feed consumer (and checkpoint name) of a rebuild of ``kind`` into ``name``."""
    return f"rebuild:{kind}:{name}"


# -- parking ------------------------------------------------------------------------------


class NamespacedParking:
    """A :class:`ParkingStore` that keeps its records under ``prefix`` + the projector's
    name in ``inner``: a rebuild's parked streams, apart from the live projector's."""

    def __init__(self, inner: ParkingStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def _out(self, parked: Parked) -> Parked:
        return parked.model_copy(update={"projector": parked.projector[len(self.prefix) :]})

    async def park(self, parked: Parked) -> None:
        await self.inner.park(
            parked.model_copy(update={"projector": self.prefix + parked.projector})
        )

    async def parked(self, projector: str | None = None) -> list[Parked]:
        if projector is not None:
            return [self._out(p) for p in await self.inner.parked(self.prefix + projector)]
        return [
            self._out(p) for p in await self.inner.parked() if p.projector.startswith(self.prefix)
        ]

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        found = await self.inner.find(self.prefix + projector, stream_ids)
        return {sid: self._out(p) for sid, p in found.items()}

    async def release(self, projector: str, stream_id: str) -> bool:
        return await self.inner.release(self.prefix + projector, stream_id)


@dataclass
class MemoryParking:
    """Parked records held in this process: for a verification fold, which is thrown
    away. Never a stand-in for the routed parking store."""

    records: dict[tuple[str, str], Parked] = field(default_factory=dict)

    async def park(self, parked: Parked) -> None:
        self.records[(parked.projector, parked.stream_id)] = parked

    async def parked(self, projector: str | None = None) -> list[Parked]:
        found = [p for p in self.records.values() if projector in (None, p.projector)]
        return sorted(found, key=lambda p: p.parked_at)

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        return {s: p for s in stream_ids if (p := self.records.get((projector, s))) is not None}

    async def release(self, projector: str, stream_id: str) -> bool:
        return self.records.pop((projector, stream_id), None) is not None


# -- checksum -----------------------------------------------------------------------------


def record_digest(record: ViewRecord) -> int:
    """A 128-bit digest of what a record holds: key, scope, version, data, tombstone and
    expiry (to the microsecond, in UTC), each in one canonical form."""
    s = record.scope
    expires = record.expires_at.astimezone(UTC).isoformat() if record.expires_at else None
    body = orjson.dumps(
        [
            record.key,
            [s.tenant_id, s.mode, s.user_id, s.surface_id, s.project_id],
            record.version,
            record.data,
            record.deleted,
            expires,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return int.from_bytes(hashlib.blake2b(body, digest_size=16).digest(), "big")


@dataclass(frozen=True)
class Tally:
    """A view's record count and content checksum (the sum of every record's digest,
    modulo 2**128: independent of the order records are read in)."""

    records: int
    checksum: int

    @property
    def hex(self) -> str:
        return f"{self.checksum:032x}"


async def tally(views: ViewStore, *, tenant_id: str | None = None) -> Tally:
    count = total = 0
    async for record in views.records(tenant_id=tenant_id):
        count += 1
        total = (total + record_digest(record)) % (1 << 128)
    return Tally(count, total)


# -- folding ------------------------------------------------------------------------------


def runners_for(
    projectors: Iterable[Projector],
    *,
    spine: EventStore,
    views: ViewStore,
    parking: ParkingStore,
    upcasters: Upcasters | None,
) -> list[ProjectorRunner]:
    return [
        ProjectorRunner(
            p,
            spine=spine,
            views=views,
            parking=parking,
            upcasters=upcasters,
            cache_bytes=CACHE_BYTES,
        )
        for p in projectors
    ]


async def _apply(
    runners: Sequence[ProjectorRunner], events: Sequence[Delivered], domain: str | None
) -> None:
    for runner in runners:
        if domain is None or domain in runner.projector.domains:
            await runner.apply(events)


async def fold(
    runners: Sequence[ProjectorRunner],
    spine: EventStore,
    *,
    tenant_id: str | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
    phase: str = "fold",
) -> int:
    """Apply every event of the runners' domains (of ``tenant_id``'s streams where
    given) from ``spine.scan``, a batch at a time; return the events read."""
    domains = sorted({d for r in runners for d in r.projector.domains})
    read = 0
    for domain in domains:
        batch: list[Delivered] = []
        async for event in spine.scan(domain=domain, tenant_id=tenant_id):
            batch.append(event)
            read += 1
            if len(batch) == batch_size:
                await _apply(runners, batch, domain)
                batch = []
                if progress is not None:
                    progress(phase, read)
        await _apply(runners, batch, domain)
    if progress is not None:
        progress(phase, read)
    return read


async def _pages(pairs: AsyncIterator[tuple[str, int]], size: int) -> AsyncIterator[dict[str, int]]:
    page: dict[str, int] = {}
    async for sid, seq in pairs:
        page[sid] = seq
        if len(page) == size:
            yield page
            page = {}
    if page:
        yield page


async def align(
    ahead: ProjectorRunner,
    behind: ProjectorRunner,
    spine: EventStore,
    *,
    tenant_id: str | None = None,
    batch_size: int = 500,
) -> int:
    """Bring ``behind``'s view to at least ``ahead``'s applied seq of every stream
    ``ahead`` has applied (the events between read from the spine); return the streams
    moved. Both runners are of one projector."""
    moved = 0
    name = ahead.name
    async for page in _pages(
        ahead.views.progress(name, tenant_id=tenant_id, batch_size=batch_size), batch_size
    ):
        have = await behind.views.applied(name, list(page))
        for sid, seq in page.items():
            done = have.get(sid, 0)
            if done < seq:
                events = await spine.read_stream(sid, done + 1, seq)
                behind.invalidate()
                await behind.apply(events)
                moved += 1
    return moved


# -- the rebuild --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanPosition:
    """How far a rebuild's scan has gone: domains done, and events of the next read."""

    domain: int = 0
    read: int = 0

    @property
    def token(self) -> str:
        return f"{self.domain:06d}.{self.read:016d}"

    @classmethod
    def parse(cls, token: str | None) -> ScanPosition:
        if token is None:
            return cls()
        domain, _, read = token.partition(".")
        return cls(int(domain), int(read))


@dataclass
class Report:
    """What a rebuild did."""

    events: int = 0
    """Events read from the spine (the scan) and the feed (the drain)."""
    streams: int = 0
    """Streams the scan met (each stream's first event)."""
    drained: int = 0
    resumed_from: ScanPosition | None = None
    positions: dict[str, str] = field(default_factory=dict)
    """The rebuild consumer's feed positions once drained: what the new view holds
    every event before."""
    seconds: float = 0.0


@dataclass(frozen=True)
class Verification:
    view: Tally
    fold: Tally
    parked: tuple[Parked, ...]
    """What the rebuild parked."""
    not_parked_live: tuple[Parked, ...]
    """What it parked that the live projector has not."""
    aligned: int
    """Streams one side was brought up to the other on (events appended meanwhile)."""

    @property
    def ok(self) -> bool:
        return self.view == self.fold and not self.not_parked_live


class Rebuild:
    """Rebuilds ``views`` (one view kind) for ``projectors``, every one writing it (see
    the module's docstring). ``spine`` is the spine as stored (the runners upcast);
    ``parking`` the routed parking store, where the live projectors park."""

    def __init__(
        self,
        projectors: Sequence[Projector],
        *,
        spine: EventStore,
        views: ViewStore,
        parking: ParkingStore,
        feed: Feed,
        checkpoints: CheckpointStore,
        consumer: str,
        tenant_id: str | None = None,
        upcasters: Upcasters | None = None,
        batch_size: int = 500,
        progress: Progress | None = None,
        save_seconds: float = SAVE_SECONDS,
    ) -> None:
        self.projectors = tuple(projectors)
        self.save_seconds = save_seconds
        self.spine = spine
        self.views = views
        self.live_parking = parking
        self.parking = NamespacedParking(parking, consumer + ":")
        self.feed = feed
        self.checkpoints = checkpoints
        self.consumer = consumer
        self.scan_consumer = consumer + ":" + SCAN_PARTITION
        self.tenant_id = tenant_id
        self.upcasters = upcasters
        self.batch_size = batch_size
        self.progress = progress
        self.domains = sorted({d for p in self.projectors for d in p.domains})
        self.runners = runners_for(
            self.projectors, spine=spine, views=views, parking=self.parking, upcasters=upcasters
        )
        self._saved: str | None = None

    def _tell(self, phase: str, done: int) -> None:
        if self.progress is not None:
            self.progress(phase, done)

    async def has_checkpoint(self) -> bool:
        return bool(await self.checkpoints.get(self.scan_consumer))

    async def run(self, *, resume: bool = False) -> Report:
        """Scan and drain (see the module's docstring); with ``resume``, from this
        rebuild's checkpoint where it has one."""
        started = time.monotonic()
        report = Report()
        position = await self._start(resume)
        if position != ScanPosition():
            report.resumed_from = position
        report.events, report.streams = await self._scan(position)
        report.drained = await self._drain()
        report.events += report.drained
        report.positions = await self.checkpoints.get(self.consumer)
        report.seconds = time.monotonic() - started
        return report

    async def _start(self, resume: bool) -> ScanPosition:
        if resume:
            saved = await self.checkpoints.get(self.scan_consumer)
            if saved and await self.checkpoints.get(self.consumer):
                self._saved = saved.get(SCAN_PARTITION)
                return ScanPosition.parse(self._saved)
        await self.forget()
        heads = await self.feed.heads()
        first = ScanPosition().token
        if not await self.checkpoints.put(self.scan_consumer, SCAN_PARTITION, first, after=None):
            raise RebuildConflict(f"another rebuild ({self.consumer}) started at the same time")
        self._saved = first
        for partition, token in heads.items():
            if not await self.checkpoints.put(self.consumer, partition, token, after=None):
                raise RebuildConflict(f"another rebuild ({self.consumer}) started at the same time")
        return ScanPosition()

    async def _save(self, position: ScanPosition) -> None:
        token = position.token
        if token == self._saved:
            return
        if not await self.checkpoints.put(
            self.scan_consumer, SCAN_PARTITION, token, after=self._saved
        ):
            raise RebuildConflict(
                f"the checkpoint of {self.consumer} moved under this rebuild: another rebuild "
                "into the same name is running"
            )
        self._saved = token

    async def _scan(self, start: ScanPosition) -> tuple[int, int]:
        events = streams = 0
        saved_at = time.monotonic()
        for index, domain in enumerate(self.domains):
            if index < start.domain:
                continue
            skip = start.read if index == start.domain else 0
            read = 0
            batch: list[Delivered] = []
            async for event in self.spine.scan(domain=domain, tenant_id=self.tenant_id):
                read += 1
                events += 1
                if event.seq == 1:
                    streams += 1
                if read <= skip:
                    if read % self.batch_size == 0:
                        self._tell("scan", events)
                    continue
                batch.append(event)
                if len(batch) == self.batch_size:
                    await _apply(self.runners, batch, domain)
                    batch = []
                    self._tell("scan", events)
                    if time.monotonic() - saved_at >= self.save_seconds:
                        await self._save(ScanPosition(index, read))
                        saved_at = time.monotonic()
            await _apply(self.runners, batch, domain)
            await self._save(ScanPosition(index + 1, 0))
        self._tell("scan", events)
        return events, streams

    async def _drain(self, *, max_seconds: float = 60.0) -> int:
        """Apply what the feed delivers to the rebuild's consumer (from the heads taken
        at the start) up to the heads as they are now, or until it is quiet or
        ``max_seconds`` have passed (a writer may keep appending; what comes later is
        the live projectors' to apply, see :meth:`hand_over`). Return the events it
        delivered."""
        target = await self.feed.heads()
        reached: dict[str, str] = {}
        subscription = self.feed.subscribe(
            self.consumer,
            self.checkpoints,
            domains=frozenset(self.domains),
            batch_size=self.batch_size,
        )
        drained = 0
        deadline = time.monotonic() + max_seconds
        try:
            while (batch := await subscription.next_batch(0.2)) is not None:
                events: list[Delivered] = list(batch.events)
                if self.tenant_id is not None:
                    events = [e for e in events if tenant_of(e.stream_id) == self.tenant_id]
                await _apply(self.runners, events, None)
                drained += len(batch.events)
                self._tell("drain", drained)
                if not await subscription.commit(batch):
                    raise RebuildConflict(
                        f"the feed position of {self.consumer} moved under this rebuild: "
                        "another rebuild into the same name is running"
                    )
                reached[batch.partition] = batch.token
                if time.monotonic() > deadline or all(
                    reached.get(p, "") >= t for p, t in target.items()
                ):
                    break
        finally:
            await subscription.aclose()
        return drained

    async def verify(self, scratch: ViewStore, *, attempts: int = 3) -> Verification:
        """Fold the spine into ``scratch`` (an empty view store, thrown away after), bring
        both views to the same events per stream, and compare count and checksum. A
        view a live projector writes too (in place) may move between the two; the
        comparison is tried ``attempts`` times."""
        fold_runners = runners_for(
            self.projectors,
            spine=self.spine,
            views=scratch,
            parking=MemoryParking(),
            upcasters=self.upcasters,
        )
        for projector in self.projectors:
            await scratch.declare(projector.shapes)
        await fold(
            fold_runners,
            self.spine,
            tenant_id=self.tenant_id,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        aligned = 0
        for attempt in range(attempts):
            for mine, theirs in zip(self.runners, fold_runners, strict=True):
                aligned += await align(theirs, mine, self.spine, tenant_id=self.tenant_id)
                aligned += await align(mine, theirs, self.spine, tenant_id=self.tenant_id)
            view = await tally(self.views, tenant_id=self.tenant_id)
            folded = await tally(scratch, tenant_id=self.tenant_id)
            if view == folded or attempt == attempts - 1:
                break
        parked = tuple(await self.parking.parked())
        not_live: list[Parked] = []
        for p in parked:
            if not await self.live_parking.find(p.projector, [p.stream_id]):
                not_live.append(p)
        return Verification(view, folded, parked, tuple(not_live), aligned)

    async def forget(self) -> None:
        """Drop this rebuild's checkpoints and parked records (done, or starting over)."""
        await self.checkpoints.reset(self.consumer)
        await self.checkpoints.reset(self.scan_consumer)
        for p in await self.parking.parked():
            await self.parking.release(p.projector, p.stream_id)

    async def hand_over(self, positions: dict[str, str], name: str) -> None:
        """Leave ``positions`` (the rebuild's, drained) for each live projector to take
        up when a service starts on the view named ``name``
        (:func:`take_hand_overs`): it then applies, again and idempotently, everything
        from there, so nothing the live projectors applied to the old view after the
        drain is missing from the new one. (Moving their checkpoints now would not do:
        a running service moves them on, applying to the old view.)"""
        for projector in self.projectors:
            consumer = hand_over_consumer(projector.name, name)
            await self.checkpoints.reset(consumer)
            for partition, token in positions.items():
                await self.checkpoints.put(consumer, partition, token, after=None)


def hand_over_consumer(projector: str, name: str) -> str:
    """Where a rebuild leaves ``projector``'s positions for a service on view ``name``."""
    return f"handover:{projector}:{name}"


async def take_hand_overs(
    checkpoints: CheckpointStore, live: Iterable[tuple[str, str]]
) -> dict[str, dict[str, str]]:
    """For each (projector, name of the view it writes now) that a rebuild handed over
    to, set the projector's feed positions to those handed over, and forget the hand
    over; return what was taken, by projector. A service calls it as it starts, before
    its projectors follow the feed."""
    taken: dict[str, dict[str, str]] = {}
    for projector, name in live:
        consumer = hand_over_consumer(projector, name)
        positions = await checkpoints.get(consumer)
        if not positions:
            continue
        await checkpoints.reset(projector)
        for partition, token in positions.items():
            await checkpoints.put(projector, partition, token, after=None)
        await checkpoints.reset(consumer)
        taken[projector] = positions
    return taken


def default_name(live: str, now: datetime | None = None) -> str:
    """A new physical name for a blue/green rebuild of the view named ``live``."""
    return f"{live}_{(now or datetime.now(UTC)):%Y%m%d%H%M%S}"
