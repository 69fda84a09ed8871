"""The Azure Cosmos DB backend (``azure.cosmos.aio``).

* :mod:`.spine`: :class:`spine.EventStore` and :class:`spine.feed.RelaySource` (its
  outbox, which ``spine_feed: direct`` follows: :mod:`routing.backends.direct`);
* :mod:`.checkpoints`: :class:`spine.feed.CheckpointStore` and
  :class:`projections.parking.ParkingStore` (its own layout in its docstring);
* :mod:`.errors`: the SDK's errors translated into :mod:`spine.errors`, in one place;
* :mod:`.ids`: item ids for names Cosmos DB does not take as ids.

* :mod:`.views`: :class:`projections.views.ViewStore` (its own layout in its docstring).

With ``create``, the backend makes the database and each container a store needs, and
notes each in :attr:`CosmosBackend.created`.

Physical layout of the spine
----------------------------

One container per ``event_spine`` route (named by the route), in the database
``connections.cosmos.database``, partitioned by ``/stream_id``: every item of a stream
lives in the stream's logical partition. Three kinds of item, told apart by ``type``:

=============  ================================  ======================================
item           id                                fields
=============  ================================  ======================================
event          ``e`` + seq in 20 digits          seq, command_id, hash, and ``body``:
                                                 the stored form (:mod:`spine.codec`) as
                                                 one JSON string, kept byte for byte
command        ``c`` + the command id,           command_id, first_seq, last_seq
marker         base64url (any id is a valid
               Cosmos id: no ``/ \\ ? #``)
outbox marker  ``o`` + first seq in 20 digits    first_seq, last_seq, written_at (the
                                                 append's time), outbox_at (the same, in
                                                 microseconds since the epoch: sortable)
=============  ================================  ======================================

The container indexes ``type``, ``seq``, ``stream_id`` and ``outbox_at`` only: the body
is the bulk of every write, and every indexed byte costs request units.

Why an append is per-stream atomic and conditional
--------------------------------------------------

An append is ONE transactional batch in the stream's partition: a ``create`` of each
event item, of the command marker and of the outbox marker. Cosmos runs a batch all or
nothing, under snapshot isolation, and a ``create`` of an id that exists fails it with
409. So the create of seq N+1 is the optimistic-concurrency check (a writer that lost
the race finds it taken), and the create of the command marker refuses a repeated
command; no head item is rewritten by every append. Before the batch the store reads:

* an exact expected version N: seq N and the command marker, in one query (seq N must
  exist; its hash is the new first event's ``prev_hash``). Seq N+1 existing already
  fails the batch;
* ``ANY``: the stream's last event (one query), then the command marker. A lost race
  reads again and tries again;
* ``NO_STREAM`` (or 0): nothing; the create of seq 1 is the whole check.

A command the stream holds returns its original events (``deduplicated``) whatever
``expected_version`` says; a batch failing with 409 asks the marker again before it
calls the failure a conflict. Conflicts are decided by the writes (on the partition's
primary), never by a read: a stale read costs a retry, or a conflict that reports an
old actual version, never a duplicate seq or a gap. Appends to one stream through one
store are sent one at a time, in call order, so coroutines of one process do not race
each other for a seq (processes do, and the creates decide).

Limits: a batch holds at most 100 operations and 2 MB, so an append takes at most 98
events (with its two markers) and the request at most 2 MiB; a bigger append is refused
(:class:`~spine.errors.InvalidAppend`) and never split. A logical partition holds at
most 20 GB: one stream's bound.

Outbox: :meth:`~.spine.CosmosEventStore.pending` is a cross-partition query for the
outbox markers ordered by ``outbox_at``; :meth:`~.spine.CosmosEventStore.clear` deletes
them by id in their stream's partition. ``scan`` finds each stream by its seq-1 item
(one cross-partition query), then reads it in seq order in its own partition.

cosmosdb-server (the local test server) differs from Cosmos DB in three ways this
module works around (DESIGN §8):

* its batch is NOT atomic: it runs the operations in order, keeps those before the one
  that fails and answers the rest with 424. It runs a batch without interleaving other
  requests, though, so the operations are ordered to leave nothing behind there either:
  seq N+1's create first, then the command marker, then the other events and the outbox
  marker. The head is read no later than the marker, so any append committed since took
  seq N+1: a lost race, repeated command or not, fails the first operation, before
  anything is written;
* a point read of a missing item answers 500 (a TypeError in the server), not 404: items
  that may be absent are looked up with a query on their ids instead (which real Cosmos
  serves from the always-indexed ``id``);
* a one-partition query must name the partition key in its text (the header is not
  enough): every such query here says ``c.stream_id = @stream``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any, Final

from spine.errors import BackendUnavailable, RoutingError

try:
    from azure.cosmos import PartitionKey
    from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
    from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError
except ImportError as exc:  # the registry imports this module only when a route names it
    raise RoutingError(
        "backend 'cosmos' needs the Azure Cosmos DB SDK: pip install 'engines[cosmos]' "
        f"(azure-cosmos and aiohttp): {exc}"
    ) from exc

from routing.backends.cosmos.checkpoints import CosmosCheckpointStore
from routing.backends.cosmos.errors import BACKEND, translated
from routing.backends.cosmos.spine import CosmosEventStore
from routing.backends.cosmos.views import INDEXING_POLICY as VIEW_INDEXING_POLICY
from routing.backends.cosmos.views import PARTITION_KEY as VIEW_PARTITION_KEY
from routing.backends.cosmos.views import CosmosViewStore
from routing.config import Connections, CosmosConnection, Route

__all__ = [
    "CosmosBackend",
    "CosmosCheckpointStore",
    "CosmosEventStore",
    "CosmosViewStore",
    "open_backend",
]

PARTITION_KEY: Final = "/stream_id"
# Typed loosely: the SDK's annotation (dict[str, str]) is narrower than what it takes.
INDEXING_POLICY: Final[dict[str, Any]] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [
        {"path": "/type/?"},
        {"path": "/seq/?"},
        {"path": "/stream_id/?"},
        {"path": "/outbox_at/?"},
    ],
    "excludedPaths": [{"path": "/*"}],
}

#: The checkpoint container: small items, each kind read by its partition or ``type``.
CHECKPOINT_PARTITION_KEY: Final = "/pk"
CHECKPOINT_INDEXING_POLICY: Final[dict[str, Any]] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/pk/?"}, {"path": "/type/?"}],
    "excludedPaths": [{"path": "/*"}],
}


class CosmosBackend:
    """The stores behind every route to ``cosmos``, through one client. The client
    connects on first use; without ``create`` nothing is created (every container a
    store needs must exist)."""

    def __init__(self, client: CosmosClient, settings: CosmosConnection, *, create: bool) -> None:
        self.client = client
        self.settings = settings
        self.create = create
        self._connected = False
        self._connecting = asyncio.Lock()
        self._spines: dict[str, CosmosEventStore] = {}
        """One store per route, so a relay listening to one hears every append."""
        self._database_ready: DatabaseProxy | None = None
        self.created: list[str] = []
        """One line per database or container this backend made (``create``)."""
        self.properties: dict[str, dict[str, Any]] = {}
        """Each container's properties as last read (its indexing policy)."""

    async def _database(self, route: str) -> DatabaseProxy:
        async with self._connecting:
            if not self._connected:
                with translated(route):
                    await self.client.__aenter__()  # reads the account (endpoints, consistency)
                self._connected = True
        return self.client.get_database_client(self.settings.database)

    async def _container(
        self,
        name: str,
        *,
        partition_key: str = PARTITION_KEY,
        indexing_policy: dict[str, Any] | None = None,
        holds: str = "an event store",
    ) -> ContainerProxy:
        """The container ``name``, partitioned by ``partition_key``; with ``create``, made
        (with ``indexing_policy``) if absent, and noted in :attr:`created`."""
        database = await self._database(name)
        with translated(name):
            if self.create:
                database = await self._created_database()
                try:
                    container = await database.create_container(
                        name,
                        partition_key=PartitionKey(path=partition_key),
                        indexing_policy=indexing_policy or INDEXING_POLICY,
                    )
                except CosmosResourceExistsError:
                    container = database.get_container_client(name)
                else:
                    self.created.append(
                        f"cosmos container {name!r} in database {self.settings.database!r}"
                        f" (partition key {partition_key}, for {holds})"
                    )
            else:
                container = database.get_container_client(name)
            try:
                properties = await container.read()
            except CosmosResourceNotFoundError as exc:
                raise BackendUnavailable(
                    name,
                    BACKEND,
                    f"container {name!r} does not exist in database {self.settings.database!r}"
                    " (`engines routes provision` creates it)",
                ) from exc
        paths = (properties.get("partitionKey") or {}).get("paths")
        if paths != [partition_key]:
            raise RoutingError(
                f"cosmos container {name!r} is partitioned by {paths}, not {partition_key}: "
                f"it is not {holds} this backend wrote; route it elsewhere"
            )
        self.properties[name] = properties
        return container

    async def _created_database(self) -> DatabaseProxy:
        """The database, made first if absent (once per backend)."""
        if self._database_ready is None:
            try:
                self._database_ready = await self.client.create_database(self.settings.database)
            except CosmosResourceExistsError:
                self._database_ready = self.client.get_database_client(self.settings.database)
            else:
                self.created.append(f"cosmos database {self.settings.database!r}")
        return self._database_ready

    async def event_store(self, route: Route) -> CosmosEventStore:
        store = self._spines.get(route.name)
        if store is None:
            container = await self._container(route.name)
            store = self._spines.setdefault(route.name, CosmosEventStore(container, route.name))
        return store

    async def checkpoint_store(self, route: Route) -> CosmosCheckpointStore:
        container = await self._container(
            route.name,
            partition_key=CHECKPOINT_PARTITION_KEY,
            indexing_policy=CHECKPOINT_INDEXING_POLICY,
            holds="a checkpoint store",
        )
        return CosmosCheckpointStore(container, route.name)

    async def view_store(self, route: Route) -> CosmosViewStore:
        container = await self._container(
            route.name,
            partition_key=VIEW_PARTITION_KEY,
            indexing_policy=VIEW_INDEXING_POLICY,
            holds="a view store",
        )
        return CosmosViewStore(
            container,
            self.client.get_database_client(self.settings.database),
            route.name,
            self.properties[route.name],
            create=self.create,
            created=self.created,
        )

    async def ping(self) -> None:
        """Raise :class:`~spine.errors.BackendUnavailable` unless the account answers and
        the database exists (or may still be created, before any store is open), and
        every container a store was opened on is still there (a server that restarted
        empty, a container deleted behind the service's back)."""
        where = f"database {self.settings.database}"
        database = await self._database(where)
        with translated(where):
            try:
                await database.read()
            except CosmosResourceNotFoundError as exc:
                if self.properties or not self.create:
                    raise BackendUnavailable(where, BACKEND, "the database does not exist") from exc
                return
            if not self.properties:
                return
            present = {c["id"] async for c in database.list_containers()}
        for name in sorted(self.properties.keys() - present):
            raise BackendUnavailable(
                name,
                BACKEND,
                f"container {name!r} no longer exists in database {self.settings.database!r}"
                " (`engines routes provision` creates it again)",
            )

    async def aclose(self) -> None:
        await self.client.close()


