"""Projector positions and parked streams on Firestore: for a ``projection_checkpoints``
route named ``R``, two collections.

=============================  ==================================  ======================
document                       id                                  fields
=============================  ==================================  ======================
``R/{position}``               ``{consumer}:{partition}``, each     ``consumer``,
                               as :func:`.layout.encode_id`        ``partition``,
                                                                   ``token``,
                                                                   ``updated_at``
``R~parked/{parked stream}``   ``{projector}:{stream}``, likewise  ``projector``,
                                                                   ``stream_id``,
                                                                   ``parked_at``,
                                                                   ``body`` (the
                                                                   :class:`Parked` as
                                                                   JSON)
=============================  ==================================  ======================

``encode_id`` never makes a ``:``, so the pair is one to one. A consumer's positions
and a projector's parked streams are found by an equality query on ``consumer`` or
``projector`` (Firestore's automatic single-field indexes answer it).

**Why a position moves once from one position.** The first position is a ``create``
(the server refuses it with ALREADY_EXISTS if the document exists); a move reads the
document and updates it with the precondition that its ``update_time`` is still the
one read, and only if the stored token is ``after`` (a token that does not sort after
``after`` is refused before anything is read). Of twenty moves racing from one
position, the first update changes ``update_time`` and the other nineteen fail their
precondition (FAILED_PRECONDITION): one winner. Neither write is retried blindly: after
a transient error the document is read again, and the move counts as made if it holds
the new token (another writer could only have moved it to that token from the same
position, the same move).

A parked stream is replaced by a plain ``set``; a release is a delete with the
precondition that the document exists, so it tells whether there was one (after a
transient error it is reported unavailable, and releasing again is safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncDocumentReference
from google.cloud.firestore_v1.base_query import FieldFilter

from projections.parking import Parked
from routing.backends.firestore.client import (
    TRANSIENT,
    FirestoreDatabase,
    Snapshot,
    translated,
)
from routing.backends.firestore.layout import SLASH, encode_id
from spine.errors import IntegrityError

#: Parked streams' collection, beside the route's own (``~`` is in no route name).
PARKED: Final = f"{SLASH}parked"


def pair_id(first: str, second: str) -> str:
    """One document id for a pair of strings (``encode_id`` makes no ``:``)."""
    return f"{encode_id(first)}:{encode_id(second)}"


class FirestoreCheckpointStore:
    """:class:`spine.feed.CheckpointStore` and :class:`projections.parking.ParkingStore`
    on one route's two collections (see the module's docstring)."""

    def __init__(self, db: FirestoreDatabase, route: str) -> None:
        self.db = db
        self.route = route
        self.positions = db.client.collection(route)
        self.parked_streams = db.client.collection(route + PARKED)

    # -- positions ---------------------------------------------------------------------

    async def get(self, consumer: str) -> dict[str, str]:
        query = self.positions.where(filter=FieldFilter("consumer", "==", consumer))
        with translated(self.route):
            found = await self.db.query(query)
        return {_text(doc, "partition"): _text(doc, "token") for doc in found}

    async def put(self, consumer: str, partition: str, token: str, *, after: str | None) -> bool:
        if after is not None and token <= after:
            return False  # never backwards, never in place
        ref = self.positions.document(pair_id(consumer, partition))
        fields = {
            "consumer": consumer,
            "partition": partition,
            "token": token,
            "updated_at": datetime.now(UTC),
        }
        with translated(self.route):
            try:
                if after is None:
                    await ref.create(fields, retry=None, timeout=self.db.timeout)
                    return True
                snapshot = await self._read(ref)
                if not snapshot.exists or _text(snapshot, "token") != after:
                    return False
                option = self.db.client.write_option(last_update_time=snapshot.update_time)
                await ref.update(fields, option=option, retry=None, timeout=self.db.timeout)
                return True
            except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):
                return False
            except (*TRANSIENT, gexc.Cancelled):
                # applied or not: the document says (see the module's docstring)
                snapshot = await self._read(ref)
                return snapshot.exists and _text(snapshot, "token") == token

    async def _read(self, ref: AsyncDocumentReference) -> Snapshot:
        return (await self.db.get_all([ref]))[ref.path]

    async def reset(self, consumer: str) -> None:
        query = self.positions.where(filter=FieldFilter("consumer", "==", consumer)).select([])
        with translated(self.route):
            await self._delete([doc.reference for doc in await self.db.query(query)])

    async def _delete(self, refs: Sequence[AsyncDocumentReference]) -> None:
        """Delete ``refs`` (idempotent: retried like a read), a commit's worth at a time."""
        step = self.db.limits.max_writes
        for start in range(0, len(refs), step):
            batch = self.db.client.batch()
            for ref in refs[start : start + step]:
                batch.delete(ref)
            await batch.commit(retry=self.db.retry, timeout=self.db.timeout)

    async def all(self) -> dict[str, dict[str, str]]:
        with translated(self.route):
            found = await self.db.query(self.positions.select(["consumer", "partition", "token"]))
        out: dict[str, dict[str, str]] = {}
        for doc in found:
            out.setdefault(_text(doc, "consumer"), {})[_text(doc, "partition")] = _text(
                doc, "token"
            )
        return out

    # -- parked streams ----------------------------------------------------------------

    async def park(self, parked: Parked) -> None:
        ref = self.parked_streams.document(pair_id(parked.projector, parked.stream_id))
        fields = {
            "projector": parked.projector,
            "stream_id": parked.stream_id,
            "parked_at": parked.parked_at,
            "body": parked.model_dump_json(),
        }
        with translated(self.route):  # a set is idempotent: retried like a read
            await ref.set(fields, retry=self.db.retry, timeout=self.db.timeout)

    async def parked(self, projector: str | None = None) -> list[Parked]:
        query = self.parked_streams.select(["body"])
        if projector is not None:
            query = query.where(filter=FieldFilter("projector", "==", projector))
        with translated(self.route):
            found = await self.db.query(query)
        records = [Parked.model_validate_json(_text(doc, "body")) for doc in found]
        return sorted(records, key=lambda p: (p.parked_at, p.projector, p.stream_id))

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        wanted = list(dict.fromkeys(stream_ids))
        refs = [self.parked_streams.document(pair_id(projector, s)) for s in wanted]
        found: dict[str, Parked] = {}
        step = 500
        for start in range(0, len(refs), step):
            with translated(self.route):
                snapshots = await self.db.get_all(refs[start : start + step], fields=["body"])
            for snapshot in snapshots.values():
                if snapshot.exists:
                    record = Parked.model_validate_json(_text(snapshot, "body"))
                    found[record.stream_id] = record
        return {s: found[s] for s in wanted if s in found}

    async def release(self, projector: str, stream_id: str) -> bool:
        ref = self.parked_streams.document(pair_id(projector, stream_id))
        option = self.db.client.write_option(exists=True)
        with translated(self.route):
            try:
                await ref.delete(option=option, retry=None, timeout=self.db.timeout)
            except gexc.NotFound:
                return False
        return True


def _text(snapshot: Snapshot, name: str) -> str:
    value = (snapshot.to_dict() or {}).get(name)
    if not isinstance(value, str):
        raise IntegrityError(f"firestore document {snapshot.reference.path}: {name} not text")
    return value
