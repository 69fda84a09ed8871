"""Telemetry: the analytics, safety, RL, RLHA and tuning families (DESIGN §5), one stream
per tenant, mode, family and run: ``{family}/{tenant}/{mode}/{run_id}``, so one run's
telemetry of a family is ordered. Each family is a stream domain of its own, so a
projector follows just the families it shows (the audit view: ``safety``, not ``rl``).

An event is emitted in the seed's shape (:class:`EmittedEvent`): ``event_type``,
``run_id``, ``step_id``, ``parent_event_id``, ``source``, ``payload``, ``causality``
(``trace_id``, ``span_id``), and the client's own time as ``occurred_at``. Its type
names its family first (``rl.reward``, ``analytics.page_viewed``, ``safety.decision``):
one event type never means two families. Tenant, mode, user, surface, project and the
principal's kind come from the token, never from the event; a ``source`` the client
gives must be the token's.

* ``audit`` is written by the server alone (refusals, :mod:`engines.audit`); ``budget``
  and ``strategy_lock`` by their own domains. None of them can be emitted.
* ``safety`` needs the ``safety`` role (checked where roles are known: the HTTP edge).

Emitting only appends: nothing is decided against a stream's state, so a command is
appended with :data:`~spine.events.ANY` (no read of the stream first) and concurrent
emitters of one run share a group commit. It is still idempotent: a command id the
stream holds answers the original events (a retried batch with the same
``Idempotency-Key`` writes nothing again), and a key reused for another batch is
refused (:func:`refuse_reused_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, Self, get_args

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from commands.envelope import Command
from commands.handler import AppendOnly
from commands.sizes import fits
from commands.text import VisibleLine
from commands.times import ClientTime
from spine.appending import MAX_PAYLOAD_DEPTH, too_deep
from spine.errors import AlreadyExists
from spine.events import (
    EventEnvelope,
    EventType,
    Family,
    Identifier,
    NewEvent,
    Provenance,
    ProvenanceValue,
    ShortProvenanceValue,
    Source,
)
from spine.streams import stream_id

#: The domain's name (and its idempotency keys' namespace); its streams are its families'.
DOMAIN: Final = "telemetry"

#: The families a client may emit (``audit``, ``budget`` and ``strategy_lock`` are
#: written by the server and the domains).
EmittedFamily = Literal["analytics", "safety", "rl", "rlha", "tuning"]
EMITTED_FAMILIES: Final[tuple[str, ...]] = get_args(EmittedFamily)
#: Families a client names that only the server writes, and why.
SERVER_FAMILIES: Final = {
    "audit": "audit events are written by the server, never emitted",
    "budget": "budget events are written by the budget endpoints",
    "strategy_lock": "strategy-lock events are written by the strategy-lock endpoints",
    "domain": "domain events are written by their domains' endpoints",
}

#: The most events one request emits (every backend's atomic write takes 100).
MAX_BATCH: Final = 100
#: The largest payload of one event, encoded (every backend's item takes it whole).
MAX_PAYLOAD_BYTES: Final = 64 * 1024

SAFETY_DECISION: Final = "safety.decision"


class Causality(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    trace_id: ShortProvenanceValue | None = None
    span_id: ShortProvenanceValue | None = None


def check_payload(value: dict[str, Any], what: str = "payload") -> dict[str, Any]:
    """``value`` if the spine takes it as an event's payload whole; ``ValueError`` (a 422
    naming the field) if it is over :data:`MAX_PAYLOAD_BYTES` encoded or nests deeper
    than the spine takes. Checked before anything is appended, so one bad event of a
    batch that spans several streams writes none of them."""
    fits(value, MAX_PAYLOAD_BYTES, what)
    if too_deep(value):
        raise ValueError(f"{what} nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    return value


def _payload(value: dict[str, Any]) -> dict[str, Any]:
    return check_payload(value)


Payload = Annotated[dict[str, Any], AfterValidator(_payload)]


class EmittedEvent(BaseModel):
    """One event as a client emits it: the seed's event shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: EventType = Field(
        description="`{family}.{name}`, e.g. `rl.reward`: the family comes first",
        max_length=128,
    )
    family: StrictStr | None = Field(
        default=None,
        max_length=32,
        description="optional; if given, the event type's first segment",
    )
    run_id: Identifier
    step_id: ProvenanceValue
    parent_event_id: ShortProvenanceValue | None = None
    source: Source | None = Field(
        default=None, description="optional; if given, the token's principal kind"
    )
    payload: Payload
    causality: Causality = Causality()
    occurred_at: ClientTime | None = Field(
        default=None, description="the client's time of the event (RFC 3339, with offset)"
    )

    @model_validator(mode="after")
    def _family_first(self) -> Self:
        named = self.event_type.split(".", 1)[0]
        if self.family is not None and self.family != named:
            raise ValueError(
                f"family {self.family!r} disagrees with event_type {self.event_type!r}, "
                f"whose first segment names family {named!r}"
            )
        if named in SERVER_FAMILIES:
            raise ValueError(f"event_type {self.event_type!r}: {SERVER_FAMILIES[named]}")
        if named not in EMITTED_FAMILIES:
            raise ValueError(
                f"event_type {self.event_type!r} must begin with its family, one of "
                f"{', '.join(EMITTED_FAMILIES)} (e.g. `rl.reward`)"
            )
        return self

    @property
    def emitted_family(self) -> EmittedFamily:
        family: EmittedFamily = self.event_type.split(".", 1)[0]  # type: ignore[assignment]
        return family


