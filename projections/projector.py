"""The projector shape: pure functions from (view, event) to the next view."""

from __future__ import annotations

from typing import Protocol

from projections.views import ViewRecord
from spine.events import EventEnvelope


class Projector(Protocol):
    """A projector owns every stream of its ``domain`` and one view.

    ``apply`` is pure and is called once per event, in seq order per stream, with the
    view as it stands (``None`` before the first event). It returns the next record:
    a tombstone (``deleted=True``) for a deletion. Its ``version`` must be the event's
    seq — the runner relies on it to skip what is applied and repair gaps.
    """

    name: str
    """Unique; names the checkpoint."""
    domain: str
    """The first segment of the stream ids this projector reads."""
    resource_kind: str
    """The view's resource kind, routed by the registry."""

    def view_key(self, stream_id: str) -> str:
        """The key of the view record a stream materializes into."""
        ...

    def apply(self, view: ViewRecord | None, event: EventEnvelope) -> ViewRecord: ...
