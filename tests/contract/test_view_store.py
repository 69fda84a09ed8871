"""The ViewStore and CheckpointStore contracts (projections.views), for every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.views import (
    Filter,
    Grant,
    QueryShape,
    ViewQuery,
    ViewRecord,
    ViewStore,
    ViewWrite,
)
from spine.errors import InvalidInput
from spine.events import Scope
from tests.contract.conftest import Harness

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat", project_id="p1")


@pytest.fixture
async def views(view_harness: Harness, unique: str) -> ViewStore:
    v: ViewStore = await view_harness.backend.view_store(view_harness.route(f"view_{unique}"))
    return v


def record(key: str, version: int = 1, scope: Scope = ALICE, **data: Any) -> ViewRecord:
    return ViewRecord(
        key=key, scope=scope, version=version, data={"updated_at": "2026-01-01", **data}
    )


async def test_the_store_satisfies_the_protocol(views: ViewStore) -> None:
    assert isinstance(views, ViewStore)


async def test_a_put_record_reads_back_equal(views: ViewStore) -> None:
    r = record("k1", 3, title="hello", tags=["a", "b"], nested={"x": [1, 2.5, None]})
    assert await views.put(r) is True
    assert await views.get("k1") == r
    assert await views.get("missing") is None


async def test_a_put_only_moves_the_version_forward(views: ViewStore) -> None:
    await views.put(record("k", 5, title="five"))
    assert await views.put(record("k", 5, title="again")) is False
    assert await views.put(record("k", 4, title="older")) is False
    got = await views.get("k")
    assert got is not None
    assert (got.version, got.data["title"]) == (5, "five")
    assert await views.put(record("k", 6, title="six")) is True
    got = await views.get("k")
    assert got is not None
    assert got.data["title"] == "six"


async def test_put_many_writes_only_the_newer_records_and_counts_them(views: ViewStore) -> None:
    await views.put(record("a", 2))
    written = await views.put_many([record("a", 1), record("b", 1), record("c", 4)])
    assert written == 2
    found = await views.get_many(["a", "b", "c", "zzz"])
    assert {k: r.version for k, r in found.items()} == {"a": 2, "b": 1, "c": 4}


async def test_a_deleted_record_is_absent_but_its_version_blocks_older_writes(
    views: ViewStore,
) -> None:
    await views.put(record("k", 1))
    assert await views.delete("k", ALICE, 2) is True
    assert await views.get("k") is None
    assert await views.get_many(["k"]) == {}
    tomb = (await views.get_many(["k"], include_deleted=True))["k"]
    assert (tomb.deleted, tomb.version) == (True, 2)
    assert await views.put(record("k", 1)) is False  # a late event cannot resurrect it
    assert await views.get("k") is None
    page = await views.query(ViewQuery(tenant_id="t1", mode="lab"))
    assert page.items == ()


async def test_an_expired_record_reads_as_absent(views: ViewStore) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    future = datetime.now(UTC) + timedelta(hours=1)
    await views.put(record("old", 1).model_copy(update={"expires_at": past}))
    await views.put(record("new", 1).model_copy(update={"expires_at": future}))
    assert await views.get("old") is None
    assert await views.get("new") is not None
    page = await views.query(ViewQuery(tenant_id="t1", mode="lab"))
    assert [r.key for r in page.items] == ["new"]


async def test_queries_never_cross_tenant_or_mode(views: ViewStore) -> None:
    await views.put(record("mine", 1))
    await views.put(record("theirs", 1, scope=ALICE.model_copy(update={"tenant_id": "t2"})))
    await views.put(record("saas", 1, scope=ALICE.model_copy(update={"mode": "saas"})))
    page = await views.query(ViewQuery(tenant_id="t1", mode="lab"))
    assert [r.key for r in page.items] == ["mine"]


async def test_queries_filter_by_scope_fields_and_data(views: ViewStore) -> None:
    bob = ALICE.model_copy(update={"user_id": "bob"})
    canvas = ALICE.model_copy(update={"surface_id": "canvas", "project_id": None})
    await views.put(record("a", 1, tags=["x", "y"], kind="note"))
    await views.put(record("b", 1, scope=bob, tags=["x"], kind="note"))
    await views.put(record("c", 1, scope=canvas, tags=["y"], kind="memo"))

    async def keys(**kw: Any) -> list[str]:
        page = await views.query(ViewQuery(tenant_id="t1", mode="lab", **kw))
        return sorted(r.key for r in page.items)

    assert await keys(user_id="alice") == ["a", "c"]
    assert await keys(surface_id="canvas") == ["c"]
    assert await keys(project_id="p1") == ["a", "b"]
    assert await keys(where=(Filter(field="tags", op="contains", value="x"),)) == ["a", "b"]
    assert await keys(where=(Filter(field="kind", value="memo"),)) == ["c"]
    assert await keys(user_id="alice", where=(Filter(field="tags", op="contains", value="y"),)) == [
        "a",
        "c",
    ]
    assert await keys(where=(Filter(field="tags", op="contains", value="x'--"),)) == []


async def test_range_filters_bound_a_field_from_at_or_above_to_below(views: ViewStore) -> None:
    for day in range(1, 6):
        await views.put(record(f"d{day}", 1, at=f"2026-01-0{day}T00:00:00.000000Z", n=day))

    async def keys(*where: Filter) -> list[str]:
        page = await views.query(ViewQuery(tenant_id="t1", mode="lab", where=where))
        return sorted(r.key for r in page.items)

    since = Filter(field="at", op="ge", value="2026-01-02T00:00:00.000000Z")
    until = Filter(field="at", op="lt", value="2026-01-04T00:00:00.000000Z")
    assert await keys(since) == ["d2", "d3", "d4", "d5"]
    assert await keys(until) == ["d1", "d2", "d3"]
    assert await keys(since, until) == ["d2", "d3"]
    assert await keys(Filter(field="n", op="ge", value=4)) == ["d4", "d5"]
    assert await keys(Filter(field="missing", op="lt", value="z")) == []


async def test_declared_shapes_answer_as_any_query_does(views: ViewStore) -> None:
    shapes = [
        QueryShape(equal=("user_id", "run"), order_by="at"),
        QueryShape(equal=("run",), order_by="at"),
        QueryShape(order_by="at"),
    ]
    await views.declare(shapes)
    await views.declare(shapes)  # idempotent
    bob = ALICE.model_copy(update={"user_id": "bob"})
    for i in range(6):
        who = ALICE if i % 2 else bob
        await views.put(record(f"e{i}", 1, scope=who, run=f"r{i % 3}", at=f"2026-01-0{i + 1}"))

    page = await views.query(
        ViewQuery(
            tenant_id="t1",
            mode="lab",
            user_id="alice",
            where=(Filter(field="run", value="r1"),),
            order_by="at",
            descending=False,
        )
    )
    assert [r.key for r in page.items] == ["e1"]
    page = await views.query(ViewQuery(tenant_id="t1", mode="lab", order_by="at", limit=2))
    assert [r.key for r in page.items] == ["e5", "e4"]


async def test_grants_limit_a_query_to_the_surfaces_and_projects_they_name(
    views: ViewStore,
) -> None:
    def at(surface: str, project: str | None) -> Scope:
        return ALICE.model_copy(update={"surface_id": surface, "project_id": project})

    await views.put(record("chat-p1", 1, scope=at("chat", "p1")))
    await views.put(record("chat-p2", 1, scope=at("chat", "p2")))
    await views.put(record("chat-none", 1, scope=at("chat", None)))
    await views.put(record("canvas-p2", 1, scope=at("canvas", "p2")))

    async def keys(*grants: Grant) -> list[str]:
        page = await views.query(ViewQuery(tenant_id="t1", mode="lab", grants=grants))
        return sorted(r.key for r in page.items)

    assert await keys(Grant(surface_id="chat", project_ids=("p1",))) == ["chat-p1"]
    assert await keys(Grant(surface_id="chat")) == ["chat-none"]
    assert await keys(Grant(surface_id="canvas", project_ids=("p1",))) == []
    assert await keys(
        Grant(surface_id="chat", project_ids=("p1", "p2")),
        Grant(surface_id="canvas", project_ids=("p2",)),
    ) == ["canvas-p2", "chat-p1", "chat-p2"]
    assert await keys() == []  # no grant: nothing visible
    page = await views.query(ViewQuery(tenant_id="t1", mode="lab"))
    assert len(page.items) == 4  # no restriction asked for


@pytest.mark.parametrize("descending", [True, False])
async def test_cursor_paging_returns_every_record_once_in_order(
    views: ViewStore, descending: bool
) -> None:
    # 11 records, several sharing an order value: the key breaks ties
    for i in range(11):
        await views.put(record(f"k{i:02d}", 1, updated_at=f"2026-01-{i // 3 + 1:02d}"))
    seen: list[ViewRecord] = []
    cursor = None
    while True:
        page = await views.query(
            ViewQuery(tenant_id="t1", mode="lab", limit=4, cursor=cursor, descending=descending)
        )
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    order = [(r.data["updated_at"], r.key) for r in seen]
    assert len(seen) == 11
    assert len(set(order)) == 11
    assert order == sorted(order, reverse=descending)


async def test_a_malformed_cursor_is_invalid_input(views: ViewStore) -> None:
    huge = "WzE4NDQ2NzQ0MDczNzA5NTUxNjE1LCJrIl0"  # [18446744073709551615,"k"]
    for bad in ["!!!", "bm90IGpzb24", "WzEsMiwzXQ", huge]:
        with pytest.raises(InvalidInput):
            await views.query(ViewQuery(tenant_id="t1", mode="lab", cursor=bad))


# -- applied progress and conditional commits ------------------------------------------------


def write(stream: str, after: int, to: int, *records: tuple[ViewRecord, int]) -> ViewWrite:
    return ViewWrite(stream, after, to, records)


async def test_a_commit_writes_records_and_the_streams_progress(views: ViewStore) -> None:
    assert await views.applied("p", ["s1", "s2"]) == {}
    refused = await views.commit(
        "p",
        [
            write("s1", 0, 2, (record("k1", 2, title="one"), 0)),
            write("s2", 0, 1, (record("k2", 1), 0), (record("k2-line-1", 1), 0)),
        ],
    )
    assert refused == []
    assert await views.applied("p", ["s1", "s2", "s3"]) == {"s1": 2, "s2": 1}
    assert await views.applied("other", ["s1"]) == {}  # progress is per projector
    found = await views.get_many(["k1", "k2", "k2-line-1"])
    assert {k: r.version for k, r in found.items()} == {"k1": 2, "k2": 1, "k2-line-1": 1}


async def test_a_commit_moves_on_from_the_progress_and_versions_it_read(views: ViewStore) -> None:
    await views.commit("p", [write("s", 0, 1, (record("k", 1, title="a"), 0))])
    refused = await views.commit("p", [write("s", 1, 3, (record("k", 3, title="c"), 1))])
    assert refused == []
    assert await views.applied("p", ["s"]) == {"s": 3}
    got = await views.get("k")
    assert got is not None
    assert (got.version, got.data["title"]) == (3, "c")


@pytest.mark.parametrize(
    ("stale", "why"),
    [
        (write("s", 0, 2, (record("k", 2, title="stale"), 1)), "progress is not what was read"),
        (write("s", 1, 2, (record("k", 2, title="stale"), 0)), "the record exists already"),
        (write("s", 1, 2, (record("k", 2, title="stale"), 5)), "the record is not at 5"),
        (write("s", 1, 2, (record("new", 1), 3)), "there is no record to replace"),
    ],
)
async def test_a_write_whose_conditions_fail_is_refused_and_writes_nothing(
    views: ViewStore, stale: ViewWrite, why: str
) -> None:
    await views.commit("p", [write("s", 0, 1, (record("k", 1, title="kept"), 0))])

    assert await views.commit("p", [stale]) == ["s"], why

    assert await views.applied("p", ["s"]) == {"s": 1}
    got = await views.get("k")
    assert got is not None
    assert (got.version, got.data["title"]) == (1, "kept")
    assert await views.get("new") is None


async def test_one_refused_write_leaves_the_other_streams_writes_in_place(
    views: ViewStore,
) -> None:
    await views.commit("p", [write("b", 0, 1, (record("kb", 1), 0))])
    refused = await views.commit(
        "p",
        [
            write("a", 0, 1, (record("ka", 1), 0)),
            write("b", 0, 2, (record("kb", 2), 0)),  # stale: b is at 1
            write("c", 0, 1, (record("kc", 1), 0)),
        ],
    )
    assert refused == ["b"]
    assert await views.applied("p", ["a", "b", "c"]) == {"a": 1, "b": 1, "c": 1}
    assert set(await views.get_many(["ka", "kc"])) == {"ka", "kc"}


async def test_a_write_building_on_a_refused_one_is_refused_too(views: ViewStore) -> None:
    """Two streams folded into one total: if the first stream's write is refused, the
    second's (computed on top of it) must not land either."""
    await views.commit("p", [write("a", 0, 1, (record("total", 1, n=1), 0))])
    refused = await views.commit(
        "p",
        [
            write("a", 0, 1, (record("total", 1, n=1), 0)),  # a replay: refused
            write("c", 0, 1, (record("total", 2, n=2), 1)),  # on top of the replay
        ],
    )
    assert refused == ["a", "c"]
    assert await views.applied("p", ["a", "c"]) == {"a": 1}
    got = await views.get("total")
    assert got is not None
    assert got.data["n"] == 1


