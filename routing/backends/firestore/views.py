"""Views on Firestore: :class:`projections.views.ViewStore` on two collections per view
route ``R``.

=============================  ===============================  ========================
document                       id                               fields
=============================  ===============================  ========================
``R/{record}``                 the key, :func:`.layout.         ``key``, ``tenant_id``,
                               encode_id` (a key may hold       ``mode``, ``user_id``,
                               ``/`` and take 512 characters)   ``surface_id``,
                                                                ``project_id``,
                                                                ``version``, ``deleted``,
                                                                ``expires_at`` (a time or
                                                                null), ``body`` (the data
                                                                as JSON bytes), ``f``
``R~applied/{progress}``       ``{projector}:{stream}``, each   ``projector``,
                               as ``encode_id``                 ``stream_id``, ``seq``
=============================  ===============================  ========================

``body`` gives the data back exactly (any JSON: nested lists, any key); ``f`` is what
queries read: a map of the data's top-level fields a query can name (a field name
Firestore does not reserve) whose value is a scalar or a list (of its scalars), which
Firestore indexes by itself (``f.tags`` for ``array-contains`` too). A scalar over
1,500 bytes (what Firestore indexes whole) or a list over 8 KiB stays in ``body``
only: an opaque value (a blob, a memory value) that no query names, which would
otherwise take the document over its limit. A filter on such a field does not find
that record.

**Why a commit is atomic and conditional.** A :class:`ViewWrite` is one batched write
(Firestore applies all of it or nothing) after one read, by key, of every document it
touches. Each record is a ``create`` (refused by the server, ALREADY_EXISTS, if the key
exists) when it replaces version 0, else an ``update`` preconditioned on the
``update_time`` read, made only if the version read is the one it replaces; the
progress document likewise from ``applied_from``. A write whose reads do not hold is
refused without writing; one whose document changed between the read and the commit
fails its precondition and writes nothing: refused too. So of twenty runners committing
the same events, one lands. Writes go in order; consecutive writes that touch no
document twice go in one read and one commit (at most 500 writes), and only if that
commit fails are they tried one at a time, so one stale write does not take the
others' down. A write touching a record a refused write touched is refused as well. A
commit whose outcome is unknown (a transient error) is reported unavailable: its
conditions make the runner's retry safe. ``put`` and ``delete`` read, then write
conditionally in the same way (retrying when they lose a race), so a version never
moves backwards.

**Limits** (refused with :class:`~spine.errors.InvalidInput` before anything is
written): a commit takes 500 writes, so a write holds at most :attr:`max_write_records`
(499: one is its progress) records; a document takes 1 MiB (the key, scope, ``body``
and ``f`` counted as Firestore counts them: the API's largest values, 256 KiB of JSON,
fit); a
request 10 MiB (4 MiB on the emulator).

**Queries.** The server filters on ``tenant_id``, ``mode``, ``deleted == false``, the
scope fields asked for, every ``eq`` filter, the first ``contains`` filter
(``array-contains``: Firestore takes one per query), ranges on the order field, and the
grants as one disjunction ``(surface_id == s AND project_id in [...] / == null) OR
...`` when it expands to at most 30 terms (Firestore's limit) — beyond it,
``surface_id in [...]`` if at most 30 surfaces, else nothing; it orders by
``f.<order_by>`` then ``key`` and continues after the cursor's (value, key) with
``start_after``, so a page boundary is stable under concurrent writes. What the server
did not filter — further ``contains``, ranges on other fields (Firestore would need
an index per pair of fields), grants past the limit, and expiry — is checked in memory:
the store reads on, a few hundred documents at a time, until the page is full or the
query is exhausted. Its cost is the documents read and thrown away: a selective
in-memory filter over a large view reads much of it. Expired records are invisible;
set a TTL policy on ``expires_at`` in Firestore so they are removed within a day and
stop costing reads. Values compare as Firestore compares them: a range or an equality
meets only values of its type (numbers with numbers, text with text, a boolean only a
boolean), where SQLite would compare across types.

**The whole view.** ``records``, ``progress`` and ``purge`` (a rebuild's verification,
a sandbox, an in-place rebuild) read documents in name order, ``batch_size`` a page
(``start_after`` the last): records filtered on ``tenant_id`` where asked (the
single-field index serves it), a projector's progress as the range of document ids
that begin with its own (no index needed; a stream's tenant, its id's second segment,
is checked here). ``purge`` deletes each page it reads in one batch (500 writes).

**Indexes.** The emulator answers any query; Firestore answers a query that filters on
several fields and orders by another only from a composite index. :meth:`declare`
records each shape's indexes (:meth:`FirestoreViewStore.index_entries`, entries of
``firestore.indexes.json``: tenant, mode, deleted, the shape's equal fields — and in a
second form the grants' surface and project — then the order field and ``key``, each
ascending and descending) and says so in the backend's ``created`` list; they are
deployed with ``firebase deploy --only firestore:indexes`` or ``gcloud firestore
indexes composite create``, which the client library cannot do. A query no deployed
index serves is still answered: the server's refusal (FAILED_PRECONDITION) makes the
store read every live record of the tenant and mode (equalities the single-field
indexes serve), filter and sort them in memory, and log which index is missing. That
is a scan per page: deploy the index.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncDocumentReference, AsyncQuery, AsyncWriteBatch
from google.cloud.firestore_v1.base_query import And, BaseFilter, FieldFilter, Or

from projections.views import (
    Filter,
    Grant,
    Page,
    QueryShape,
    ViewQuery,
    ViewRecord,
    ViewWrite,
    decode_cursor,
    encode_cursor,
)
from routing.backends.common import stream_tenant
from routing.backends.firestore.checkpoints import pair_id
from routing.backends.firestore.client import (
    BACKEND,
    DRIVER_ERRORS,
    FirestoreDatabase,
    Snapshot,
    translated,
    unavailable,
)
from routing.backends.firestore.layout import (
    SLASH,
    document_size,
    encode_id,
    value_size,
    write_size,
)
from spine.codec import trusted
from spine.errors import BackendUnavailable, IntegrityError, InvalidInput
from spine.events import Scope

log = logging.getLogger(__name__)

#: The progress collection beside a view's (``~`` is in no route name).
APPLIED: Final = f"{SLASH}applied"
#: Terms an ``or`` (after its expansion) and values an ``in`` take in one query.
MAX_DISJUNCTIONS: Final = 30
#: Documents one round of a query reads when some of its filters are checked here.
SCAN_PAGE: Final = 300
#: Documents one batched read asks for.
GET_CHUNK: Final = 300
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_RECORD_FIELDS: Final = (
    "key",
    "tenant_id",
    "mode",
    "user_id",
    "surface_id",
    "project_id",
    "version",
    "deleted",
    "expires_at",
    "body",
)

Fields = dict[str, object]
_Put = tuple[AsyncDocumentReference, Fields, int]
Predicate = Callable[[ViewRecord], bool]


class _Conflict(Exception):
    """A conditional write met a document other than the one read: nothing written."""


def servable(name: str) -> bool:
    """Whether a data field is in ``f`` under its name (Firestore reserves ``__x__``)."""
    return bool(_NAME.match(name)) and not (name.startswith("__") and name.endswith("__"))


#: The largest value Firestore indexes whole (it truncates longer ones in its indexes).
INDEXED_VALUE_BYTES: Final = 1500
#: The largest list kept in ``f`` (a note's 64 tags fit); a longer one is an opaque
#: value (a flow's blob, a memory value), which no query names.
INDEXED_LIST_BYTES: Final = 8 * 1024


def _queryable(data: Mapping[str, Any]) -> dict[str, object]:
    """``f``: the data's top-level fields a query may name: scalars of at most
    :data:`INDEXED_VALUE_BYTES`, and lists (of such scalars) of at most
    :data:`INDEXED_LIST_BYTES`. A larger value stays in ``body`` only: ``f`` would take
    it again, up to four times over (a small number takes 8 bytes, "0," in JSON 2),
    and a record within every size limit would not fit one document."""
    out: dict[str, object] = {}
    for name, value in data.items():
        if not servable(name):
            continue
        if _scalar(value):
            if value_size(value) <= INDEXED_VALUE_BYTES:
                out[name] = value
        elif isinstance(value, list):
            items = [i for i in value if _scalar(i) and value_size(i) <= INDEXED_VALUE_BYTES]
            if value_size(items) <= INDEXED_LIST_BYTES:
                out[name] = items
    return out


def _scalar(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return value is None or isinstance(value, str | float | bool)


def record_fields(record: ViewRecord) -> Fields:
    s = record.scope
    return {
        "key": record.key,
        "tenant_id": s.tenant_id,
        "mode": s.mode,
        "user_id": s.user_id,
        "surface_id": s.surface_id,
        "project_id": s.project_id,
        "version": record.version,
        "deleted": record.deleted,
        "expires_at": record.expires_at,
        "body": orjson.dumps(record.data),
        "f": _queryable(record.data),
    }


def _record(snapshot: Snapshot) -> ViewRecord:
    d = snapshot.to_dict() or {}
    try:
        expires = d["expires_at"]
        scope = {k: d[k] for k in ("tenant_id", "mode", "user_id", "surface_id", "project_id")}
        values = {
            "key": d["key"],
            "scope": trusted(Scope, scope),
            "version": d["version"],
            "data": orjson.loads(d["body"]),
            "expires_at": None if expires is None else _utc(expires),
            "deleted": bool(d["deleted"]),
        }
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise IntegrityError(
            f"firestore document {snapshot.reference.path} is not a view record: {exc}"
        ) from exc
    return trusted(ViewRecord, values)


def _utc(value: datetime) -> datetime:
    """A plain UTC datetime (the driver's own subclass compares unequal to nothing, but
    prints as itself)."""
    v = value.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def _live(record: ViewRecord | None, now: datetime) -> ViewRecord | None:
    if record is None or record.deleted:
        return None
    if record.expires_at is not None and record.expires_at <= now:
        return None
    return record


# -- values as Firestore compares them -------------------------------------------------


def _kind(value: object) -> int:
    """Firestore's order of types: null, booleans, numbers, text (others after)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 2
    if isinstance(value, str):
        return 4
    return 9


