"""Views of the telemetry families (DESIGN §5): every event indexed as it was recorded,
and per-day counts of analytics events.

* :class:`EventIndex` keeps one record per event of the families it takes, keyed
  ``{stream_id}#{seq:012d}`` (fitted), written once (version 1), scoped as the event.
  Data: ``entry: "event"``, the envelope's fields but the hash chain (event_id,
  stream_id, seq, family, event_type, schema_version, user, surface, project, source,
  provenance, occurred_at, recorded_at) and the payload as given. Three views use it:

  - ``events`` (``telemetry_store``): telemetry, audit, budget and strategy-lock
    events, for ``GET /events``;
  - ``audit`` (``audit_store``): the audit view, audit, safety, budget and strategy-lock
    events, for ``GET /audit`` and ``engines audit query``;
  - ``analytics`` (``analytics_store``): the raw analytics events, and beside them
    :class:`AnalyticsProjector`'s counts.

* A count record counts one event type (its ``name``) on one UTC day (of the server's
  ``recorded_at``, never the client's clock) on one surface and project, for one user,
  and one more for every user of the tenant (``counted_for: "*"``); each is scoped so
  (no user in the second), so a reader's grants, or a surface named, bound what they
  count. Key ``count#{tenant}/{mode}/{day}/{name}/{user or *}/{surface}/{project}``
  (``-`` for none; fitted); its version counts its own revisions (it folds many
  streams). Data: ``entry: "count"``, name, day, counted_for, count, updated_at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from projections.projector import next_version
from projections.views import (
    Filter,
    FilterValue,
    Grant,
    QueryShape,
    ViewQuery,
    ViewRecord,
    fitted_key,
)
from spine.codec import timestamp_text
from spine.events import EventEnvelope, Scope

#: The time every event index is ordered by: the server's, one text form, sortable.
ORDER: Final = "recorded_at"

_LEFT_OUT: Final = frozenset({"prev_hash", "hash", "route", "tenant_id", "mode", "payload"})


def event_key(event: EventEnvelope) -> str:
    return fitted_key(f"{event.stream_id}#{event.seq:012d}")


def event_data(event: EventEnvelope) -> dict[str, Any]:
    """What an index keeps of ``event``: every envelope field but the chain and what the
    record's scope holds, absent ones left out, and the payload as given."""
    data: dict[str, Any] = {"entry": "event"}
    for name, value in event.__dict__.items():
        if value is not None and name not in _LEFT_OUT:
            data[name] = value
    data["recorded_at"] = timestamp_text(event.recorded_at)
    data["payload"] = event.payload
    return data


class EventIndex:
    """One record per event of ``families`` in the streams of ``domains``."""

    def __init__(
        self,
        *,
        name: str,
        resource_kind: str,
        domains: frozenset[str],
        families: frozenset[str],
        shapes: tuple[QueryShape, ...],
    ) -> None:
        self.name = name
        self.resource_kind = resource_kind
        self.domains = domains
        self.families = families
        self.shapes = shapes

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return ()  # each record is new for good: written once, under its event's seq

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        if event.family not in self.families:
            return ()
        return (
            ViewRecord(key=event_key(event), scope=event.scope, version=1, data=event_data(event)),
        )


def index_query(
    scope: Scope,
    *,
    user_id: str | None,
    grants: tuple[Grant, ...] | None,
    surface_id: str | None = None,
    project_id: str | None = None,
    equal: Mapping[str, FilterValue | None],
    since: str | None = None,
    until: str | None = None,
    descending: bool = False,
    limit: int = 100,
    cursor: str | None = None,
) -> ViewQuery:
    """A query of an event index in ``scope``'s tenant and mode, by recorded time:
    ``user_id``'s events (``None``: everyone's) within ``grants`` (``None``: all), each
    ``equal`` field that is not ``None`` equal to its value, on ``surface_id`` and in
    ``project_id`` if they are given, recorded at or after
    ``since`` and before ``until`` (timestamps in the one text form)."""
    where = [Filter(field=k, value=v) for k, v in equal.items() if v is not None]
    if since is not None:
        where.append(Filter(field=ORDER, op="ge", value=since))
    if until is not None:
        where.append(Filter(field=ORDER, op="lt", value=until))
    return ViewQuery(
        tenant_id=scope.tenant_id,
        mode=scope.mode,
        user_id=user_id,
        surface_id=surface_id,
        project_id=project_id,
        grants=grants,
        where=tuple(where),
        order_by=ORDER,
        descending=descending,
        limit=limit,
        cursor=cursor,
    )