async def test_one_record_folded_from_several_streams_in_one_commit(views: ViewStore) -> None:
    refused = await views.commit(
        "p",
        [
            write("a", 0, 3, (record("total", 1, n=3), 0)),
            write("c", 0, 1, (record("total", 2, n=4), 1)),
        ],
    )
    assert refused == []
    assert await views.applied("p", ["a", "c"]) == {"a": 3, "c": 1}
    got = await views.get("total")
    assert got is not None
    assert (got.version, got.data["n"]) == (2, 4)


async def test_progress_alone_can_move(views: ViewStore) -> None:
    assert await views.commit("p", [write("s", 0, 4)]) == []
    assert await views.commit("p", [write("s", 4, 5)]) == []
    assert await views.applied("p", ["s"]) == {"s": 5}


async def test_racing_commits_of_the_same_events_land_once(views: ViewStore) -> None:
    outcomes = await asyncio.gather(
        *(views.commit("p", [write("s", 0, 1, (record("k", 1, by=i), 0))]) for i in range(20))
    )
    assert sum(1 for o in outcomes if o == []) == 1
    assert await views.applied("p", ["s"]) == {"s": 1}


async def test_applied_takes_many_streams_at_once(views: ViewStore) -> None:
    streams = [f"s{i}" for i in range(1200)]
    await views.commit("p", [write(s, 0, i + 1) for i, s in enumerate(streams)])
    found = await views.applied("p", [*streams, "missing"])
    assert found == {s: i + 1 for i, s in enumerate(streams)}


async def test_a_write_over_the_stores_limit_is_invalid_and_writes_nothing(
    views: ViewStore,
) -> None:
    over = views.max_write_records + 1
    assert over <= 20_001, "a contract case writes this many records"
    records = [(record(f"k{i}"), 0) for i in range(over)]

    with pytest.raises(InvalidInput, match=str(views.max_write_records)):
        await views.commit("p", [ViewWrite("s", 0, 1, records)])

    assert await views.get("k0") is None
    assert await views.applied("p", ["s"]) == {}
