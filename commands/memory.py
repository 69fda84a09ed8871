"""Session memory: one stream per session of a user,
``memory/{tenant}/{mode}/{user_id}/{session_id}``, or
``memory/{tenant}/{mode}/{user_id}/{session_id}/{project_id}`` when the caller's scope
names a project (the part counts differ, so the two shapes never collide).

Commands set a key to any JSON value (with an optional time to live) and delete a key.
The stream is the caller's own: it is named by their user id, so nobody else's command
can reach it.

Expiry counts from the recorded time of the event that set the key
(``recorded_at + ttl_seconds``: :func:`spine.events.expiry`), here and in the view, so folding the
same events again (a rebuild) always gives the same expiry and never revives a key. The
decider is pure, so "now" comes in the command (``at``, the server's time of the
request): a key whose expiry is at or before ``at`` is absent, exactly as a deleted one.

Preconditions are per key, not per stream: a key's version is the seq of the event that
last set it (its ETag), and ``expected_key_version`` is checked against it in
:meth:`MemoryDecider.decide`. The handler still appends at the exact folded stream
version, so two writers racing on stale state never both win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from commands.envelope import Command, CommandResult, granted, idempotent_id
from commands.sizes import encoded_size
from spine.errors import (
    AlreadyExists,
    ConcurrencyError,
    InvalidField,
    NotFound,
    ScopeMismatch,
    ValueTooLarge,
)
from spine.events import (
    MAX_TTL_SECONDS,
    EventEnvelope,
    Identifier,
    NewEvent,
    Scope,
    expiry,
    new_id,
)
from spine.streams import stream_id

DOMAIN: Final = "memory"
SET: Final = "memory.set"
DELETED: Final = "memory.deleted"

#: The largest value a key holds, as encoded JSON (above it: 413, nothing written).
MAX_VALUE_BYTES: Final = 256 * 1024

TtlSeconds = Annotated[int, Field(gt=0, le=MAX_TTL_SECONDS, strict=True)]
"""A time to live: whole seconds, at least 1 (a float or a boolean is refused)."""


class SetMemory(BaseModel):
    """Set ``key`` of a session to ``value``, durable or for ``ttl_seconds``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: Identifier
    key: Identifier
    value: JsonValue
    ttl_seconds: TtlSeconds | None = None
    """``None``: durable. The HTTP layer resolves a route's default before this point."""
    at: AwareDatetime
    """The server's time of the request: what a key's expiry is compared with."""
    expected_key_version: int | None = Field(default=None, ge=0)
    """The key's version the caller last saw (``If-Match``); ``0``: the key must be
    absent or expired (``If-None-Match: *``); ``None``: any."""
    require_live: bool = False
    """Only if the key is live, whatever its version (``If-Match: *``)."""


class DeleteMemory(BaseModel):
    """Delete ``key`` of a session; an absent or expired key is not found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: Identifier
    key: Identifier
    at: AwareDatetime
    expected_key_version: int | None = Field(default=None, ge=0)


@dataclass(frozen=True, slots=True)
class KeyState:
    version: int
    """The seq of the event that last set the key."""
    expires_at: datetime | None = None

    def live(self, at: datetime) -> bool:
        return self.expires_at is None or self.expires_at > at


@dataclass(frozen=True)
class MemoryState:
    version: int = 0
    """The stream's version (the seq of its last event)."""
    keys: Mapping[str, KeyState] = field(default_factory=dict)
    """Every key set and not deleted since (expired ones included: see :meth:`version_of`)."""

    def version_of(self, key: str, at: datetime) -> int:
        """The version of ``key`` as seen at ``at``: ``0`` if absent, deleted or expired."""
        state = self.keys.get(key)
        return state.version if state is not None and state.live(at) else 0


