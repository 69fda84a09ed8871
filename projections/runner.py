"""Runs one projector over the global feed: durable checkpoints, idempotent and
monotonic apply, gap repair from the spine, and read-your-writes waits.

One batch: read up to ``batch_size`` events after the checkpoint; load the current
records they touch (tombstones included) in one call, or from a bounded cache of the
records this runner wrote; apply in order, skipping any
event whose seq is not above the record's version and first reading any missing seqs
from the spine; write the changed records in one call (each write conditional on its
version); then move the checkpoint. A crash anywhere replays the batch, harmlessly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from projections.projector import Projector
from projections.views import CheckpointStore, ViewRecord, ViewStore
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.store import EventStore, GlobalFeed
from spine.upcasting import Upcasters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectorStatus:
    name: str
    checkpoint: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.checkpoint, 0)


class ProjectorRunner:
    def __init__(
        self,
        projector: Projector,
        *,
        feed: GlobalFeed,
        spine: EventStore,
        views: ViewStore,
        checkpoints: CheckpointStore,
        batch_size: int = 1000,
        idle_timeout: float = 0.5,
        upcasters: Upcasters | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.projector = projector
        self.feed = feed
        self.spine = spine
        self.views = views
        self.checkpoints = checkpoints
        self.batch_size = batch_size
        self.idle_timeout = idle_timeout
        self.upcasters = upcasters
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ViewRecord] = OrderedDict()
        self._prefix = projector.domain + "/"
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.gaps_repaired = 0
        self._position: int | None = None
        self._prefetch: tuple[int, asyncio.Task[list[tuple[int, EventEnvelope]]]] | None = None

    async def status(self) -> ProjectorStatus:
        checkpoint = await self.checkpoints.get(self.projector.name)
        return ProjectorStatus(self.projector.name, checkpoint, await self.feed.head_position())

    async def _checkpoint(self) -> int:
        """The durable checkpoint, read once; this runner keeps it current after that."""
        if self._position is None:
            self._position = await self.checkpoints.get(self.projector.name)
        return self._position

    async def _read_after(self, position: int) -> list[tuple[int, EventEnvelope]]:
        """The batch after ``position``: the one read ahead if it starts there."""
        if self._prefetch is not None and self._prefetch[0] == position:
            task = self._prefetch[1]
            self._prefetch = None
            return await task
        self._drop_prefetch()
        return await self.feed.read_all(position, self.batch_size)

    def _drop_prefetch(self) -> None:
        if self._prefetch is not None:
            task = self._prefetch[1]
            self._prefetch = None
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def run_batch(self) -> int:
        """Apply one batch after the checkpoint; return how many feed events it read.

        A full batch suggests more is waiting: the next one is read while this one is
        applied (reading depends on nothing this batch writes)."""
        checkpoint = await self._checkpoint()
        batch = await self._read_after(checkpoint)
        if not batch:
            return 0
        if len(batch) == self.batch_size:
            after = batch[-1][0]
            self._prefetch = (
                after,
                asyncio.create_task(self.feed.read_all(after, self.batch_size)),
            )
        mine = [e for _, e in batch if e.stream_id.startswith(self._prefix)]
        if self.upcasters is not None:
            mine = [self.upcasters.upcast(e) for e in mine]
        if mine:
            await self._apply(mine)
        await self.checkpoints.put(self.projector.name, batch[-1][0])
        self._position = batch[-1][0]
        return len(batch)

    async def _apply(self, events: list[EventEnvelope]) -> None:
        key_of = self.projector.view_key
        streams = {e.stream_id: key_of(e.stream_id) for e in events}
        current = await self._current(set(streams.values()))
        changed: set[str] = set()
        for event in events:
            key = streams[event.stream_id]
            view = current.get(key)
            version = view.version if view else 0
            if event.seq <= version:
                continue  # applied before: redelivery or replay
            if event.seq > version + 1:
                view = await self._repair(view, event, version)
            view = self._step(view, event)
            current[key] = view
            changed.add(key)
        if changed:
            try:
                written = await self.views.put_many([current[k] for k in changed])
            except BaseException:
                self._cache.clear()  # unknown what was written: read afresh next time
                raise
            if written < len(changed):
                # another writer is ahead on some records: take the store's word for them
                ahead = await self.views.get_many(list(changed), include_deleted=True)
                for key, record in ahead.items():
                    if record.version > current[key].version:
                        current[key] = record
            self._remember({k: current[k] for k in changed})
        for stream_id, key in streams.items():
            if stream_id in self._waiters and key in current:
                self._wake(stream_id, current[key].version)

    async def _current(self, keys: set[str]) -> dict[str, ViewRecord]:
        """The records under ``keys`` (tombstones included), from the cache where it has
        them. The cache is safe even if another runner writes the view too: a record at
        a given version is the same whoever computes it, and puts are conditional."""
        found = {k: self._cache[k] for k in keys if k in self._cache}
        missing = [k for k in keys if k not in found]
        if missing:
            loaded = await self.views.get_many(missing, include_deleted=True)
            found.update(loaded)
            self._remember(loaded)
        return found

    def _remember(self, records: Mapping[str, ViewRecord]) -> None:
        for key, record in records.items():
            self._cache[key] = record
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _step(self, view: ViewRecord | None, event: EventEnvelope) -> ViewRecord:
        record = self.projector.apply(view, event)
        if record.version != event.seq:
            raise IntegrityError(
                f"projector {self.projector.name} produced version {record.version} "
                f"for {event.stream_id} seq {event.seq}"
            )
        return record

    async def _repair(
        self, view: ViewRecord | None, event: EventEnvelope, version: int
    ) -> ViewRecord | None:
        """Read the seqs missing before ``event`` from the spine (the truth) and apply."""
        missing = await self.spine.read_stream(event.stream_id, version + 1, event.seq - 1)
        if self.upcasters is not None:
            missing = [self.upcasters.upcast(e) for e in missing]
        if len(missing) != event.seq - 1 - version:
            raise IntegrityError(
                f"{event.stream_id}: spine holds {len(missing)} events between seq "
                f"{version + 1} and {event.seq - 1}"
            )
        log.warning(
            "projector %s repaired a gap in %s: seq %d..%d read from the spine",
            self.projector.name,
            event.stream_id,
            version + 1,
            event.seq - 1,
        )
        self.gaps_repaired += 1
        for earlier in missing:
            view = self._step(view, earlier)
        return view

    async def catch_up(self) -> int:
        """Apply batches until the feed is exhausted; return how many events were read."""
        total = 0
        try:
            while (n := await self.run_batch()) > 0:
                total += n
        finally:
            self._drop_prefetch()
        return total

    async def run(self) -> None:
        """Follow the feed until cancelled."""
        try:
            while True:
                if await self.run_batch() == 0:
                    await self.feed.wait_for_commit(await self._checkpoint(), self.idle_timeout)
        finally:
            self._drop_prefetch()

    # -- read-your-writes -----------------------------------------------------------------

    def _wake(self, stream_id: str, version: int) -> None:
        waiting = self._waiters.get(stream_id, [])
        still = []
        for seq, future in waiting:
            if seq <= version:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                still.append((seq, future))
        if still:
            self._waiters[stream_id] = still
        else:
            self._waiters.pop(stream_id, None)

    async def wait_for(self, stream_id: str, seq: int, timeout: float) -> bool:
        """Wait until the view of ``stream_id`` reflects ``seq``; False on timeout."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(stream_id, []).append((seq, future))
        try:
            key = self.projector.view_key(stream_id)
            found = await self.views.get_many([key], include_deleted=True)
            if key in found and found[key].version >= seq:
                return True
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            entries = self._waiters.get(stream_id)
            if entries is not None:
                entries[:] = [(s, f) for s, f in entries if f is not future]
                if not entries:
                    self._waiters.pop(stream_id, None)