class Emitted(BaseModel):
    """One event of a :class:`EmitEvents` command: what differs from event to event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: EventType
    step_id: ProvenanceValue
    parent_event_id: ShortProvenanceValue | None = None
    trace_id: ShortProvenanceValue | None = None
    span_id: ShortProvenanceValue | None = None
    occurred_at: str | None = None
    payload: dict[str, Any]

    @classmethod
    def of(cls, event: EmittedEvent) -> Emitted:
        return cls(
            event_type=event.event_type,
            step_id=event.step_id,
            parent_event_id=event.parent_event_id,
            trace_id=event.causality.trace_id,
            span_id=event.causality.span_id,
            occurred_at=event.occurred_at,
            payload=event.payload,
        )


class EmitEvents(BaseModel):
    """Append ``events`` to one run's stream of one family, all or nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: EmittedFamily
    run_id: Identifier
    events: tuple[Emitted, ...] = Field(min_length=1, max_length=MAX_BATCH)


def batches(events: Sequence[EmittedEvent]) -> list[EmitEvents]:
    """``events`` grouped into one command payload per stream (family and run), each in
    the order given."""
    grouped: dict[tuple[EmittedFamily, str], list[Emitted]] = {}
    for event in events:
        key = (event.emitted_family, event.run_id)
        grouped.setdefault(key, []).append(Emitted.of(event))
    return [
        EmitEvents(family=family, run_id=run_id, events=tuple(items))
        for (family, run_id), items in grouped.items()
    ]


def _as_recorded(event: NewEvent) -> tuple[Any, ...]:
    """What makes two emitted events the same request: everything a client chose
    (payload compared as JSON, so ``true`` is not ``1``)."""
    return (
        event.event_type,
        orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS),
        event.occurred_at,
        event.surface_id,
        event.project_id,
        event.source,
        *(getattr(event, name) for name in Provenance.model_fields),
    )


def refuse_reused_key(result_events: Sequence[EventEnvelope], command: Command[EmitEvents]) -> None:
    """A repeated batch (its command id derived from an ``Idempotency-Key``) must be the
    same batch: a key reused for other events is refused, not answered with the first."""
    again = TelemetryRecorder().record(command)
    same = len(result_events) == len(again) and all(
        _as_recorded(e) == _as_recorded(n) for e, n in zip(result_events, again, strict=True)
    )
    if not same:
        raise AlreadyExists("this Idempotency-Key was used for a different request; use a new key")


class TelemetryRecorder(AppendOnly[Command[EmitEvents]]):
    """Appends emitted events to their run's stream (see the module's docstring)."""

    def stream_id(self, command: Command[EmitEvents]) -> str:
        s, p = command.scope, command.payload
        return stream_id(p.family, s.tenant_id, s.mode, p.run_id)

    def record(self, command: Command[EmitEvents]) -> Sequence[NewEvent]:
        given = command.provenance
        family: Family = command.payload.family
        return [
            command.event(
                e.event_type,
                e.payload,
                family=family,
                occurred_at=e.occurred_at,
                provenance=Provenance(
                    agent_id=given.agent_id,
                    run_id=command.payload.run_id,
                    thread_id=given.thread_id,
                    step_id=e.step_id,
                    parent_event_id=e.parent_event_id or given.parent_event_id,
                    trace_id=e.trace_id or given.trace_id,
                    span_id=e.span_id or given.span_id,
                ),
            )
            for e in command.payload.events
        ]


# -- safety decisions -----------------------------------------------------------------

Text = Annotated[StrictStr, Field(min_length=1, max_length=2000), VisibleLine]
Name = Annotated[StrictStr, Field(min_length=1, max_length=128), VisibleLine]


class GateResult(BaseModel):
    """One gate of a chain, as it decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: Name
    passed: StrictBool
    reason: Text | None = None


class Failure(BaseModel):
    """Why a decision denied, or what failed while deciding (a gate that errored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Name
    message: Text
    gate: Name | None = None
    details: Payload = Field(default_factory=dict)


class SafetyDecision(BaseModel):
    """``POST /safety/decisions``: one decision, allowed or denied, with why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: Identifier
    step_id: ProvenanceValue
    decision: Literal["allowed", "denied"]
    justification: Text
    action: Name | None = Field(default=None, description="what was to be executed")
    gates: tuple[GateResult, ...] = Field(default=(), max_length=64)
    failure: Failure | None = None
    parent_event_id: ShortProvenanceValue | None = None
    causality: Causality = Causality()
    occurred_at: ClientTime | None = None

    @model_validator(mode="after")
    def _denied_says_why(self) -> Self:
        if self.decision == "denied" and self.failure is None:
            raise ValueError("a denied decision needs `failure` (its code and message)")
        check_payload(self.payload(), "the decision")
        return self

    def payload(self) -> dict[str, Any]:
        """The event's payload: the fields given but those the envelope holds (run, step,
        parent, causality, time)."""
        return self.model_dump(
            mode="json",
            exclude={"run_id", "step_id", "parent_event_id", "causality", "occurred_at"},
            exclude_unset=True,
            exclude_none=True,
        )

    def as_event(self) -> EmittedEvent:
        """The decision as a ``safety.decision`` event."""
        payload = self.payload()
        return EmittedEvent(
            event_type=SAFETY_DECISION,
            run_id=self.run_id,
            step_id=self.step_id,
            parent_event_id=self.parent_event_id,
            payload=payload,
            causality=self.causality,
            occurred_at=self.occurred_at,
        )