def account_key(settings: CosmosConnection, data_dir: Path) -> str:
    """The account key, from ``key`` or from the file ``key_file`` names."""
    if (settings.key is None) == (settings.key_file is None):
        raise RoutingError("connections.cosmos needs exactly one of `key` and `key_file`")
    if settings.key is not None:
        key = settings.key
    else:
        path = Path(settings.key_file or "")
        if not path.is_absolute():
            path = data_dir / path
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RoutingError(f"connections.cosmos.key_file: cannot read {path}: {exc}") from exc
    try:
        base64.b64decode(key, validate=True)
    except binascii.Error as exc:
        raise RoutingError("connections.cosmos: the account key is not base64") from exc
    return key


async def open_backend(
    connections: Connections, data_dir: Path, *, create: bool = True
) -> CosmosBackend:
    settings = connections.cosmos
    if settings is None:
        raise RoutingError(
            "a route names backend 'cosmos' but the routes file has no `connections.cosmos`: "
            "add one with its `endpoint` and `key` (or `key_file`)"
        )
    if not settings.endpoint.startswith(("https://", "http://")):
        raise RoutingError(
            f"connections.cosmos.endpoint must be an https:// URL, not {settings.endpoint!r}"
        )
    client = CosmosClient(
        settings.endpoint,
        credential=account_key(settings, data_dir),
        connection_verify=settings.verify_tls,
        enable_endpoint_discovery=settings.endpoint_discovery,
        timeout=settings.timeout_seconds,
        read_timeout=settings.timeout_seconds,
        connection_timeout=settings.timeout_seconds,
    )
    return CosmosBackend(client, settings, create=create)
