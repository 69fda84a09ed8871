"""Telemetry's pure parts: the emitted shape, grouping into streams, the recorder's
events, the reused-key check and the projectors' records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from commands.envelope import Command
from commands.telemetry import (
    EmitEvents,
    EmittedEvent,
    SafetyDecision,
    TelemetryRecorder,
    batches,
    refuse_reused_key,
)
from projections.telemetry import AnalyticsProjector, audit_index, count_key, events_index
from projections.views import ViewRecord
from spine.codec import seal
from spine.errors import AlreadyExists
from spine.events import GENESIS_HASH, EventEnvelope, NewEvent, Provenance, Scope

SCOPE = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s1", project_id="p1")


def emitted(event_type: str = "rl.reward", run_id: str = "r1", **fields: Any) -> EmittedEvent:
    return EmittedEvent.model_validate(
        {"event_type": event_type, "run_id": run_id, "step_id": "s", "payload": {}, **fields}
    )


def command(payload: EmitEvents, **fields: Any) -> Command[EmitEvents]:
    return Command[EmitEvents](scope=SCOPE, source="agent", payload=payload, **fields)


def sealed(event: NewEvent, stream: str, seq: int = 1, at: datetime | None = None) -> EventEnvelope:
    envelope, _ = seal(
        event,
        stream_id=stream,
        seq=seq,
        prev_hash=GENESIS_HASH,
        recorded_at=at or datetime(2026, 12, 7, 23, 59, tzinfo=UTC),
    )
    return envelope


@pytest.mark.parametrize("family", ["analytics", "safety", "rl", "rlha", "tuning"])
def test_every_emitted_family_is_named_by_its_event_types_first_segment(family: str) -> None:
    assert emitted(f"{family}.x").emitted_family == family
    assert emitted(f"{family}.x", family=family).emitted_family == family


@pytest.mark.parametrize(
    ("event_type", "family", "says"),
    [
        ("audit.access_denied", None, "written by the server"),
        ("budget.debited", None, "budget endpoints"),
        ("domain.x", None, "their domains"),
        ("reward.given", None, "must begin with its family"),
        ("rl.reward", "rlha", "disagrees"),
        ("rl.reward", "audit", "disagrees"),
    ],
)
def test_server_families_and_unnamed_families_are_refused(
    event_type: str, family: str | None, says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        emitted(event_type, family=family)


def test_occurred_at_needs_an_offset_and_is_kept_in_utc() -> None:
    with pytest.raises(ValidationError):
        emitted(occurred_at="2026-01-01T10:00:00")
    (payload,) = batches([emitted(occurred_at="2026-01-01T10:00:00-02:00")])
    assert payload.events[0].occurred_at == "2026-01-01T12:00:00.000000Z"


def test_batches_group_by_family_and_run_keeping_the_order_within_each() -> None:
    events = [
        emitted("rl.a", "r1"),
        emitted("rl.b", "r2"),
        emitted("analytics.c", "r1"),
        emitted("rl.d", "r1"),
    ]
    grouped = batches(events)

    assert [(b.family, b.run_id, [e.event_type for e in b.events]) for b in grouped] == [
        ("rl", "r1", ["rl.a", "rl.d"]),
        ("rl", "r2", ["rl.b"]),
        ("analytics", "r1", ["analytics.c"]),
    ]


def test_the_recorder_appends_to_the_runs_stream_with_each_events_provenance() -> None:
    (payload,) = batches(
        [
            emitted(step_id="1", parent_event_id="e0", causality={"trace_id": "t-own"}),
            emitted(step_id="2"),
        ]
    )
    given = Provenance(agent_id="a1", thread_id="th", trace_id="t-header", span_id="sp")
    cmd = command(payload, provenance=given)
    recorder = TelemetryRecorder()

    first, second = recorder.record(cmd)
    assert recorder.stream_id(cmd) == "rl/t1/lab/r1"
    assert (first.family, first.run_id, first.step_id, first.parent_event_id) == (
        "rl",
        "r1",
        "1",
        "e0",
    )
    assert (first.agent_id, first.thread_id, first.trace_id, first.span_id) == (
        "a1",
        "th",
        "t-own",
        "sp",
    )
    assert (second.step_id, second.parent_event_id, second.trace_id) == ("2", None, "t-header")
    assert first.command_id == second.command_id == cmd.command_id
    assert (first.user_id, first.surface_id, first.project_id, first.source) == (
        "u1",
        "s1",
        "p1",
        "agent",
    )


def test_a_reused_key_is_refused_unless_the_batch_is_the_same() -> None:
    (payload,) = batches([emitted(payload={"reward": 1})])
    cmd = command(payload)
    stream = TelemetryRecorder().stream_id(cmd)
    original = [sealed(e, stream) for e in TelemetryRecorder().record(cmd)]

    refuse_reused_key(original, cmd)  # the same batch: answered as the first
    (changed,) = batches([emitted(payload={"reward": 2})])
    with pytest.raises(AlreadyExists, match="different request"):
        refuse_reused_key(original, command(changed))
    (longer,) = batches([emitted(payload={"reward": 1}), emitted(payload={"reward": 1})])
    with pytest.raises(AlreadyExists):
        refuse_reused_key(original, command(longer))


def test_a_denied_decision_needs_a_failure_and_keeps_only_what_was_given() -> None:
    base = {"run_id": "r1", "step_id": "g", "justification": "why"}
    with pytest.raises(ValidationError, match="needs `failure`"):
        SafetyDecision.model_validate({**base, "decision": "denied"})

    decision = SafetyDecision.model_validate(
        {**base, "decision": "denied", "failure": {"code": "c", "message": "m"}}
    )
    as_event = decision.as_event()
    assert as_event.event_type == "safety.decision"
    assert as_event.payload == {
        "decision": "denied",
        "justification": "why",
        "failure": {"code": "c", "message": "m"},
    }


def test_an_index_keeps_each_event_of_its_families_once() -> None:
    (payload,) = batches([emitted("rl.reward", payload={"reward": 0.5})])
    cmd = command(payload)
    rl = sealed(TelemetryRecorder().record(cmd)[0], "rl/t1/lab/r1", seq=7)

    (record,) = events_index().apply(rl, {})
    assert record.key == "rl/t1/lab/r1#000000000007"
    assert (record.version, record.scope) == (1, SCOPE)
    assert record.data["payload"] == {"reward": 0.5}
    assert record.data["recorded_at"] == "2026-12-07T23:59:00.000000Z"
    assert not {"hash", "prev_hash"} & record.data.keys()
    assert audit_index().apply(rl, {}) == ()  # rl is not audited


def test_analytics_counts_fold_per_day_for_the_user_and_the_tenant() -> None:
    (payload,) = batches([emitted("analytics.page_viewed")])
    cmd = command(payload)
    new = TelemetryRecorder().record(cmd)[0]
    projector = AnalyticsProjector()
    records: dict[str, ViewRecord] = {}
    late = datetime(2026, 12, 7, 23, 59, 59, tzinfo=UTC)
    next_day = datetime(2026, 12, 8, 0, 0, 1, tzinfo=UTC)
    for seq, at in ((1, late), (2, late), (3, next_day)):
        event = sealed(new, "analytics/t1/lab/r1", seq=seq, at=at)
        assert set(projector.keys(event)) == _count_keys(at)
        for record in projector.apply(event, records):
            records[record.key] = record

    tenant = SCOPE.model_copy(update={"user_id": None})
    day1 = records[count_key(tenant, "2026-12-07", "analytics.page_viewed")]
    mine = records[count_key(SCOPE, "2026-12-07", "analytics.page_viewed")]
    day2 = records[count_key(tenant, "2026-12-08", "analytics.page_viewed")]
    assert (day1.data["count"], day1.version, day1.scope) == (2, 2, tenant)
    assert (mine.data["count"], mine.data["counted_for"], mine.scope) == (2, "u1", SCOPE)
    assert day2.data["count"] == 1
    assert mine.key == "count#t1/lab/2026-12-07/analytics.page_viewed/u1/s1/p1"
    assert day1.key == "count#t1/lab/2026-12-07/analytics.page_viewed/*/s1/p1"


def _count_keys(at: datetime) -> set[str]:
    day = at.date().isoformat()
    tenant = SCOPE.model_copy(update={"user_id": None})
    return {count_key(scope, day, "analytics.page_viewed") for scope in (tenant, SCOPE)}


def test_an_analytics_count_is_the_same_whatever_order_its_streams_are_applied_in() -> None:
    """Streams of a day's count may be applied in any order (a rebuild's scan is not
    the live feed's order): the count record ends the same, its time the latest."""
    (payload,) = batches([emitted("analytics.page_viewed")])
    new = TelemetryRecorder().record(command(payload))[0]
    projector = AnalyticsProjector()
    early = sealed(new, "analytics/t1/lab/r1", seq=1, at=datetime(2026, 12, 7, 9, tzinfo=UTC))
    late = sealed(new, "analytics/t1/lab/r2", seq=1, at=datetime(2026, 12, 7, 17, tzinfo=UTC))
    folds = []
    for order in ((early, late), (late, early)):
        records: dict[str, ViewRecord] = {}
        for event in order:
            for record in projector.apply(event, records):
                records[record.key] = record
        folds.append(records)
    assert folds[0] == folds[1]
    tenant = SCOPE.model_copy(update={"user_id": None})
    count = folds[0][count_key(tenant, "2026-12-07", "analytics.page_viewed")]
    assert count.data["updated_at"].startswith("2026-12-07T17:00:00")
