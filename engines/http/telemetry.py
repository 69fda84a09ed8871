"""Telemetry over HTTP: emit (``POST /events``, ``POST /safety/decisions``) and query
(``GET /events``, ``GET /audit``, ``GET /analytics/counts``), every query through a
routed view (:mod:`projections.telemetry`), never a scan of the spine.

Emitting is acknowledged only after the durable append: ``201`` once the views reflect
it, ``202`` if they do not within the configured wait (it is on the spine either way);
an error means nothing of that stream was written. Tenant, mode, user, surface, project
and source come from the token (and ``X-Surface-Id`` / ``X-Project-Id`` or the query,
within its grants). A batch is one append per stream (family and run), each all or
nothing; if the store fails part-way, a retry with the same ``Idempotency-Key`` writes
exactly what is missing.

Reads: a caller sees their own events, within their grants; with the ``auditor`` role,
the tenant's (``user_id`` then filters by user). ``GET /audit`` needs ``auditor``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from commands.envelope import Command, CommandResult, idempotent_id
from commands.telemetry import (
    DOMAIN,
    MAX_BATCH,
    SAFETY_DECISION,
    EmitEvents,
    EmittedEvent,
    SafetyDecision,
    TelemetryRecorder,
    batches,
    refuse_reused_key,
)
from commands.times import ClientTime, Day
from engines.auth import Principal
from engines.http.access import require_role
from engines.http.errors import AUTHENTICATED, problem_responses
from engines.http.identity import Auth, deny, requested, runtime_of, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.provenance import provenance_of
from engines.http.responses import OrjsonResponse
from engines.http.writes import IdempotencyKey
from projections.telemetry import ALL_USERS, DAY, index_query
from projections.views import Filter, FilterValue, Grant, ViewQuery, ViewRecord
from spine.codec import timestamp_text
from spine.errors import InvalidField, ScopeMismatch
from spine.events import EventType, Identifier, Scope

if TYPE_CHECKING:
    from engines.runtime import Runtime

EVENTS_VIEW = "events"
AUDIT_VIEW = "audit"
ANALYTICS_VIEW = "analytics"
#: The views each emitted family feeds, which a write waits for.
_VIEWS_OF = {"safety": (EVENTS_VIEW, AUDIT_VIEW), "analytics": (EVENTS_VIEW, ANALYTICS_VIEW)}


# -- bodies ---------------------------------------------------------------------------


class EventBatch(BaseModel):
    """A batch: every event valid, or none is written."""

    model_config = ConfigDict(extra="forbid")

    events: list[EmittedEvent] = Field(min_length=1, max_length=MAX_BATCH)


def _body_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "event"


EmitBody = Annotated[
    Annotated[EmittedEvent, Tag("event")] | Annotated[EventBatch, Tag("batch")],
    Discriminator(_body_kind),
    Body(description='one event, or `{"events": [...]}` (at most 100)'),
]


class Emitted(BaseModel):
    event_id: str
    stream_id: str
    seq: int
    family: str
    event_type: str
    run_id: str
    step_id: str
    recorded_at: str


class EmittedOut(BaseModel):
    events: list[Emitted] = Field(description="in the order given")
    status: Literal["recorded", "accepted"] = Field(
        description="recorded: the views reflect it; accepted: durable, views not yet"
    )
    deduplicated: bool = Field(description="a retry: these were recorded by the first try")


class EventOut(BaseModel):
    """An event as an index holds it: the envelope but its hash chain."""

    model_config = ConfigDict(extra="allow")

    event_id: str
    stream_id: str
    seq: int
    family: str
    event_type: str
    tenant_id: str
    mode: str
    user_id: str | None = None
    surface_id: str | None = None
    project_id: str | None = None
    source: str
    run_id: str | None = None
    step_id: str | None = None
    parent_event_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    occurred_at: str | None = None
    recorded_at: str
    payload: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class DayCount(BaseModel):
    day: str
    count: int


class CountsOut(BaseModel):
    name: str
    counted_for: str = Field(description="a user id, or * for the whole tenant")
    since: str = Field(description="the first day counted")
    until: str = Field(description="the day after the last")
    items: list[DayCount]
    total: int


# -- emitting -------------------------------------------------------------------------


async def _emit(
    request: Request,
    principal: Principal,
    events: Sequence[EmittedEvent],
    idempotency_key: str | None,
) -> Response:
    if any(e.emitted_family == "safety" for e in events):
        await require_role(request, principal, "safety")
    for e in events:
        if e.source is not None and e.source != principal.source:
            exc = ScopeMismatch(
                f"source {e.source!r} does not match the token (its principal's kind is "
                f"{principal.source!r})"
            )
            await deny(request, exc, principal)
            raise exc
    scope = await scope_for(request, principal, None, None, require_surface=True)
    provenance = provenance_of(request)
    for i, e in enumerate(events):
        given = {
            "run_id": e.run_id,
            "step_id": e.step_id,
            "parent_event_id": e.parent_event_id,
            "trace_id": e.causality.trace_id,
            "span_id": e.causality.span_id,
        }
        for name, value in given.items():
            stated = getattr(provenance, name)
            if stated is not None and value not in (None, stated):
                raise InvalidField(
                    ("body", "events", str(i), name),
                    f"{name} disagrees with the request's header ({stated!r}); give one",
                )
    provenance = provenance.model_copy(update={"run_id": None, "step_id": None})
    commands = []
    for payload in batches(events):
        command_id = None
        if idempotency_key is not None:
            command_id = "emit:" + idempotent_id(
                scope, DOMAIN, idempotency_key, payload.family, payload.run_id
            )
        fields: dict[str, Any] = {
            "scope": scope,
            "source": principal.source,
            "provenance": provenance,
            "grants": principal.grants,
            "payload": payload,
        }
        if command_id is not None:
            fields["command_id"] = command_id
        commands.append(Command[EmitEvents](**fields))
    runtime = runtime_of(request)
    if idempotency_key is None:
        results = await _dispatch(runtime, commands)
    else:
        # A key reused for another request is refused before anything is written: each
        # stream the request touches is checked first, one request per key at a time in
        # this process (another process racing with the same key is caught stream by
        # stream, after the fact).
        async with _keys_of(request.app).hold(idempotent_id(scope, DOMAIN, idempotency_key)):
            recorder = TelemetryRecorder()
            for command in commands:
                stream = recorder.stream_id(command)
                found = await runtime.spine.find_command(stream, command.command_id)
                if found:
                    refuse_reused_key(found, command)
            results = await _dispatch(runtime, commands)
    recorded = await _reflected(request, commands, results)
    # each stream's events come back in the order given: put them in the body's order
    written = {
        (c.payload.family, c.payload.run_id): iter(r.events)
        for c, r in zip(commands, results, strict=True)
    }
    order = [next(written[(e.emitted_family, e.run_id)]) for e in events]
    body = {
        "events": [
            {
                "event_id": ev.event_id,
                "stream_id": ev.stream_id,
                "seq": ev.seq,
                "family": ev.family,
                "event_type": ev.event_type,
                "run_id": ev.run_id,
                "step_id": ev.step_id,
                "recorded_at": timestamp_text(ev.recorded_at),
            }
            for ev in order
        ],
        "status": "recorded" if recorded else "accepted",
        "deduplicated": all(r.deduplicated for r in results),
    }
    return OrjsonResponse(body, status_code=201 if recorded else 202)


async def _dispatch(
    runtime: Runtime, commands: Sequence[Command[EmitEvents]]
) -> list[CommandResult]:
    results: list[CommandResult] = list(
        await asyncio.gather(*(runtime.dispatch(c) for c in commands))
    )
    for command, result in zip(commands, results, strict=True):
        if result.deduplicated:
            refuse_reused_key(result.events, command)
    return results


class KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _keys_of(app: Any) -> KeyedLocks:
    keys: KeyedLocks | None = getattr(app.state, "emit_keys", None)
    if keys is None:
        keys = app.state.emit_keys = KeyedLocks()
    return keys


async def _reflected(
    request: Request, commands: Sequence[Command[EmitEvents]], results: Sequence[CommandResult]
) -> bool:
    """Wait, bounded, until every view each written stream feeds reflects it."""
    runtime = runtime_of(request)
    wait = runtime.settings.write_wait_seconds
    waits = [
        runtime.wait_for(view, result.stream_id, result.version, wait)
        for command, result in zip(commands, results, strict=True)
        for view in _VIEWS_OF.get(command.payload.family, (EVENTS_VIEW,))
    ]
    return all(await asyncio.gather(*waits))


router = APIRouter(tags=["telemetry"], route_class=StrictJsonRoute)

_EMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": EmittedOut, "description": "Durable; the views do not reflect it yet"},
    **problem_responses(*AUTHENTICATED, 409, 415),
}


@router.post(
    "/events",
    status_code=201,
    response_model=EmittedOut,
    responses=_EMIT_RESPONSES,
    summary="Emit one telemetry event or a batch (analytics, safety, rl, rlha, tuning)",
)
async def emit(
    request: Request,
    body: EmitBody,
    principal: Auth,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each event in the seed's shape; its ``event_type`` begins with its family
    (``rl.reward``). ``audit``, ``budget`` and ``strategy_lock`` cannot be emitted (422);
    ``safety`` needs the ``safety`` role (403). One invalid event refuses the batch, and
    nothing is written. ``Idempotency-Key``: a retry writes nothing again and answers as
    the first did; the key reused for other events is 409."""
    events = body.events if isinstance(body, EventBatch) else [body]
    for i, e in enumerate(events):
        if e.event_type == SAFETY_DECISION:
            raise InvalidField(
                ("body", "events", str(i), "event_type"),
                f"{SAFETY_DECISION} is recorded by POST /safety/decisions, which checks it",
            )
    return await _emit(request, principal, events, idempotency_key)


