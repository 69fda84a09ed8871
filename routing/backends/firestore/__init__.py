"""Google Cloud Firestore: the backend behind every route to ``firestore``.

* this docstring and :mod:`.spine`: :class:`spine.EventStore` with its outbox, a
  :class:`spine.feed.RelaySource` (``spine_feed: direct`` relays it);
* :mod:`.checkpoints`: :class:`spine.feed.CheckpointStore` and
  :class:`projections.parking.ParkingStore`;
* :mod:`.views`: :class:`projections.views.ViewStore` (its layout, conditions, limits,
  queries and indexes in its docstring).

Indexes cannot be created through the client library: ``created`` says what the stores
opened here need deployed and :meth:`FirestoreBackend.index_config` gives it as
``firestore.indexes.json``.

The spine's layout, for a route named ``R`` (``~`` stands for ``/``; no stream-id
segment holds it)::

    R/{stream}                       one document per stream: {stream_id}
    R/{stream}/events/{seq}          one per event: {seq, hash, body}
                                     seq zero-padded to 19 digits, so key order is seq
                                     order; body is the stored form (spine.codec)
    R/{stream}/commands/{command}    one per append: {command_id, first_seq, last_seq}
                                     id "c" + base64url(command id): any string fits
    R~outbox/{stream}~{first_seq}    one per append until the relay clears it:
                                     {stream_id, first_seq, last_seq, shard, written_at}

``{stream}`` is the stream id with ``/`` as ``~``, so a stream-id prefix (a domain, a
tenant, a mode) is a key range of ``R``, which is what ``scan`` reads.

**An append is one atomic commit of conditional creates**: the event documents and the
command marker are ``create``s (the commit fails with ALREADY_EXISTS, writing nothing, if
any of them exists), with the outbox marker and, on a stream's first append, the stream's
document. Before it, one round trip reads what the append needs, by key: the command
marker (present: the original events are returned, deduplicated, whatever the expected
version) and, for an exact version N, events N (its hash chains the new events; absent:
a conflict) and N+1 (present: a conflict); for ANY, the events just past the last
version this store saw of the stream (only if the stream moved further than that, the
last event by a query on ``seq``, descending).

Two appends that race for a seq both create it, so one commit fails. The loser reads
again, which tells a conflict (:class:`~spine.errors.ConcurrencyError` with the actual
version) from a repeat of the same command (deduplicated); an ANY append reads the new
head and seals again (new ``prev_hash`` and ``recorded_at``) until it lands, after a
short random pause: ANY never fails with a conflict, only with
:class:`~spine.errors.BackendUnavailable` if it cannot land within ``timeout_seconds``.
This process's appends to one stream run one at a time, in the order they were made,
so only other processes race through the server. A commit whose outcome is unknown (a
transient error) is found again by its command marker and hashes, not written twice.

There is no per-stream head document that every append rewrites (Firestore sustains
about one write a second per document): a create per event gives the same check. And no
transaction: everything an append reads is immutable once it exists, so the only race is
between a document's absence and its creation, which the creates' preconditions decide
at commit; a transaction would add a round trip and locks (on the emulator, a query
inside a transaction under five concurrent writers stalls on "Transaction lock timeout").

**Limits** (refused with :class:`~spine.errors.InvalidAppend` before anything is sent,
never split): 500 writes per commit, so at most 497 events per append (the command
marker, the outbox marker and a new stream's document take three); 1 MiB per document,
counted as Firestore counts it (:func:`.layout.document_size`), so one event's stored
body can take a little under 1 MiB; and the request's size: 10 MiB, or 4 MiB on the
emulator, whose gRPC server refuses anything larger.

**Indexes**: reads go by key or key range, but for ANY's fallback query on ``seq`` (its
single-field index, descending, per stream: no hot range) and the outbox's ``pending``
(``shard in [...]``, ``written_at <=``, ordered by ``written_at``). ``written_at`` grows
with every append, which would cap the outbox near 500 writes a second if indexed alone;
provisioning exempts it (and every field no query reads: the bodies, hashes, markers'
fields) from single-field indexing and creates the composite index (shard, written_at),
whose ten shards give the insertion points: :data:`.layout.UNINDEXED_FIELDS` and
:data:`.layout.COMPOSITE_INDEXES`. The emulator needs and enforces no index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routing.backends.firestore.checkpoints import FirestoreCheckpointStore
from routing.backends.firestore.client import FirestoreDatabase, connect
from routing.backends.firestore.layout import (
    COMPOSITE_INDEXES,
    UNINDEXED_FIELDS,
    outbox_collection,
)
from routing.backends.firestore.spine import FirestoreEventStore
from routing.backends.firestore.views import FirestoreViewStore
from routing.config import Connections, Route
from spine.errors import RoutingError

__all__ = [
    "FirestoreBackend",
    "FirestoreCheckpointStore",
    "FirestoreDatabase",
    "FirestoreEventStore",
    "FirestoreViewStore",
    "open_backend",
]


class FirestoreBackend:
    """The stores behind every route to ``firestore``, on one database."""

    def __init__(self, db: FirestoreDatabase, *, create: bool = True) -> None:
        self.db = db
        self.create = create
        self.created: list[str] = []
        """One line per index a store opened here needs deployed (the client library
        cannot create indexes: :meth:`index_config` gives them)."""
        self._spines: dict[str, FirestoreEventStore] = {}
        self._views: dict[str, FirestoreViewStore] = {}

    async def event_store(self, route: Route) -> FirestoreEventStore:
        if route.name not in self._spines:
            # Nothing else here asks the database: a service must not start on one that
            # does not answer (as on the other backends, whose stores check their tables).
            await self.db.ping(route.name)
            self._spines[route.name] = FirestoreEventStore(self.db, route.name)
            if self.create:
                self.created.append(
                    f"firestore: event spine {route.name!r}: its outbox's composite index "
                    "and field exemptions to deploy (FirestoreBackend.index_config(), "
                    "firestore.indexes.json)"
                )
        return self._spines[route.name]

    async def view_store(self, route: Route) -> FirestoreViewStore:
        if route.name not in self._views:
            self._views[route.name] = FirestoreViewStore(
                self.db, route.name, create=self.create, created=self.created
            )
        return self._views[route.name]

    async def checkpoint_store(self, route: Route) -> FirestoreCheckpointStore:
        return FirestoreCheckpointStore(self.db, route.name)

    def index_config(self) -> dict[str, list[dict[str, Any]]]:
        """What the stores opened here need deployed, as ``firestore.indexes.json``
        (``firebase deploy --only firestore:indexes``): the spines' outbox index and
        field exemptions, and each view's declared shapes' indexes and exemptions."""
        indexes: list[dict[str, Any]] = []
        overrides: list[dict[str, Any]] = []
        for route in self._spines:
            names = {"{route}": route, "{outbox}": outbox_collection(route)}
            for group, fields in COMPOSITE_INDEXES.items():
                indexes.append(
                    {
                        "collectionGroup": names.get(group, group),
                        "queryScope": "COLLECTION",
                        "fields": [{"fieldPath": f, "order": o} for f, o in fields],
                    }
                )
            for group, unindexed in UNINDEXED_FIELDS.items():
                overrides += [
                    {"collectionGroup": names.get(group, group), "fieldPath": f, "indexes": []}
                    for f in unindexed
                ]
        for view in self._views.values():
            indexes += view.index_entries()
            overrides += view.field_overrides()
        return {"indexes": indexes, "fieldOverrides": overrides}

    async def ping(self) -> None:
        """Raise :class:`~spine.errors.BackendUnavailable` unless the database answers."""
        await self.db.ping()

    async def aclose(self) -> None:
        await self.db.aclose()


async def open_backend(
    connections: Connections, data_dir: Path, *, create: bool = True
) -> FirestoreBackend:
    """Open the database ``connections.firestore`` names. Collections come into being
    with their first document; ``create`` lets the stores record the indexes to deploy
    (``created``, :meth:`FirestoreBackend.index_config`)."""
    del data_dir
    settings = connections.firestore
    if settings is None:
        raise RoutingError(
            "a route names backend 'firestore' but the routes file has no "
            "`connections.firestore` (add at least its `project`, and `emulator_host` "
            "for a local emulator)"
        )
    return FirestoreBackend(await connect(settings), create=create)