def _same(a: object, b: object) -> bool:
    return _kind(a) == _kind(b) < 9 and a == b


def _at_least(a: object, b: object) -> bool:
    return _kind(a) == _kind(b) in (2, 4) and a >= b  # type: ignore[operator]


def _below(a: object, b: object) -> bool:
    return _kind(a) == _kind(b) in (2, 4) and a < b  # type: ignore[operator]


def _holds(f: Filter, data: Mapping[str, Any]) -> bool:
    if f.field not in data:
        return False
    value = data[f.field]
    if f.op == "eq":
        return _same(value, f.value)
    if f.op == "contains":
        return isinstance(value, list) and any(_same(item, f.value) for item in value)
    if f.op == "ge":
        return _at_least(value, f.value)
    return _below(value, f.value)


def _visible(grants: Sequence[Grant], scope: Scope) -> bool:
    for g in grants:
        if g.surface_id != scope.surface_id:
            continue
        if (scope.project_id in g.project_ids) if g.project_ids else scope.project_id is None:
            return True
    return False


def _matches(query: ViewQuery) -> Predicate:
    """The whole query as a test of one record (expiry aside)."""

    def test(record: ViewRecord) -> bool:
        s = record.scope
        if record.deleted or s.tenant_id != query.tenant_id or s.mode != query.mode:
            return False
        for name in ("user_id", "surface_id", "project_id"):
            wanted = getattr(query, name)
            if wanted is not None and getattr(s, name) != wanted:
                return False
        if query.grants is not None and not _visible(query.grants, s):
            return False
        return all(_holds(f, record.data) for f in query.where)

    return test


