"""The budget view (``budget_store``): per budget, one totals record and one ledger line
per event.

* The totals record is keyed by the budget's stream id; its version is the seq of the
  last event applied, and its scope is that event's (the last writer). Data:
  ``entry: "totals"``, budget_id, limit_minor, spent_minor, scale, currency, seq,
  created_at, updated_at.
* A ledger line is keyed ``{stream_id}#{seq:012d}`` (``#`` is in no identifier, so no
  budget's key can collide with another's line), written once (version 1), scoped as
  its event (the writer). Data: ``entry: "ledger"``, budget_id, seq, kind (``limit``,
  ``debit``, ``credit``, ``debit_refused``), amount_minor (for ``limit``: the new
  limit), reason, scale, currency, limit_minor and spent_minor after the event, the
  writer (user, surface, project) and provenance, recorded_at. A refused debit is a
  recorded event, so it has its line: it moves no total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from projections.views import QueryShape, ViewRecord
from spine.codec import timestamp_text
from spine.errors import IntegrityError
from spine.events import EventEnvelope
from spine.streams import parse_stream_id

# The budget stream's event types (``commands.budget`` appends them).
LIMIT_SET: Final = "budget.limit_set"
DEBITED: Final = "budget.debited"
CREDITED: Final = "budget.credited"
DEBIT_REFUSED: Final = "budget.debit_refused"

KIND_OF: Final = {
    LIMIT_SET: "limit",
    DEBITED: "debit",
    CREDITED: "credit",
    DEBIT_REFUSED: "debit_refused",
}

#: What of an event's provenance each ledger line keeps.
PROVENANCE: Final = ("agent_id", "run_id", "step_id", "trace_id")


def ledger_key(stream_id: str, seq: int) -> str:
    return f"{stream_id}#{seq:012d}"


class BudgetProjector:
    name = "budgets"
    domains = frozenset({"budget"})
    resource_kind = "budget_store"
    shapes: tuple[QueryShape, ...] = ()

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return (event.stream_id, ledger_key(event.stream_id, event.seq))

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        totals = records.get(event.stream_id)
        p = event.payload
        at = timestamp_text(event.recorded_at)
        if event.event_type == LIMIT_SET:
            before: dict[str, Any] = totals.data if totals is not None else {}
            data = {
                "entry": "totals",
                "budget_id": parse_stream_id(event.stream_id).parts[0],
                "spent_minor": before.get("spent_minor", 0),
                "created_at": before.get("created_at", at),
                "limit_minor": p["limit_minor"],
                "scale": p["scale"],
                "currency": p["currency"],
            }
        elif totals is None:
            raise IntegrityError(
                f"{event.stream_id} seq {event.seq}: {event.event_type} comes before the "
                "budget's first budget.limit_set"
            )
        else:
            spent = totals.data["spent_minor"]
            if event.event_type == DEBITED:
                spent += p["amount_minor"]
            elif event.event_type == CREDITED:
                spent -= p["amount_minor"]
            data = {**totals.data, "spent_minor": spent}
        data |= {"seq": event.seq, "updated_at": at}
        new_totals = ViewRecord(
            key=event.stream_id, scope=event.scope, version=event.seq, data=data
        )
        kind = KIND_OF.get(event.event_type)
        if kind is None:  # not ours to show: the version still moves
            return (new_totals,)
        line = {
            "entry": "ledger",
            "budget_id": data["budget_id"],
            "seq": event.seq,
            "kind": kind,
            "amount_minor": p["limit_minor"] if kind == "limit" else p["amount_minor"],
            "reason": p.get("reason"),
            "scale": data["scale"],
            "currency": data["currency"],
            "limit_minor": data["limit_minor"],
            "spent_minor": data["spent_minor"],
            "user_id": event.user_id,
            "surface_id": event.surface_id,
            "project_id": event.project_id,
            "source": event.source,
            **{name: getattr(event, name) for name in PROVENANCE},
            "event_id": event.event_id,
            "recorded_at": at,
            "updated_at": at,
        }
        key = ledger_key(event.stream_id, event.seq)
        return (new_totals, ViewRecord(key=key, scope=event.scope, version=1, data=line))
