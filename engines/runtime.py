"""The composition root: builds every piece from the settings, inside a function, and
closes them all. The HTTP API and the CLI both start here. Domains come from the
domain registry (:mod:`engines.domains`); nothing here names one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commands.bus import CommandBus
from commands.envelope import Command, CommandResult
from commands.handler import handler_for
from engines.auth import TokenVerifier, signing_key_problems
from engines.domain import Domain
from engines.settings import Settings
from projections.driver import FeedLoop, ProjectorStatus, projector_status
from projections.parking import ParkingStore
from projections.projector import Projector
from projections.rebuild import take_hand_overs
from projections.runner import ProjectorRunner
from projections.views import ViewStore
from routing.config import read_record_key
from routing.registry import Registry, ResolvedRoute, check_routes
from spine.errors import BackendUnavailable, RoutingError
from spine.feed import CheckpointStore, Feed
from spine.store import EventStore
from spine.upcasting import Upcasters, UpcastingEventStore

log = logging.getLogger(__name__)

#: The collector's thresholds while the service runs (CPython's default: 700, 10, 10).
#: A request or a projected batch makes thousands of short-lived objects; at the default
#: many live past a young collection, get promoted, and are scanned again by the full
#: ones, which were the largest single cost of a projector's catch-up.
SERVING_GC_THRESHOLDS = (20_000, 20, 20)


@contextlib.contextmanager
def serving_gc() -> Iterator[None]:
    """The collector as the service runs it once started: everything built so far (it
    lives as long as the process) frozen out of the full passes, which otherwise stall
    requests for tens of ms, and :data:`SERVING_GC_THRESHOLDS`. Restored on exit."""
    thresholds = gc.get_threshold()
    gc.collect()  # start-up's garbage goes now, not frozen for ever
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@dataclass
class Runtime:
    settings: Settings
    data_dir: Path
    registry: Registry
    spine: EventStore
    """The spine as stored (not upcast): for audit and hash-chain verification."""
    feed: Feed
    checkpoints: CheckpointStore
    parking: ParkingStore
    bus: CommandBus
    domains: tuple[Domain, ...]
    runners: dict[str, ProjectorRunner]
    """One runner per projector, by projector name."""
    loops: dict[str, FeedLoop]
    """One feed loop per projector, by projector name."""
    verifier: TokenVerifier
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def lab_routes(self) -> list[ResolvedRoute]:
        return self.registry.lab_routes

    def banner(self) -> str:
        lines = [f"engines: mode={self.settings.mode} data_dir={self.data_dir}"]
        if self.lab_routes:
            lines.append(
                "engines: LAB MODE: embedded SQLite backend, NOT FOR PRODUCTION "
                f"({len(self.lab_routes)} lab routes)"
            )
        return "\n".join(lines)

    async def dispatch(self, command: Command[Any]) -> CommandResult:
        """Carry ``command`` to its domain's handler over the routed command bus."""
        return await self.bus.dispatch(command)

    def view_of(self, projector: str) -> ViewStore:
        """The view store ``projector`` writes."""
        return self.runners[projector].views

    async def wait_for(self, projector: str, stream_id: str, seq: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until ``projector``'s view reflects ``seq`` of
        ``stream_id``; False if it does not in time, or if its store does not answer: the
        write is durable all the same (an answer of 503 would invite a duplicate)."""
        try:
            return await self.runners[projector].wait_for(stream_id, seq, timeout)
        except BackendUnavailable as exc:
            log.warning(
                "%s is written; its view %s cannot show it yet: %s", stream_id, projector, exc
            )
            return False

    async def status(self, projector: str) -> ProjectorStatus:
        return await projector_status(projector, self.feed, self.checkpoints, self.parking)

    async def catch_up(self) -> int:
        """Run every projector until the feed has nothing more right now (tools, tests)."""
        return sum([await loop.catch_up() for loop in self.loops.values()])


async def supervise(loop: FeedLoop, *, max_backoff: float = 5.0) -> None:
    """Keep a projector following the feed; a failure (a store down) is logged and retried
    with backoff, the batch replayed harmlessly. Poison events never get here: the runner
    parks them."""
    backoff = 0.1
    while True:
        try:
            await loop.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("projector %s failed; retrying in %.1fs", loop.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)


def view_projectors(domains: Sequence[Domain]) -> dict[str, list[Projector]]:
    """The projectors writing each view kind, in the domains' order."""
    by_kind: dict[str, list[Projector]] = {}
    for domain in domains:
        for projector in domain.projectors:
            by_kind.setdefault(projector.resource_kind, []).append(projector)
    return by_kind


async def open_view_store(
    registry: Registry, kind: str, projectors: Sequence[Projector]
) -> ViewStore:
    """The view store routed for ``kind``, with the query shapes of ``projectors`` (those
    writing it) declared, so the backend builds what answers them."""
    store = await registry.view_store(kind)
    for projector in projectors:
        await store.declare(projector.shapes)
    return store


async def _take_hand_overs(
    settings: Settings, checkpoints: CheckpointStore, domains: Sequence[Domain]
) -> None:
    live = [
        (p.name, settings.routes[p.resource_kind].name)
        for d in domains
        for p in d.projectors
        if p.resource_kind in settings.routes
    ]
    for projector, positions in (await take_hand_overs(checkpoints, live)).items():
        log.warning(
            "projector %s starts on a rebuilt view: from the rebuild's feed positions %s",
            projector,
            positions,
        )


def check_settings(settings: Settings, data_dir: Path | None) -> list[ResolvedRoute]:
    """The start-up check of a configuration file, every problem in one
    :class:`~spine.errors.RoutingError`: its routes and their connections
    (:func:`~routing.registry.check_routes`), and its signing key
    (:func:`~engines.auth.signing_key_problems`; ``data_dir`` is where a lab secret
    lives, ``None`` where it is not known). Returns the routes resolved."""
    keys = signing_key_problems(settings.auth, mode=settings.mode, data_dir=data_dir)
    kafka = settings.connections.kafka
    if kafka is not None and kafka.record_key_file is not None:
        try:
            read_record_key(kafka, data_dir or Path("."))
        except RoutingError as exc:
            keys.append(str(exc))
    return check_routes(settings, also=keys)


@contextlib.asynccontextmanager
async def bootstrap(
    settings: Settings,
    data_dir: Path,
    *,
    run_projectors: bool = True,
    upcasters: Upcasters | None = None,
    domains: Sequence[Domain] | None = None,
    create: bool = True,
) -> AsyncIterator[Runtime]:
    """Build the service from ``settings``. ``upcasters`` is where domains register the
    steps from old event schemas to current ones (none are needed yet); ``domains``
    defaults to the domain registry. ``create=False`` opens existing stores and secrets
    only (the CLI's tools), never an empty new deployment."""
    if domains is None:
        from engines.domains import DOMAINS

        domains = DOMAINS
    upcasters = upcasters or Upcasters()
    check_settings(settings, data_dir)  # every problem of the file at once
    registry = Registry(settings, data_dir, create=create)
    try:
        spine = await registry.event_store()
        feed = await registry.feed()
        checkpoints = await registry.checkpoint_store()
        parking = await registry.parking_store()
        bus = await registry.command_bus()
        # Handlers and projectors see current schemas; runtime.spine stays as stored.
        handler_spine = UpcastingEventStore(spine, upcasters)
        views = {
            kind: await open_view_store(registry, kind, projectors)
            for kind, projectors in view_projectors(domains).items()
        }
        if create:  # a service (not a tool): take up what a rebuild's switch handed over
            await _take_hand_overs(settings, checkpoints, domains)
        runners: dict[str, ProjectorRunner] = {}
        loops: dict[str, FeedLoop] = {}
        for domain in domains:
            handle = handler_for(handler_spine, domain.decider)
            for payload_type in domain.commands:
                bus.register(payload_type, handle)
            for projector in domain.projectors:
                if projector.name in runners:
                    raise ValueError(f"two projectors are named {projector.name!r}")
                runner = ProjectorRunner(
                    projector,
                    spine=spine,
                    views=views[projector.resource_kind],
                    parking=parking,
                    upcasters=upcasters,
                )
                runners[projector.name] = runner
                loops[projector.name] = FeedLoop(runner, feed, checkpoints)
        verifier = TokenVerifier(
            settings.auth, mode=settings.mode, data_dir=data_dir, create_secret=create
        )
        runtime = Runtime(
            settings,
            data_dir,
            registry,
            spine,
            feed,
            checkpoints,
            parking,
            bus,
            tuple(domains),
            runners,
            loops,
            verifier,
        )
        if run_projectors:
            runtime.tasks = [asyncio.create_task(supervise(loop)) for loop in loops.values()]
        try:
            yield runtime
        finally:
            for task in runtime.tasks:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
            for loop in loops.values():
                await loop.aclose()
    finally:
        await registry.aclose()
