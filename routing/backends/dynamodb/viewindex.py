"""How a view record is indexed and matched on DynamoDB: the sortable text of order
values, the keys of the index a query shape is answered through, and the in-memory
check that decides whether a record answers a query.

**Sortable text.** A DynamoDB sort key has one type, but a view orders by values that
may be text, integers or floats (or be missing). :func:`sortable` turns each into text
whose binary order is the order of the values: missing (``None``) first, then every
number by value (``1`` and ``1.0`` equal, as in SQLite), then text, then lists and
objects (by their JSON, for a total order). An index's range key is that text, a
terminator and the record's key, so records sharing an order value follow by key and a
page is one key range of the index, read in order.

**Matching.** Every record a query reads is checked here against the whole query
(tenant, mode, scope filters, grants, data filters, expiry), whatever index found it:
an index narrows what is read, it never decides the answer. The comparisons follow
the SQLite view store (the reference): ``eq`` compares scalars (``true == 1``),
``contains`` holds when a list field has the value or a scalar field is it, ``ge`` and
``lt`` compare by :func:`sortable` (numbers below text; a missing field matches
neither).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from projections.views import SCOPE_FIELDS, Filter, QueryShape, ViewQuery, ViewRecord

#: The index every view table is made with: tenant and mode, by ``updated_at``.
DEFAULT_SHAPE: Final = QueryShape(order_by="updated_at")
#: DynamoDB's limit of global secondary indexes on one table.
MAX_INDEXES: Final = 20
#: Ends an order value's sortable text inside a range key (below every other character).
TERM: Final = "\x01\x01"
#: The longest index sort key DynamoDB takes (a hash key is kept short by a digest).
MAX_RANGE_BYTES: Final = 1024


def _escape(text: str) -> str:
    """``text`` without ``\\x00`` and with ``\\x01`` only as an escape, in the same order
    (so :data:`TERM` sorts below every character that may follow it)."""
    if "\x00" not in text and "\x01" not in text:
        return text
    return text.replace("\x01", "\x01\x03").replace("\x00", "\x01\x02")


def _number(value: int | float) -> str:
    """A number as text in value order: sign, then (for positives) exponent and digits,
    (for negatives) both complemented so a larger magnitude sorts lower."""
    d = Decimal(value)
    if d == 0:
        return "1"
    sign, digits, exponent = d.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(map(str, digits))
    magnitude = len(digits) + exponent  # d = 0.mantissa × 10**magnitude
    if not sign:
        return f"2{magnitude + 5000:04d}{mantissa}"
    flipped = mantissa.translate(str.maketrans("0123456789", "9876543210"))
    return f"0{5000 - magnitude:04d}{flipped}~"


def sortable(value: object) -> str:
    """``value`` as text whose order is the value's (see the module's docstring)."""
    if value is None:
        return "0"
    if isinstance(value, bool):
        return "1" + _number(int(value))
    if isinstance(value, int | float):
        return "1" + _number(value)
    if isinstance(value, str):
        return "2" + _escape(value)
    return "3" + _escape(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def is_sortable(text: str) -> bool:
    """Whether ``text`` could be :func:`sortable`'s (a cursor's order value)."""
    return text[:1] in ("0", "1", "2", "3") and "\x00" not in text


def range_key(order: str, key: str) -> str:
    """The range key of a record whose order value's :func:`sortable` text is ``order``."""
    return order + TERM + key


def field_value(record: ViewRecord, name: str) -> Any:
    """A scope field's value, or the data field's (``None`` where missing)."""
    if name in SCOPE_FIELDS:
        return getattr(record.scope, name)
    return record.data.get(name)


def canonical(value: object) -> str | int | float | None:
    """A value as an equality index holds it (``true`` is ``1``, ``2.0`` is ``2``);
    ``None`` if no equality filter can match it (missing, null, a list or an object)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str | int | float):
        return value
    return None


def index_name(shape: QueryShape) -> str:
    """The index built for ``shape`` (its own name, unless too long for DynamoDB)."""
    if len(shape.name) <= 250:
        return shape.name
    return "shape_" + hashlib.blake2b(shape.name.encode(), digest_size=16).hexdigest()


def index_attributes(shape: QueryShape) -> tuple[str, str]:
    """The item attributes holding ``shape``'s index hash and range keys."""
    digest = hashlib.blake2b(shape.name.encode(), digest_size=6).hexdigest()
    return "ih_" + digest, "ir_" + digest


def index_hash(tenant_id: str, mode: str, values: tuple[str | int | float, ...]) -> str:
    """The hash key of the partition holding records of tenant and mode whose equality
    fields hold ``values`` (JSON; a digest of it if long)."""
    base = f"{tenant_id}#{mode}"
    if not values:
        return base
    text = orjson.dumps(list(values)).decode()
    if len(text.encode()) > 1024:
        text = "~" + hashlib.blake2b(text.encode(), digest_size=32).hexdigest()
    return base + "#" + text


def index_keys(shape: QueryShape, record: ViewRecord) -> tuple[str, str] | None:
    """The hash and range keys of ``record`` in ``shape``'s index; ``None`` if it is not
    in it (a tombstone, or an equality field no filter can match)."""
    if record.deleted:
        return None
    values = []
    for name in shape.equal:
        value = canonical(field_value(record, name))
        if value is None:
            return None
        values.append(value)
    s = record.scope
    hash_key = index_hash(s.tenant_id, s.mode, tuple(values))
    return hash_key, range_key(sortable(field_value(record, shape.order_by)), record.key)


def equalities(query: ViewQuery) -> dict[str, str | int | float]:
    """The fields ``query`` pins to one value (scope filters and ``eq`` filters)."""
    pinned: dict[str, str | int | float] = {}
    for name in SCOPE_FIELDS:
        value = getattr(query, name)
        if value is not None:
            pinned[name] = value
    for f in query.where:
        if f.op == "eq":
            value = canonical(f.value)
            if value is not None:
                pinned.setdefault(f.field, value)
    return pinned


def _holds(record: ViewRecord, f: Filter) -> bool:
    value = field_value(record, f.field)
    if f.op == "eq":
        return canonical(value) is not None and value == f.value
    if f.op == "contains":
        if isinstance(value, list):
            return any(canonical(v) is not None and v == f.value for v in value)
        return canonical(value) is not None and value == f.value
    if canonical(value) is None:
        return False
    if f.op == "ge":
        return sortable(value) >= sortable(f.value)
    return sortable(value) < sortable(f.value)


def answers(record: ViewRecord, query: ViewQuery, now: datetime) -> bool:
    """Whether ``record`` is live and matches every part of ``query``."""
    if record.deleted:
        return False
    if record.expires_at is not None and record.expires_at <= now:
        return False
    s = record.scope
    if s.tenant_id != query.tenant_id or s.mode != query.mode:
        return False
    for name in SCOPE_FIELDS:
        wanted = getattr(query, name)
        if wanted is not None and getattr(s, name) != wanted:
            return False
    if query.grants is not None and not any(
        s.surface_id == g.surface_id
        and (s.project_id in g.project_ids if g.project_ids else s.project_id is None)
        for g in query.grants
    ):
        return False
    return all(_holds(record, f) for f in query.where)
