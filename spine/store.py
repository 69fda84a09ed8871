"""The ``EventStore`` protocol: what every spine backend guarantees.

Guarantees, for every backend:

* **Per-stream order.** A stream's events have seq 1, 2, 3 ... with no gaps.
* **Atomic appends.** All events of one ``append`` are written, or none is.
* **Optimistic concurrency.** ``expected_version`` is an exact seq (the stream's
  current version), :data:`~spine.events.NO_STREAM` (the stream must not exist) or
  :data:`~spine.events.ANY`. A stale expectation raises
  :class:`~spine.errors.ConcurrencyError` naming the stream, the expected and the actual
  version, and writes nothing.
* **Idempotency.** Every event of one append carries the same ``command_id``. If the
  stream already holds that command id, the original result is returned with
  ``deduplicated=True`` and nothing is written — whatever ``expected_version`` says,
  so a retried command is safe.
* **Hash chain.** Each event's ``prev_hash`` is its predecessor's ``hash``
  (:data:`~spine.events.GENESIS_HASH` for seq 1); see :func:`spine.codec.verify_chain`.
* **Append-only.** No event is ever updated or deleted.
* **Imports.** Events sealed elsewhere (an export) are written at their own seqs with
  every field kept (:meth:`EventStore.import_events`); the rules are in
  :mod:`spine.importing`. Imported events are delivered to projectors as appended ones
  are, and their command ids deduplicate later appends.
* Driver errors are translated into :mod:`spine.errors`
  (:class:`~spine.errors.BackendUnavailable` when the store cannot be reached).

Delivery to projectors is a separate protocol: :mod:`spine.feed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from spine.events import AppendResult, EventEnvelope, ExpectedVersion, Mode, NewEvent
from spine.importing import ImportResult


@runtime_checkable
class EventStore(Protocol):
    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically (see the module's guarantees)."""
        ...

    async def read_stream(
        self, stream_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[EventEnvelope]:
        """The stream's events with ``from_seq <= seq <= to_seq``, in seq order.

        An unknown stream reads as an empty list.
        """
        ...

    async def find_command(self, stream_id: str, command_id: str) -> list[EventEnvelope]:
        """The events the command ``command_id`` appended to ``stream_id`` (empty if the
        stream holds none of its): what a repeated append of it would answer, read
        without appending (so a request can check every stream it touches first)."""
        ...

    async def import_events(
        self, stream_id: str, events: Sequence[EventEnvelope], *, dry_run: bool = False
    ) -> ImportResult:
        """Write ``events``, sealed elsewhere, into ``stream_id`` at their own seqs,
        keeping every field (event id, recorded time, hash, prev_hash).

        The events must be one stream's, at contiguous seqs, chained (from the genesis
        hash at seq 1), else :class:`~spine.errors.InvalidAppend` or
        :class:`~spine.errors.IntegrityError`. A seq the stream holds with the same event
        (id and hash) is skipped, so a repeated import writes nothing; a seq it holds with
        another event, events that do not chain onto the stream's, or a command the
        stream holds at other seqs, raise :class:`~spine.errors.ImportConflict`; events
        that would leave a gap after the stream's head, ``InvalidAppend``. Every check is
        made before anything is written.

        The rest is written with the optimistic check an append makes (the first new
        seq must be free), each command's events with their command marker and, on
        stores with an outbox, an outbox marker per write, as an append writes them: in
        one atomic write where the backend's atomic limit holds them all, else in
        several, in seq order, cut between commands (a crash between two leaves a prefix
        of the stream, which the same import completes). Another writer moving the
        stream meanwhile makes the import plan again.

        ``dry_run``: check everything, write nothing; ``written`` says what would be.
        """
        ...

    def scan(
        self,
        *,
        domain: str | None = None,
        tenant_id: str | None = None,
        mode: Mode | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[EventEnvelope]:
        """Every event of every stream of ``domain`` (``None``: every domain), of
        ``tenant_id`` and of ``mode`` where given (:func:`spine.streams.scan_scope`
        checks them: :class:`~spine.errors.InvalidStreamId`).

        Each stream's events come in seq order; no order across streams is promised.
        For rebuild, export and audit.
        """
        ...