def _grant_filter(grants: Sequence[Grant]) -> tuple[BaseFilter | None, bool]:
    """The server's filter for ``grants`` and whether it is exact (else narrower than
    nothing, wider than the grants: the rest is checked in memory)."""
    terms = [max(1, len(set(g.project_ids))) for g in grants]
    if sum(terms) <= MAX_DISJUNCTIONS:
        parts: list[BaseFilter] = []
        for g in grants:
            projects = sorted(set(g.project_ids))
            surface = FieldFilter("surface_id", "==", g.surface_id)
            if not projects:
                project = FieldFilter("project_id", "==", None)
            elif len(projects) == 1:
                project = FieldFilter("project_id", "==", projects[0])
            else:
                project = FieldFilter("project_id", "in", projects)
            parts.append(And(filters=[surface, project]))
        return (parts[0] if len(parts) == 1 else Or(filters=parts)), True
    surfaces = sorted({g.surface_id for g in grants})
    if len(surfaces) <= MAX_DISJUNCTIONS:
        return FieldFilter("surface_id", "in", surfaces), False
    return None, False


@dataclass
class _Prepared:
    """One write, ready: its records' documents and fields, its progress document."""

    projector: str
    write: ViewWrite
    records: list[tuple[AsyncDocumentReference, Fields, int]]
    progress: AsyncDocumentReference
    size: int
    paths: set[str] = field(default_factory=set)

    @property
    def keys(self) -> set[str]:
        return {r.key for r, _ in self.write.records}


