"""The command envelope: who asks, what for, against which version."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from spine.events import EventEnvelope, NewEvent, Scope, Source, new_id

P = TypeVar("P", bound=BaseModel)


class Command(BaseModel, Generic[P]):
    """A request to change one stream. ``scope`` is server-derived (a verified token and
    the server's mode), never a client's claim."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    scope: Scope
    expected_version: int | None = Field(default=None, ge=0)
    """The stream version the caller last saw (e.g. HTTP If-Match); ``None``: the current
    version, retried on a concurrent write."""
    source: Source = "ui"
    run_id: str | None = Field(default=None, max_length=128)
    trace_id: str | None = Field(default=None, max_length=64)
    payload: P

    def event(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        scope: Scope | None = None,
        step_id: str | None = None,
    ) -> NewEvent:
        """An event produced by this command, carrying its scope and provenance."""
        s = scope or self.scope
        return NewEvent(
            event_type=event_type,
            tenant_id=s.tenant_id,
            mode=s.mode,
            user_id=s.user_id,
            surface_id=s.surface_id,
            project_id=s.project_id,
            run_id=self.run_id or self.command_id,
            step_id=step_id or event_type,
            trace_id=self.trace_id,
            source=self.source,
            command_id=self.command_id,
            payload=payload,
        )


class CommandResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream_id: str
    version: int
    events: tuple[EventEnvelope, ...]
    deduplicated: bool = False
