"""Upcasters: old stored events become the current schema on read.

An upcaster is keyed by ``(event_type, schema_version)`` and returns the payload of
``schema_version + 1``. :class:`UpcastingEventStore` wraps any store and applies them
on every read, so handlers and projectors only ever see current schemas. The wrapped
store still returns the events as stored, which is what hash-chain verification needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from spine.errors import UpcastError
from spine.events import AppendResult, EventEnvelope, ExpectedVersion, Mode, NewEvent
from spine.importing import ImportResult
from spine.store import EventStore

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """A registry of one-step upcasters."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``@upcasters.register("note.created", 1)`` upcasts v1 to v2."""

        def add(step: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._steps:
                raise ValueError(f"an upcaster for {event_type} v{from_version} exists")
            self._steps[key] = step
            return step

        return add

    def upcast(self, event: EventEnvelope) -> EventEnvelope:
        if not self._steps:
            return event
        version, payload = event.schema_version, event.payload
        while (step := self._steps.get((event.event_type, version))) is not None:
            try:
                payload = step(dict(payload))
            except Exception as exc:
                raise UpcastError(
                    f"upcasting {event.event_type} v{version} of {event.stream_id} "
                    f"seq {event.seq} failed: {exc}"
                ) from exc
            version += 1
        if version == event.schema_version:
            return event
        return event.model_copy(update={"schema_version": version, "payload": payload})


class UpcastingEventStore:
    """An :class:`~spine.store.EventStore` that upcasts whatever the inner store reads."""

    def __init__(self, inner: EventStore, upcasters: Upcasters) -> None:
        self.inner = inner
        self.upcasters = upcasters

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        return await self.inner.append(stream_id, events, expected_version)

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        events = await self.inner.read_stream(stream_id, from_seq, to_seq)
        return [self.upcasters.upcast(e) for e in events]

    async def find_command(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        events = await self.inner.find_command(stream_id, command_id)
        return [self.upcasters.upcast(e) for e in events]

    async def import_events(
        self, stream_id: str, events: Sequence[EventEnvelope], *, dry_run: bool = False
    ) -> ImportResult:
        """Imported events are as stored elsewhere: written as they are, never upcast."""
        return await self.inner.import_events(stream_id, events, dry_run=dry_run)

    async def scan(
        self,
        *,
        domain: str | None = None,
        tenant_id: str | None = None,
        mode: Mode | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[EventEnvelope]:
        scanned = self.inner.scan(
            domain=domain, tenant_id=tenant_id, mode=mode, batch_size=batch_size
        )
        async for event in scanned:
            yield self.upcasters.upcast(event)