@router.post(
    "/safety/decisions",
    status_code=201,
    response_model=EmittedOut,
    responses=_EMIT_RESPONSES,
    summary="Record a safety decision (allowed or denied), before acting on it",
)
async def record_decision(
    request: Request,
    body: SafetyDecision,
    principal: Auth,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A ``safety.decision`` event (``safety`` role): the decision, its justification,
    the gates and a denial's failure. Answered only after the append, and once the audit
    view and ``GET /events`` show it (201): a caller that executes only after a 201 never
    executes unrecorded. A denied decision is recorded the same way."""
    return await _emit(request, principal, [body.as_event()], idempotency_key)


# -- querying -------------------------------------------------------------------------

Cursor = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int, Query(ge=1, le=200, description="at most 200 (a payload may be 64 KiB)")]
Since = Annotated[
    ClientTime | None, Query(description="recorded at or after (RFC 3339, with an offset)")
]
Until = Annotated[
    ClientTime | None, Query(description="recorded before (RFC 3339, with an offset)")
]
SurfaceFilter = Annotated[Identifier | None, Query(description="only this granted surface")]
ProjectFilter = Annotated[Identifier | None, Query(description="only this granted project")]
Order = Annotated[Literal["asc", "desc"], Query(description="by recorded time")]
FamilyFilter = Annotated[
    Literal["analytics", "audit", "safety", "rl", "rlha", "tuning", "budget", "strategy_lock"]
    | None,
    Query(),
]


def _grants(principal: Principal) -> tuple[Grant, ...]:
    return tuple(
        Grant(surface_id=s, project_ids=tuple(sorted(projects)))
        for s, projects in sorted(principal.grants.items())
    )


@dataclass(frozen=True)
class Whose:
    """Whose records a query reads: the tenant and mode of ``scope``, ``user_id``'s
    (``None``: everyone's), within ``grants`` (``None``: all), on the surface and in the
    project the request names, if it names them."""

    scope: Scope
    user_id: str | None
    grants: tuple[Grant, ...] | None
    surface_id: str | None
    project_id: str | None


async def _whose(
    request: Request,
    principal: Principal,
    user_id: str | None,
    surface_id: str | None = None,
    project_id: str | None = None,
) -> Whose:
    """The caller's own records, within their grants; any user's (or everyone's) for an
    auditor. A surface or project named (query or header) must be granted (403) and
    narrows the query to it."""
    scope = await scope_for(request, principal, surface_id, project_id)
    named_surface = requested(request, "surface_id", surface_id)
    named_project = requested(request, "project_id", project_id)
    surface = scope.surface_id if named_surface is not None else None
    project = scope.project_id if named_project is not None else None
    if "auditor" in principal.roles:
        return Whose(scope, user_id, None, surface, project)
    if user_id is not None and user_id != principal.user_id:
        await require_role(request, principal, "auditor")
    return Whose(scope, principal.user_id, _grants(principal), surface, project)


def event_out(record: ViewRecord) -> dict[str, Any]:
    data = dict(record.data)
    del data["entry"]
    data["tenant_id"] = record.scope.tenant_id
    data["mode"] = record.scope.mode
    return data


async def _index_page(
    request: Request,
    view: str,
    whose: Whose,
    equal: Mapping[str, FilterValue | None],
    since: str | None,
    until: str | None,
    order: str,
    cursor: str | None,
    limit: int,
) -> Response:
    """One page of an event index (``view``): ``whose`` events, each ``equal`` field that
    is given equal to its value, recorded in [``since``, ``until``), by recorded time."""
    query = index_query(
        whose.scope,
        user_id=whose.user_id,
        grants=whose.grants,
        surface_id=whose.surface_id,
        project_id=whose.project_id,
        equal=equal,
        since=since,
        until=until,
        descending=order == "desc",
        limit=limit,
        cursor=cursor,
    )
    page = await runtime_of(request).view_of(view).query(query)
    return OrjsonResponse(
        {"items": [event_out(r) for r in page.items], "next_cursor": page.next_cursor}
    )


@router.get(
    "/events",
    response_model=EventPage,
    responses=problem_responses(*AUTHENTICATED),
    summary="Telemetry, audit, budget and strategy-lock events, by recorded time",
)
async def list_events(
    request: Request,
    principal: Auth,
    family: FamilyFilter = None,
    event_type: Annotated[EventType | None, Query(max_length=128)] = None,
    run_id: Annotated[Identifier | None, Query()] = None,
    user_id: Annotated[Identifier | None, Query()] = None,
    surface_id: SurfaceFilter = None,
    project_id: ProjectFilter = None,
    since: Since = None,
    until: Until = None,
    order: Order = "asc",
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    """The caller's own events (within their grants); with the ``auditor`` role, the
    tenant's, and ``user_id`` names whose. Oldest first unless ``order=desc``."""
    whose = await _whose(request, principal, user_id, surface_id, project_id)
    equal = {"run_id": run_id, "family": family, "event_type": event_type}
    return await _index_page(request, EVENTS_VIEW, whose, equal, since, until, order, cursor, limit)


@router.get(
    "/audit",
    response_model=EventPage,
    responses=problem_responses(*AUTHENTICATED),
    summary="The audit view: audit, safety, budget and strategy-lock events (auditor)",
)
async def audit(
    request: Request,
    principal: Auth,
    user_id: Annotated[Identifier | None, Query()] = None,
    run_id: Annotated[Identifier | None, Query()] = None,
    event_type: Annotated[EventType | None, Query(max_length=128)] = None,
    family: Annotated[Literal["audit", "safety", "budget", "strategy_lock"] | None, Query()] = None,
    surface_id: SurfaceFilter = None,
    project_id: ProjectFilter = None,
    since: Since = None,
    until: Until = None,
    order: Order = "asc",
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    """The tenant's audit trail (``auditor`` role; 403 without): refusals, safety
    decisions, budget and strategy-lock events, filtered by user, run, type or time."""
    await require_role(request, principal, "auditor")
    whose = await _whose(request, principal, user_id, surface_id, project_id)
    equal = {"run_id": run_id, "event_type": event_type, "family": family}
    return await _index_page(request, AUDIT_VIEW, whose, equal, since, until, order, cursor, limit)


#: The most days one counts query spans.
MAX_DAYS = 366


@router.get(
    "/analytics/counts",
    response_model=CountsOut,
    responses=problem_responses(*AUTHENTICATED),
    summary="Per-day counts of one analytics event type",
)
async def analytics_counts(
    request: Request,
    principal: Auth,
    name: Annotated[EventType, Query(max_length=128, description="the event type")],
    since: Annotated[Day | None, Query(description="first UTC day, YYYY-MM-DD")] = None,
    until: Annotated[Day | None, Query(description="the UTC day after the last")] = None,
    user_id: Annotated[Identifier | None, Query()] = None,
    surface_id: SurfaceFilter = None,
    project_id: ProjectFilter = None,
) -> Response:
    """How many ``name`` events were recorded each UTC day (days with none are left
    out), oldest first, over at most 366 days (default: the 366 up to today): the
    caller's own, within their grants; with the ``auditor`` role, the tenant's, or
    ``user_id``'s; on the surface and in the project named, if named."""
    whose = await _whose(request, principal, user_id, surface_id, project_id)
    last = date.fromisoformat(until) if until else datetime.now(UTC).date() + timedelta(days=1)
    span = timedelta(days=MAX_DAYS)
    first = date.fromisoformat(since) if since else max(date.min + span, last) - span
    if first > last:
        raise InvalidField(("query", "since"), "since is after until")
    if (last - first).days > MAX_DAYS:
        raise InvalidField(("query", "since"), f"a query spans at most {MAX_DAYS} days")
    counted_for = whose.user_id or ALL_USERS
    query = ViewQuery(
        tenant_id=whose.scope.tenant_id,
        mode=whose.scope.mode,
        user_id=whose.user_id,
        surface_id=whose.surface_id,
        project_id=whose.project_id,
        grants=whose.grants,
        where=(
            Filter(field="entry", value="count"),
            Filter(field="counted_for", value=counted_for),
            Filter(field="name", value=name),
            Filter(field=DAY, op="ge", value=first.isoformat()),
            Filter(field=DAY, op="lt", value=last.isoformat()),
        ),
        order_by=DAY,
        descending=False,
        limit=1000,
    )
    view = runtime_of(request).view_of(ANALYTICS_VIEW)
    per_day: dict[str, int] = {}
    while True:  # one record per day, surface and project
        page = await view.query(query)
        for r in page.items:
            per_day[r.data[DAY]] = per_day.get(r.data[DAY], 0) + r.data["count"]
        if page.next_cursor is None:
            break
        query = query.model_copy(update={"cursor": page.next_cursor})
    items = [{"day": day, "count": count} for day, count in per_day.items()]
    return OrjsonResponse(
        {
            "name": name,
            "counted_for": counted_for,
            "since": first.isoformat(),
            "until": last.isoformat(),
            "items": items,
            "total": sum(per_day.values()),
        }
    )
