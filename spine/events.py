"""The event envelope (DESIGN §3) and the values an append takes and returns.

A caller builds :class:`NewEvent` values; the store seals them into
:class:`EventEnvelope` values by assigning ``stream_id``, ``seq``, ``recorded_at`` and
the hash chain. Both are frozen pydantic models and encode with orjson.
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Mode = Literal["lab", "saas", "enterprise", "system"]
MODES: Final[tuple[Mode, ...]] = ("lab", "saas", "enterprise", "system")

Family = Literal[
    "domain", "analytics", "audit", "safety", "rl", "rlha", "tuning", "budget", "strategy_lock"
]
Source = Literal["ui", "agent", "connector", "tool"]

#: What an identifier in a scope or a stream-id segment may look like: no slashes, no
#: whitespace, no path tricks, bounded length.
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")]

#: A timestamp inside an event: the one text form of :func:`spine.codec.timestamp_text`
#: (UTC, microseconds, ``Z``), so it sorts as text and hashes the same everywhere.
Timestamp = Annotated[
    str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
]

GENESIS_HASH: Final = "0" * 64

#: The longest time to live a record may have: every store holds it as a 32-bit int.
MAX_TTL_SECONDS: Final = 2**31 - 1


def expiry(recorded_at: datetime, ttl_seconds: int | None) -> datetime | None:
    """When a record written by an event recorded at ``recorded_at`` with a time to live
    of ``ttl_seconds`` expires (``None``: never). Counted from the event's recorded time,
    never from when it is applied, so a decider and a view (and a rebuild of it) agree."""
    return None if ttl_seconds is None else recorded_at + timedelta(seconds=ttl_seconds)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then random."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new time-ordered id as text."""
    return str(uuid7())


class StreamState(enum.Enum):
    """Expected versions that are not a seq."""

    NO_STREAM = "no_stream"
    """The stream must not exist yet."""
    ANY = "any"
    """Append whatever the stream's version (still atomic, still chained)."""


NO_STREAM: Final = StreamState.NO_STREAM
ANY: Final = StreamState.ANY
ExpectedVersion = int | StreamState


class Scope(BaseModel):
    """Who a record belongs to. Server-derived, never taken from a client's word."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Identifier
    mode: Mode
    user_id: Identifier | None = None
    surface_id: Identifier | None = None
    project_id: Identifier | None = None


#: What a provenance value taken from a client may look like: visible ASCII, no spaces.
ProvenanceValue = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]
ShortProvenanceValue = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]


class Provenance(BaseModel):
    """Where a write comes from beyond its scope: the agent, run, thread and step that made
    it, the event it follows from, and the trace it belongs to. Every field is optional,
    and absent means absent: nothing is made up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: ProvenanceValue | None = None
    run_id: ProvenanceValue | None = None
    thread_id: ProvenanceValue | None = None
    step_id: ProvenanceValue | None = None
    parent_event_id: ShortProvenanceValue | None = None
    trace_id: ShortProvenanceValue | None = None
    span_id: ShortProvenanceValue | None = None


class NewEvent(BaseModel):
    """An event as a command handler produces it, before the store seals it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_id)
    event_type: EventType
    family: Family = "domain"
    schema_version: int = Field(default=1, ge=1)
    # identity scope
    tenant_id: Identifier
    mode: Mode
    user_id: Identifier | None = None
    surface_id: Identifier | None = None
    project_id: Identifier | None = None
    # provenance and causality: absent means absent (None), never a made-up value
    agent_id: str | None = Field(default=None, min_length=1, max_length=128)
    run_id: str | None = Field(default=None, min_length=1, max_length=128)
    step_id: str | None = Field(default=None, min_length=1, max_length=128)
    thread_id: str | None = Field(default=None, max_length=128)
    parent_event_id: str | None = Field(default=None, max_length=64)
    trace_id: str | None = Field(default=None, max_length=64)
    span_id: str | None = Field(default=None, max_length=64)
    occurred_at: Timestamp | None = None
    """When the client says the event happened (its own clock, kept as given beside the
    server's ``recorded_at``); absent for most events."""
    source: Source
    command_id: str = Field(min_length=1, max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict)

    @property
    def scope(self) -> Scope:
        return Scope(
            tenant_id=self.tenant_id,
            mode=self.mode,
            user_id=self.user_id,
            surface_id=self.surface_id,
            project_id=self.project_id,
        )


class EventEnvelope(NewEvent):
    """An event as the spine holds it: sealed, numbered and chained."""

    stream_id: str
    seq: int = Field(ge=1)
    route: Literal["event_spine"] = "event_spine"
    recorded_at: datetime
    prev_hash: str
    hash: str


class AppendResult(BaseModel):
    """What an append answers: the stream's new version and the sealed events.

    ``deduplicated`` is true when the command id was already in the stream: the
    original events are returned and nothing was written.
    """

    model_config = ConfigDict(frozen=True)

    stream_id: str
    first_seq: int
    last_seq: int
    events: tuple[EventEnvelope, ...]
    deduplicated: bool = False

    @property
    def version(self) -> int:
        return self.last_seq
