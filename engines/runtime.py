"""The composition root: builds every piece from the settings, inside a function, and
closes them all. The HTTP API and the CLI both start here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from commands.bus import CommandBus
from commands.handler import execute
from commands.notes import CreateNote, DeleteNote, NotesDecider, UpdateNote
from engines.auth import TokenVerifier
from engines.settings import Settings
from projections.notes import NotesProjector
from projections.runner import ProjectorRunner
from projections.views import ViewStore
from routing.registry import Registry, ResolvedRoute
from spine.store import EventStore, GlobalFeed
from spine.upcasting import Upcasters, UpcastingEventStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    data_dir: Path
    registry: Registry
    spine: EventStore
    feed: GlobalFeed
    bus: CommandBus
    notes_view: ViewStore
    runners: dict[str, ProjectorRunner]
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


async def supervise(runner: ProjectorRunner, *, max_backoff: float = 5.0) -> None:
    """Keep a projector following the feed; a failure is logged and retried with backoff
    (the batch is replayed, harmlessly)."""
    backoff = 0.1
    while True:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("projector %s failed; retrying in %.1fs", runner.projector.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)


@contextlib.asynccontextmanager
async def bootstrap(
    settings: Settings,
    data_dir: Path,
    *,
    run_projectors: bool = True,
    upcasters: Upcasters | None = None,
) -> AsyncIterator[Runtime]:
    """Build the service from ``settings``. ``upcasters`` is where domains register the
    steps from old event schemas to current ones (none are needed yet)."""
    upcasters = upcasters or Upcasters()
    registry = Registry(settings, data_dir)
    registry.check_required()
    try:
        spine = await registry.event_store()
        feed = await registry.global_feed()
        checkpoints = await registry.checkpoint_store()
        projector = NotesProjector()
        notes_view = await registry.view_store(projector.resource_kind)
        runners = {
            projector.name: ProjectorRunner(
                projector,
                feed=feed,
                spine=spine,
                views=notes_view,
                checkpoints=checkpoints,
                upcasters=upcasters,
            )
        }
        bus = await registry.command_bus()
        # Handlers and projectors see current schemas; runtime.spine stays as stored,
        # for audit and hash-chain verification.
        handle_note = partial(execute, UpcastingEventStore(spine, upcasters), NotesDecider())
        for payload_type in (CreateNote, UpdateNote, DeleteNote):
            bus.register(payload_type, handle_note)
        verifier = TokenVerifier(settings.auth, mode=settings.mode, data_dir=data_dir)
        runtime = Runtime(
            settings, data_dir, registry, spine, feed, bus, notes_view, runners, verifier
        )
        if run_projectors:
            runtime.tasks = [asyncio.create_task(supervise(r)) for r in runners.values()]
        try:
            yield runtime
        finally:
            for task in runtime.tasks:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
    finally:
        await registry.aclose()
