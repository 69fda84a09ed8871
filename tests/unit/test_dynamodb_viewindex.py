"""The DynamoDB view store's sortable text and matching, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

from projections.views import Filter, Grant, QueryShape, ViewQuery, ViewRecord
from routing.backends.dynamodb.viewindex import (
    answers,
    index_keys,
    range_key,
    sortable,
)
from spine.events import Scope

SCOPE = Scope(tenant_id="t1", mode="lab", surface_id="chat", project_id="p1")


def test_sortable_text_orders_missing_then_numbers_then_text() -> None:
    values: list[object] = [
        None,
        -(10**18),
        -1.55,
        -1.5,
        -1,
        -0.001,
        0,
        1e-300,
        0.5,
        1,
        1.5,
        1.55,
        2,
        10,
        10**18,
        "",
        "\x00",
        "\x01",
        "\x01a",
        "a",
        "a\x00",
        "ab",
        "é",
    ]
    texts = [sortable(v) for v in values]
    assert texts == sorted(texts)
    assert len(set(texts)) == len(texts)
    assert sortable(1) == sortable(1.0) == sortable(True)


def test_a_range_key_puts_shorter_values_first_whatever_the_key() -> None:
    assert range_key(sortable("a"), "zzz") < range_key(sortable("a\x00"), "a")
    assert range_key(sortable("a"), "zzz") < range_key(sortable("ab"), "a")
    assert range_key(sortable(-1.5), "z") > range_key(sortable(-1.55), "a")
    assert range_key(sortable(1), "a") < range_key(sortable(1), "b")


def test_tombstones_and_records_with_no_scalar_equality_value_are_left_out_of_an_index() -> None:
    shape = QueryShape(equal=("run",), order_by="at")
    live = ViewRecord(key="k", scope=SCOPE, version=1, data={"run": True, "at": 3})
    assert index_keys(shape, live) == ("t1#lab#[1]", range_key(sortable(3), "k"))
    assert index_keys(shape, live.model_copy(update={"deleted": True})) is None
    listed = live.model_copy(update={"data": {"run": ["r"], "at": 3}})
    assert index_keys(shape, listed) is None


def test_matching_follows_the_sqlite_store() -> None:
    now = datetime.now(UTC)
    r = ViewRecord(key="k", scope=SCOPE, version=1, data={"n": 2.0, "tags": ["a"], "s": "b"})

    def match(*where: Filter, **kw: object) -> bool:
        return answers(r, ViewQuery(tenant_id="t1", mode="lab", where=where, **kw), now)

    assert match(Filter(field="n", value=2))
    assert not match(Filter(field="n", value="2"))
    assert match(Filter(field="tags", op="contains", value="a"))
    assert match(Filter(field="s", op="contains", value="b"))  # a scalar holds itself
    assert match(Filter(field="s", op="ge", value=100))  # numbers sort below text
    assert not match(Filter(field="missing", op="lt", value=100))
    assert match(grants=(Grant(surface_id="chat", project_ids=("p1",)),))
    assert not match(grants=(Grant(surface_id="chat"),))
    assert not match(grants=())
