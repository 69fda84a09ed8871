"""The ``ViewStore`` protocol: where projectors materialize read views.

Guarantees, for every backend:

* **Monotonic writes.** ``put`` writes a record only if its ``version`` is above the
  stored one (a view's version is the seq of the last spine event applied to it), so a
  redelivered or reordered event can never move a view backwards. ``delete`` is a
  tombstone with a version, under the same rule, so a late event cannot resurrect it.
* **Scoped queries.** Every query names tenant and mode; optional user, surface and
  project filters, the caller's grants (surface and project pairs), equality or
  list-membership filters on data fields, one ordering field and opaque cursor paging
  (keyset: stable under concurrent writes).
* **Expiry.** A record whose ``expires_at`` has passed reads as absent.
* **Applied progress per stream.** For each projector and stream, the store keeps the
  seq of the last event applied (:meth:`ViewStore.applied`). :meth:`ViewStore.commit`
  writes a stream's records and its progress in one atomic step, each conditional on
  what the writer read (compare-and-set), so two runners applying the same events, a
  stale cache or a replay can never apply an event twice or move a view backwards.
* Driver errors are translated into :mod:`spine.errors`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from spine.errors import InvalidInput
from spine.events import Identifier, Mode, Scope

FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
FilterValue = str | int | bool


#: The longest key a view record takes.
MAX_KEY: Final = 512


def fitted_key(key: str) -> str:
    """``key`` as a view record's key: itself, or, if it is longer than :data:`MAX_KEY`
    (a stream id of several 128-character parts), its domain (the first segment), ``#``
    and a digest of it. No readable key has that shape (each holds a ``/`` before any
    ``#``), so the two never collide."""
    if len(key) <= MAX_KEY:
        return key
    return key.split("/", 1)[0] + "#" + hashlib.blake2b(key.encode(), digest_size=32).hexdigest()


class ViewRecord(BaseModel):
    """One materialized record of a view."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=MAX_KEY)
    scope: Scope
    version: int = Field(ge=1)
    data: dict[str, Any] = Field(default_factory=dict)
    expires_at: datetime | None = None
    deleted: bool = False
    """A tombstone: invisible to get and query, but it keeps the version."""


class Filter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    field: FieldName
    op: Literal["eq", "contains", "ge", "lt"] = "eq"
    """``eq``: the field equals value; ``contains``: the list field holds value; ``ge``
    and ``lt``: the field is at or above, or below, value (a range: e.g. of times, which
    are text in one form, so they compare as text)."""
    value: FilterValue


#: The scope columns a query shape may name besides data fields.
SCOPE_FIELDS: Final = ("user_id", "surface_id", "project_id")


class QueryShape(BaseModel):
    """A query a view answers often: equality on ``equal`` (scope fields or data fields),
    ordered by ``order_by``, always within one tenant and mode. A projector declares its
    shapes (:meth:`ViewStore.declare`) so each backend builds what answers them without a
    scan (SQLite: an index; the cloud stores: their indexes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    equal: tuple[FieldName, ...] = Field(default=(), max_length=4)
    order_by: FieldName

    @property
    def name(self) -> str:
        """A stable name for what the backend builds for it."""
        return "__".join((*self.equal, "by", self.order_by))


class Grant(BaseModel):
    """One surface a caller may see, and the projects it may see there: a record on
    ``surface_id`` is visible under the grant if its project is one of ``project_ids``,
    or, when the grant names no projects, if it has none (a token granting some projects
    of a surface reaches nothing outside them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    surface_id: Identifier
    project_ids: tuple[Identifier, ...] = Field(default=(), max_length=256)


class ViewQuery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Identifier
    mode: Mode
    user_id: Identifier | None = None
    surface_id: Identifier | None = None
    project_id: Identifier | None = None
    grants: tuple[Grant, ...] | None = Field(default=None, max_length=64)
    """Only records visible under one of these grants (an empty tuple: none);
    ``None``: no restriction (operator tools)."""
    where: tuple[Filter, ...] = ()
    order_by: FieldName = "updated_at"
    """A data field present on every record of the view."""
    descending: bool = True
    limit: int = Field(default=50, ge=1, le=1000)
    cursor: str | None = None


class Page(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: tuple[ViewRecord, ...]
    next_cursor: str | None = None


def encode_cursor(order_value: Any, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([order_value, key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """The (order value, key) a cursor continues after; :class:`InvalidInput` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, key = orjson.loads(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is malformed") from exc
    if not isinstance(key, str) or not isinstance(value, str | int | float):
        raise InvalidInput("cursor is malformed")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise InvalidInput("cursor is malformed")
    return value, key


@dataclass(frozen=True, slots=True)
class ViewWrite:
    """What applying some events of one stream changed: atomic, and conditional.

    Written only if the stream's stored progress is ``applied_from`` and every record's
    stored version is the one it replaces (``0``: the key must be absent); then the
    progress becomes ``applied_to``."""

    stream_id: str
    applied_from: int
    applied_to: int
    records: Sequence[tuple[ViewRecord, int]] = ()
    """Each record, and the stored version it replaces."""


@runtime_checkable
class ViewStore(Protocol):
    max_write_records: int
    """The most records one :class:`ViewWrite` may hold (a backend's limit on one
    atomic write, less its progress item); :meth:`commit` refuses a larger write with
    :class:`spine.errors.InvalidInput`, and a projector runner splits a stream's events
    over several writes to fit."""

    async def get(self, key: str) -> ViewRecord | None:
        """The live record under ``key``; ``None`` if absent, deleted or expired."""
        ...

    async def get_many(
        self, keys: Sequence[str], *, include_deleted: bool = False
    ) -> Mapping[str, ViewRecord]:
        """Records by key (missing keys are left out). Tombstones only if asked."""
        ...

    async def put(self, record: ViewRecord) -> bool:
        """Write ``record`` if its version is above the stored one; True if written."""
        ...

    async def put_many(self, records: Sequence[ViewRecord]) -> int:
        """``put`` for many records at once; returns how many were written."""
        ...

    async def delete(self, key: str, scope: Scope, version: int) -> bool:
        """Tombstone ``key`` at ``version`` if above the stored one; True if written."""
        ...

    async def query(self, query: ViewQuery) -> Page:
        """Live records matching ``query`` in its order, one page at a time."""
        ...

    async def declare(self, shapes: Sequence[QueryShape]) -> None:
        """Build what answers ``shapes`` without a scan (idempotent; a store opened
        without ``create`` builds nothing). Queries of other shapes are still answered."""
        ...

    async def applied(self, projector: str, stream_ids: Sequence[str]) -> dict[str, int]:
        """The seq of the last event of each stream ``projector`` has applied (streams
        never applied are left out)."""
        ...

    async def commit(self, projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        """Apply each write atomically and in order (see :class:`ViewWrite`); return the
        stream ids whose writes were refused, having written nothing of them. A write
        that builds on a refused one (the same record) is refused too."""
        ...

    def records(
        self, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[ViewRecord]:
        """Every record of this view (of ``tenant_id``'s scope where given): tombstones and
        expired records included, in no promised order. For a rebuild's verification and a
        sandbox's inspection; reads the whole physical view, a page of ``batch_size`` at a
        time."""
        ...

    def progress(
        self, projector: str, *, tenant_id: str | None = None, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, int]]:
        """Every (stream id, applied seq) of ``projector`` in this view (streams of
        ``tenant_id`` where given: a stream id's second segment), in no promised order."""
        ...

    async def purge(self, *, tenant_id: str | None = None) -> int:
        """Delete every record of this view and every projector's applied progress
        (those of ``tenant_id`` where given); return the records deleted. For an in-place
        rebuild; not atomic (a rebuild that follows restores the view)."""
        ...


def too_large(writes: Sequence[ViewWrite], limit: int) -> None:
    """Refuse, with :class:`InvalidInput`, writes of which one holds more than ``limit``
    records (a store's :attr:`ViewStore.max_write_records`), before anything is written."""
    for write in writes:
        if len(write.records) > limit:
            raise InvalidInput(
                f"a view write of stream {write.stream_id!r} holds {len(write.records)}"
                f" records; this store takes at most {limit} in one write"
            )