def memory_stream(scope: Scope, session_id: str) -> str:
    """The stream of ``session_id`` for the user (and project, if any) of ``scope``."""
    if scope.user_id is None:
        raise InvalidField(("token", "user_id"), "session memory belongs to a user")
    parts: tuple[str, ...] = (scope.user_id, session_id)
    if scope.project_id is not None:
        parts += (scope.project_id,)
    return stream_id(DOMAIN, scope.tenant_id, scope.mode, *parts)


class MemoryDecider:
    def stream_id(self, command: Command[Any]) -> str:
        return memory_stream(command.scope, command.payload.session_id)

    def initial(self) -> MemoryState:
        return MemoryState()

    def evolve(self, state: MemoryState, event: EventEnvelope) -> MemoryState:
        keys = dict(state.keys)
        if event.event_type == SET:
            ttl = event.payload.get("ttl_seconds")
            keys[event.payload["key"]] = KeyState(event.seq, expiry(event.recorded_at, ttl))
        elif event.event_type == DELETED:
            keys.pop(event.payload["key"], None)
        return MemoryState(version=event.seq, keys=keys)

    def decide(self, state: MemoryState, command: Command[Any]) -> Sequence[NewEvent]:
        payload = command.payload
        scope = command.scope
        if scope.surface_id is None:
            raise InvalidField(("query", "surface_id"), "session memory needs a surface_id")
        if command.grants is not None and not granted(command.grants, scope):
            raise ScopeMismatch(
                f"surface {scope.surface_id!r} and project {scope.project_id!r} are not "
                "granted to the caller"
            )
        current = state.version_of(payload.key, payload.at)
        if isinstance(payload, SetMemory):
            size = encoded_size(payload.value, "value")
            if size > MAX_VALUE_BYTES:
                raise ValueTooLarge(
                    f"value is {size} bytes encoded; the limit is {MAX_VALUE_BYTES}"
                )
            _check(self.stream_id(command), payload.key, current, payload.expected_key_version)
            if payload.require_live and current == 0:
                raise ConcurrencyError(
                    f"{self.stream_id(command)}#{payload.key}", "a live key (If-Match: *)", 0
                )
            data = {"key": payload.key, "value": payload.value, "ttl_seconds": payload.ttl_seconds}
            return [command.event(SET, data)]
        if isinstance(payload, DeleteMemory):
            if current == 0:
                raise NotFound(f"key {payload.key!r} of session {payload.session_id!r} not found")
            _check(self.stream_id(command), payload.key, current, payload.expected_key_version)
            return [command.event(DELETED, {"key": payload.key})]
        raise TypeError(f"session memory cannot handle {type(payload).__name__}")


def _check(stream: str, key: str, current: int, expected: int | None) -> None:
    """Refuse (nothing written) unless the key is at the version the caller expects."""
    if expected is not None and expected != current:
        raise ConcurrencyError(f"{stream}#{key}", expected, current)


def memory_command_id(scope: Scope, idempotency_key: str | None) -> str:
    """A new command id; with an idempotency key, one derived from it (per tenant, mode
    and user), so a retried request is the same command and the spine answers it with
    the original result. The spine knows a command id per stream, so a key is
    recognised within the session it was first used in: the same key sent for another
    session is a new write there."""
    if idempotency_key is None:
        return new_id()
    return "memory:" + idempotent_id(scope, DOMAIN, idempotency_key)


def same_request_or_refuse(command: Command[Any], result: CommandResult) -> None:
    """A repeated write must be the same request: an idempotency key reused for another
    one (another key, value, time to live, surface, or a delete for a set) is refused
    rather than answered with what the first one did."""
    if not result.deduplicated:
        return
    original = result.events[0]
    payload = command.payload
    if isinstance(payload, SetMemory):
        wanted = (
            SET,
            {"key": payload.key, "value": payload.value, "ttl_seconds": payload.ttl_seconds},
        )
    else:
        wanted = (DELETED, {"key": payload.key})
    if (original.event_type, original.payload) != wanted or (
        original.surface_id != command.scope.surface_id
    ):
        raise AlreadyExists("this Idempotency-Key was used for a different request; use a new key")