class FirestoreViewStore:
    """:class:`projections.ViewStore` on one route's collections (see the module's
    docstring). ``create``: :meth:`declare` records indexes to deploy (and says so in
    ``created``)."""

    def __init__(
        self,
        db: FirestoreDatabase,
        route: str,
        *,
        create: bool = True,
        created: list[str] | None = None,
    ) -> None:
        self.db = db
        self.route = route
        self.create = create
        self.created = created if created is not None else []
        self.collection = db.client.collection(route)
        self.applied_collection = db.client.collection(route + APPLIED)
        self.shapes: dict[str, QueryShape] = {}
        self.max_write_records: int = db.limits.max_writes - 1
        """Records one :class:`ViewWrite` may hold (a commit's writes, less its progress)."""

    def _ref(self, key: str) -> AsyncDocumentReference:
        return self.collection.document(encode_id(key))

    # -- reading by key ------------------------------------------------------------------

    async def _get(
        self, refs: Sequence[AsyncDocumentReference], fields: Sequence[str] | None = None
    ) -> dict[str, Snapshot]:
        found: dict[str, Snapshot] = {}
        with translated(self.route):
            for start in range(0, len(refs), GET_CHUNK):
                found |= await self.db.get_all(refs[start : start + GET_CHUNK], fields=fields)
        return found

    async def get(self, key: str) -> ViewRecord | None:
        snapshot = (await self._get([self._ref(key)]))[self._ref(key).path]
        if not snapshot.exists:
            return None
        return _live(_record(snapshot), datetime.now(UTC))

    async def get_many(
        self, keys: Sequence[str], *, include_deleted: bool = False
    ) -> Mapping[str, ViewRecord]:
        refs = [self._ref(k) for k in dict.fromkeys(keys)]
        now = datetime.now(UTC)
        out: dict[str, ViewRecord] = {}
        for snapshot in (await self._get(refs)).values():
            if not snapshot.exists:
                continue
            record: ViewRecord | None = _record(snapshot)
            if not include_deleted:
                record = _live(record, now)
            if record is not None:
                out[record.key] = record
        return out

    async def applied(self, projector: str, stream_ids: Sequence[str]) -> dict[str, int]:
        refs = {s: self.applied_collection.document(pair_id(projector, s)) for s in stream_ids}
        found = await self._get(list(refs.values()), ["seq"])
        out: dict[str, int] = {}
        for stream_id, ref in refs.items():
            snapshot = found.get(ref.path)
            if snapshot is not None and snapshot.exists:
                out[stream_id] = _int(snapshot, "seq")
        return out

    # -- limits --------------------------------------------------------------------------

    def _checked(self, ref: AsyncDocumentReference, fields: Fields, what: str) -> int:
        """Refuse a document over Firestore's limit; return its share of a request."""
        size = document_size(ref.path.split("/"), fields)
        limit = self.db.limits.max_document_bytes
        if size > limit:
            raise InvalidInput(
                f"{what} takes {size} bytes as a Firestore document, over its limit of "
                f"{limit}; nothing was written"
            )
        return write_size(f"{self.db.documents}/{ref.path}", fields)

    def _prepare(self, projector: str, write: ViewWrite) -> _Prepared:
        if len(write.records) > self.max_write_records:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} holds {len(write.records)} "
                f"records, over the {self.max_write_records} one Firestore commit takes "
                f"(view {self.route!r}); nothing was written"
            )
        records = []
        size = 512
        for record, replaced in write.records:
            ref = self._ref(record.key)
            fields = record_fields(record)
            size += self._checked(ref, fields, f"view record {record.key[:80]!r}")
            records.append((ref, fields, replaced))
        progress = self.applied_collection.document(pair_id(projector, write.stream_id))
        size += 256
        if size > self.db.limits.max_request_bytes:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} takes about {size} bytes, over "
                f"the {self.db.limits.max_request_bytes} a Firestore request may take here; "
                "nothing was written"
            )
        paths = {ref.path for ref, _, _ in records} | {progress.path}
        return _Prepared(projector, write, records, progress, size, paths)

    def _chunks(self, prepared: Sequence[_Prepared]) -> Iterator[list[_Prepared]]:
        """Consecutive writes that touch no document twice and fit one commit."""
        chunk: list[_Prepared] = []
        paths: set[str] = set()
        writes = size = 0
        limits = self.db.limits
        for p in prepared:
            count = len(p.records) + 1
            if chunk and (
                paths & p.paths
                or writes + count > limits.max_writes
                or size + p.size > limits.max_request_bytes
            ):
                yield chunk
                chunk, paths, writes, size = [], set(), 0, 0
            chunk.append(p)
            paths |= p.paths
            writes += count
            size += p.size
        if chunk:
            yield chunk

    # -- conditional writes --------------------------------------------------------------

    async def _commit_batch(self, batch: AsyncWriteBatch) -> None:
        try:
            await batch.commit(retry=None, timeout=self.db.timeout)
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted) as exc:
            raise _Conflict(str(exc)) from exc
        except gexc.InvalidArgument as exc:
            raise InvalidInput(f"firestore refused the view write: {exc.message}") from exc
        except DRIVER_ERRORS as exc:
            raise unavailable(self.route, exc) from exc

    async def commit(self, projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        prepared = [self._prepare(projector, w) for w in writes]  # refuses before writing
        refused: list[str] = []
        lost: set[str] = set()
        for chunk in self._chunks(prepared):
            refused += await self._commit_chunk(chunk, lost)
        return refused

    async def _commit_chunk(self, chunk: list[_Prepared], lost: set[str]) -> list[str]:
        """Commit ``chunk`` (no document twice) in one read and one commit; if the
        commit meets a race, write by write. Return the refused stream ids, in order."""
        refs = [ref for p in chunk for ref, _, _ in p.records] + [p.progress for p in chunk]
        found = await self._get(refs, ["version", "seq"])
        batch = self.db.client.batch()
        going: list[_Prepared] = []
        refused: dict[int, str] = {}
        for position, p in enumerate(chunk):
            if p.keys & lost or not self._stage(batch, p, found):
                refused[position] = p.write.stream_id
                lost |= p.keys
            else:
                going.append(p)
        if going:
            try:
                await self._commit_batch(batch)
            except _Conflict:
                if len(chunk) == 1:
                    refused[0] = chunk[0].write.stream_id
                    lost |= chunk[0].keys
                else:  # one at a time: only the raced ones are refused
                    tried = {id(p) for p in going}
                    for position, p in enumerate(chunk):
                        if id(p) in tried and await self._commit_chunk([p], lost):
                            refused[position] = p.write.stream_id
        return [refused[i] for i in sorted(refused)]

    def _stage(self, batch: AsyncWriteBatch, p: _Prepared, found: Mapping[str, Snapshot]) -> bool:
        """Add ``p``'s writes to ``batch`` if what was read holds its conditions."""
        staged: list[Callable[[], None]] = []
        for ref, fields, replaced in p.records:
            snapshot = found[ref.path]
            if not replaced:
                if snapshot.exists:
                    return False
                staged.append(self._create(batch, ref, fields))
            else:
                if not snapshot.exists or _int(snapshot, "version") != replaced:
                    return False
                staged.append(self._update(batch, ref, fields, snapshot))
        write = p.write
        snapshot = found[p.progress.path]
        if not write.applied_from:
            if snapshot.exists:
                return False
            first = {
                "projector": p.projector,
                "stream_id": write.stream_id,
                "seq": write.applied_to,
            }
            staged.append(lambda: batch.create(p.progress, first))
        else:
            if not snapshot.exists or _int(snapshot, "seq") != write.applied_from:
                return False
            staged.append(self._update(batch, p.progress, {"seq": write.applied_to}, snapshot))
        for stage in staged:
            stage()
        return True

    @staticmethod
    def _progress_fields(p: _Prepared) -> Fields:
        return {"projector": p.projector, "stream_id": p.write.stream_id, "seq": p.write.applied_to}

    @staticmethod
    def _create(
        batch: AsyncWriteBatch, ref: AsyncDocumentReference, fields: Fields
    ) -> Callable[[], None]:
        return lambda: batch.create(ref, fields)

    def _update(
        self,
        batch: AsyncWriteBatch,
        ref: AsyncDocumentReference,
        fields: Fields,
        snapshot: Snapshot,
    ) -> Callable[[], None]:
        option = self.db.client.write_option(last_update_time=snapshot.update_time)
        return lambda: batch.update(ref, fields, option=option)

    async def put(self, record: ViewRecord) -> bool:
        return await self.put_many([record]) == 1

    async def delete(self, key: str, scope: Scope, version: int) -> bool:
        return await self.put(ViewRecord(key=key, scope=scope, version=version, deleted=True))

    async def put_many(self, records: Sequence[ViewRecord]) -> int:
        """Each record if its version is above the stored one: read, then write on the
        condition that nothing changed since; one that lost a race is read again."""
        queue = [(self._ref(r.key), record_fields(r), r.version) for r in records]
        for ref, fields, _ in queue:
            self._checked(ref, fields, f"view record {fields['key']!s:.80}")
        written = 0
        single = False  # after a race: one record per commit, so only the raced go again
        while queue:
            taken: list[_Put] = []
            rest: list[_Put] = []
            seen: set[str] = set()
            room = 1 if single else self.db.limits.max_writes
            for item in queue:  # a key once per commit; the rest keep their order
                if item[0].path in seen or len(taken) >= room:
                    rest.append(item)
                else:
                    seen.add(item[0].path)
                    taken.append(item)
            landed, again = await self._put_round(taken)
            written += landed
            single = single or bool(again)
            queue = again + rest
        return written

    async def _put_round(self, items: list[_Put]) -> tuple[int, list[_Put]]:
        """One read and one conditional commit: how many landed, and what to try again."""
        found = await self._get([ref for ref, _, _ in items], ["version"])
        batch = self.db.client.batch()
        going = []
        for ref, fields, version in items:
            snapshot = found[ref.path]
            if not snapshot.exists:
                batch.create(ref, fields)
            elif _int(snapshot, "version") < version:
                self._update(batch, ref, fields, snapshot)()
            else:
                continue  # not newer: nothing to write
            going.append((ref, fields, version))
        if not going:
            return 0, []
        try:
            await self._commit_batch(batch)
        except _Conflict:
            return 0, going
        return len(going), []

    # -- the whole view (rebuild, sandbox) -----------------------------------------------

    async def _pages(self, base: AsyncQuery, batch_size: int) -> AsyncIterator[list[Snapshot]]:
        """``base`` (ordered by document name) ``batch_size`` documents a page."""
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
        last: Snapshot | None = None
        while True:
            q = base if last is None else base.start_after(last)
            with translated(self.route):
                found = await self.db.query(q.limit(batch_size))
            if found:
                yield found
            if len(found) < batch_size:
                return
            last = found[-1]

    def _all_records(self, tenant_id: str | None) -> AsyncQuery:
        q = self.collection.order_by("__name__")
        if tenant_id is not None:
            q = q.where(filter=FieldFilter("tenant_id", "==", tenant_id))
        return q

    async def records(
        self, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[ViewRecord]:
        async for found in self._pages(self._all_records(tenant_id), batch_size):
            for snapshot in found:
                yield _record(snapshot)

    async def progress(
        self, projector: str, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, int]]:
        """The projector's progress documents: one range of document ids (each begins
        with the projector's), so no index is needed; the tenant is checked here."""
        prefix = encode_id(projector)  # then ":" (pair_id), which no encode_id makes
        base = (
            self.applied_collection.order_by("__name__")
            .start_at({"__name__": prefix + ":"})
            .end_before({"__name__": prefix + ";"})
        )
        async for found in self._pages(base, batch_size):
            for snapshot in found:
                stream_id = _text(snapshot, "stream_id")
                if tenant_id is None or stream_tenant(stream_id) == tenant_id:
                    yield stream_id, _int(snapshot, "seq")

    async def purge(self, *, tenant_id: str | None = None) -> int:
        """Delete the record documents (of ``tenant_id``) and the progress documents (of
        its streams), a batch of up to 500 per page read."""
        deleted = 0
        records = self._all_records(tenant_id).select(["tenant_id"])
        async for found in self._pages(records, self.db.limits.max_writes):
            await self._delete([snapshot.reference for snapshot in found])
            deleted += len(found)
        applied = self.applied_collection.order_by("__name__").select(["stream_id"])
        async for found in self._pages(applied, self.db.limits.max_writes):
            await self._delete(
                [
                    snapshot.reference
                    for snapshot in found
                    if tenant_id is None or stream_tenant(_text(snapshot, "stream_id")) == tenant_id
                ]
            )
        return deleted

    async def _delete(self, refs: Sequence[AsyncDocumentReference]) -> None:
        """Delete ``refs`` in one batch (a delete is idempotent: tried again on a race)."""
        if not refs:
            return
        for attempt in range(3):
            batch = self.db.client.batch()
            for ref in refs:
                batch.delete(ref)
            try:
                await self._commit_batch(batch)
                return
            except _Conflict as exc:
                if attempt == 2:
                    raise BackendUnavailable(
                        self.route, BACKEND, f"deletes kept meeting contention: {exc}"
                    ) from exc

    # -- queries -------------------------------------------------------------------------

    async def declare(self, shapes: Sequence[QueryShape]) -> None:
        """Record each shape's composite indexes (:meth:`index_entries`): the client
        library cannot create them, provisioning deploys them."""
        if not self.create:
            return
        for shape in shapes:
            if shape.name in self.shapes:
                continue
            self.shapes[shape.name] = shape
            self.created.append(
                f"firestore: view {self.route!r} query shape {shape.name}: 4 composite "
                "indexes to deploy (FirestoreBackend.index_config(), firestore.indexes.json)"
            )

    def index_entries(self) -> list[dict[str, Any]]:
        """The declared shapes' composite indexes, as ``firestore.indexes.json`` entries:
        per shape, with and without the grants' fields, ascending and descending."""
        entries: list[dict[str, Any]] = []
        for shape in self.shapes.values():
            equal = [
                name if name in ("user_id", "surface_id", "project_id") else f"f.{name}"
                for name in shape.equal
            ]
            plain = ["tenant_id", "mode", "deleted", *equal]
            granted = [*plain, *(g for g in ("surface_id", "project_id") if g not in plain)]
            for fields in (plain, granted):
                for direction in ("ASCENDING", "DESCENDING"):
                    ordered = [f"f.{shape.order_by}", "key"]
                    entries.append(
                        {
                            "collectionGroup": self.route,
                            "queryScope": "COLLECTION",
                            "fields": [
                                *({"fieldPath": n, "order": "ASCENDING"} for n in fields),
                                *({"fieldPath": n, "order": direction} for n in ordered),
                            ],
                        }
                    )
        return entries

    def field_overrides(self) -> list[dict[str, Any]]:
        """Fields no query reads, exempt from Firestore's automatic indexes."""
        return [
            {"collectionGroup": self.route, "fieldPath": name, "indexes": []}
            for name in ("body", "version", "expires_at")
        ] + [
            {"collectionGroup": self.route + APPLIED, "fieldPath": name, "indexes": []}
            for name in ("projector", "stream_id", "seq")
        ]

    async def query(self, query: ViewQuery) -> Page:
        after = decode_cursor(query.cursor) if query.cursor is not None else None
        if query.grants is not None and not query.grants:
            return Page(items=())
        if not servable(query.order_by):
            return await self._scan(query, after)
        try:
            return await self._query(query, after)
        except gexc.FailedPrecondition as exc:
            if "index" not in str(exc).lower():
                raise unavailable(self.route, exc) from exc
            log.warning(
                "view %s: no Firestore index serves a query ordered by %s (%s); it is answered "
                "by reading every live record of the tenant and mode: deploy the index",
                self.route,
                query.order_by,
                " ".join(str(exc).split())[:300],
            )
            return await self._scan(query, after)
        except DRIVER_ERRORS as exc:
            raise unavailable(self.route, exc) from exc

    def _server_query(self, query: ViewQuery) -> tuple[AsyncQuery, bool]:
        """The query the server answers, and whether it is exact (else some filter is
        checked in memory)."""
        q = (
            self.collection.where(filter=FieldFilter("tenant_id", "==", query.tenant_id))
            .where(filter=FieldFilter("mode", "==", query.mode))
            .where(filter=FieldFilter("deleted", "==", False))
        )
        exact = True
        for name in ("user_id", "surface_id", "project_id"):
            value = getattr(query, name)
            if value is not None:
                q = q.where(filter=FieldFilter(name, "==", value))
        if query.grants is not None:
            grants, exact = _grant_filter(query.grants)
            if grants is not None:
                q = q.where(filter=grants)
        contains = False
        for f in query.where:
            path = f"f.{f.field}"
            if not servable(f.field):
                exact = False
            elif f.op == "eq":
                q = q.where(filter=FieldFilter(path, "==", f.value))
            elif f.op == "contains" and not contains:
                q = q.where(filter=FieldFilter(path, "array_contains", f.value))
                contains = True
            elif f.op in ("ge", "lt") and f.field == query.order_by:
                q = q.where(filter=FieldFilter(path, ">=" if f.op == "ge" else "<", f.value))
            else:
                exact = False
        return q, exact

    async def _query(self, query: ViewQuery, after: tuple[Any, str] | None) -> Page:
        base, exact = self._server_query(query)
        direction = AsyncQuery.DESCENDING if query.descending else AsyncQuery.ASCENDING
        order = f"f.{query.order_by}"
        base = base.order_by(order, direction=direction).order_by("key", direction=direction)
        want = query.limit + 1
        size = want if exact else max(want, SCAN_PAGE)
        test = _matches(query)
        now = datetime.now(UTC)
        items: list[tuple[ViewRecord, object]] = []
        position = after
        while len(items) < want:
            q = base if position is None else base.start_after(list(position))
            found = await self.db.query(q.limit(size))
            for snapshot in found:
                record = _record(snapshot)
                if _live(record, now) is not None and test(record):
                    items.append((record, _order_value(snapshot, query.order_by)))
            if len(found) < size:
                break
            last = found[-1]
            position = (_order_value(last, query.order_by), _text(last, "key"))
        return _page(items, query.limit)

    async def _scan(self, query: ViewQuery, after: tuple[Any, str] | None) -> Page:
        """Every live record of the tenant and mode, filtered and ordered here."""
        base = (
            self.collection.where(filter=FieldFilter("tenant_id", "==", query.tenant_id))
            .where(filter=FieldFilter("mode", "==", query.mode))
            .where(filter=FieldFilter("deleted", "==", False))
            .order_by("__name__")
        )
        test = _matches(query)
        now = datetime.now(UTC)
        rows: list[tuple[tuple[int, Any, str], ViewRecord, object]] = []
        last: Snapshot | None = None
        while True:
            q = base if last is None else base.start_after(last)
            with translated(self.route):
                found = await self.db.query(q.limit(SCAN_PAGE))
            for snapshot in found:
                record = _record(snapshot)
                if query.order_by not in record.data or _live(record, now) is None:
                    continue
                value = record.data[query.order_by]
                if _kind(value) < 9 and test(record):
                    rows.append(((_kind(value), value, record.key), record, value))
            if len(found) < SCAN_PAGE:
                break
            last = found[-1]
        rows.sort(key=lambda row: row[0], reverse=query.descending)
        if after is not None:
            mark = (_kind(after[0]), after[0], after[1])
            if query.descending:
                rows = [r for r in rows if r[0] < mark]
            else:
                rows = [r for r in rows if r[0] > mark]
        return _page([(record, value) for _, record, value in rows], query.limit)


def _page(items: list[tuple[ViewRecord, object]], limit: int) -> Page:
    more = len(items) > limit
    items = items[:limit]
    cursor = encode_cursor(items[-1][1], items[-1][0].key) if more else None
    return Page(items=tuple(record for record, _ in items), next_cursor=cursor)


def _order_value(snapshot: Snapshot, name: str) -> object:
    f = (snapshot.to_dict() or {}).get("f") or {}
    return f.get(name) if isinstance(f, dict) else None


def _int(snapshot: Snapshot, name: str) -> int:
    value = (snapshot.to_dict() or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IntegrityError(f"firestore document {snapshot.reference.path}: {name} not an int")
    return value


def _text(snapshot: Snapshot, name: str) -> str:
    value = (snapshot.to_dict() or {}).get(name)
    if not isinstance(value, str):
        raise IntegrityError(f"firestore document {snapshot.reference.path}: {name} not text")
    return value