def _by_time(*equal: str) -> QueryShape:
    return QueryShape(equal=equal, order_by=ORDER)


#: The families ``GET /events`` answers: everything but the domains' own events.
QUERIED_FAMILIES: Final = frozenset(
    {"analytics", "audit", "safety", "rl", "rlha", "tuning", "budget", "strategy_lock"}
)
AUDITED_FAMILIES: Final = frozenset({"audit", "safety", "budget", "strategy_lock"})
# Each family's streams are a domain of their own (``rl/{tenant}/...``; the strategy
# locks' domain is ``strategy_lock``), so a projector reads only the families it shows.


def events_index() -> EventIndex:
    """``GET /events``: a caller's own events by run or all; a tenant's (auditor)."""
    return EventIndex(
        name="events",
        resource_kind="telemetry_store",
        domains=QUERIED_FAMILIES,
        families=QUERIED_FAMILIES,
        shapes=(_by_time("user_id", "run_id"), _by_time("user_id"), _by_time("run_id"), _by_time()),
    )


def audit_index() -> EventIndex:
    """The audit view: by user, run, type or time, within a tenant."""
    return EventIndex(
        name="audit",
        resource_kind="audit_store",
        domains=AUDITED_FAMILIES,
        families=AUDITED_FAMILIES,
        shapes=(_by_time("user_id"), _by_time("run_id"), _by_time("event_type"), _by_time()),
    )


ALL_USERS: Final = "*"
DAY: Final = "day"


def count_key(scope: Scope, day: str, name: str) -> str:
    """The key of the count of ``name`` on ``day`` for ``scope``: its user on its surface
    and project, or (no user) the whole tenant."""
    who = scope.user_id or ALL_USERS
    where = f"{scope.surface_id or '-'}/{scope.project_id or '-'}"
    return fitted_key(f"count#{scope.tenant_id}/{scope.mode}/{day}/{name}/{who}/{where}")


class AnalyticsProjector(EventIndex):
    """The analytics view: each analytics event, and per-day counts (module docstring)."""

    def __init__(self) -> None:
        super().__init__(
            name="analytics",
            resource_kind="analytics_store",
            domains=frozenset({"analytics"}),
            families=frozenset({"analytics"}),
            shapes=(QueryShape(equal=("entry", "counted_for", "name"), order_by=DAY),),
        )

    def _counts(self, event: EventEnvelope) -> list[tuple[str, Scope, str]]:
        day = timestamp_text(event.recorded_at)[:10]
        everyone = event.scope.model_copy(update={"user_id": None})
        counted = [(ALL_USERS, everyone)]
        if event.user_id is not None:
            counted.append((event.user_id, event.scope))
        name = event.event_type
        return [(count_key(scope, day, name), scope, who) for who, scope in counted]

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        if event.family not in self.families:
            return ()
        return [key for key, _, _ in self._counts(event)]

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        raw = super().apply(event, records)
        if not raw:
            return ()
        at = timestamp_text(event.recorded_at)
        out = list(raw)
        for key, scope, who in self._counts(event):
            before = records.get(key)
            count = before.data["count"] if before is not None else 0
            # the latest count's time, whatever order streams are applied in (a
            # rebuild's fold gives the same record as the live view)
            latest = max(at, before.data.get("updated_at", at)) if before is not None else at
            data = {
                "entry": "count",
                "name": event.event_type,
                DAY: at[:10],
                "counted_for": who,
                "count": count + 1,
                "updated_at": latest,
            }
            out.append(ViewRecord(key=key, scope=scope, version=next_version(before), data=data))
        return out
