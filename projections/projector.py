"""The projector shape: pure functions from an event and the records it touches to the
records it writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from projections.views import QueryShape, ViewRecord
from spine.events import EventEnvelope


class Projector(Protocol):
    """A projector reads the streams of its ``domains`` and writes one view.

    The runner calls :meth:`apply` once per event, in seq order per stream (no order
    across streams is promised), with a mapping that holds every existing record under
    :meth:`keys` (tombstones and expired records included; an absent one is missing, so
    read it with ``records.get(key)``; the mapping may hold other records too, and must
    not be changed). ``apply`` is pure and returns
    the records the event writes: new ones, changed ones, tombstones (``deleted=True``).
    Each returned record's ``version`` must be above the one it replaces: one at or below
    the stored version is taken as applied already and not written (so replays, stale
    reads and lost progress heal themselves). Entity views
    (one record per stream) use the event's seq, so a record's version is the seq of the
    last event applied to it; records that fold several streams (totals, counts) count
    their own revisions (:func:`next_version`); records written once per event (ledger
    lines, history, audit rows) start at 1.

    Which events of a stream the view has applied is tracked by the runner per stream,
    never by comparing seqs of different streams.
    """

    name: str
    """Unique; names the checkpoint, the applied progress and the parked records."""
    domains: frozenset[str]
    """The first segments of the stream ids this projector reads."""
    resource_kind: str
    """The view's resource kind, routed by the registry."""
    shapes: tuple[QueryShape, ...]
    """The queries its readers make often; the view store builds what answers them
    (:meth:`projections.views.ViewStore.declare`)."""

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        """The records :meth:`apply` reads or writes for ``event``. A key it writes and
        does not list must be new for good (a replay would find it and be refused)."""
        ...

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        """The records ``event`` writes, given the current ones."""
        ...


def next_version(record: ViewRecord | None) -> int:
    """The version of the next revision of a record that folds several streams."""
    return 1 if record is None else record.version + 1


#: What an event records of where it comes from besides its scope (DESIGN §7).
PROVENANCE: Final = (
    "agent_id",
    "run_id",
    "thread_id",
    "step_id",
    "parent_event_id",
    "trace_id",
    "span_id",
)


def provenance_of(event: EventEnvelope) -> dict[str, Any]:
    """The principal's kind (``source``) and the provenance ``event`` was given (absent
    stays absent)."""
    given = {name: value for name in PROVENANCE if (value := getattr(event, name)) is not None}
    return {"source": event.source, **given}
