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


# -- the whole view: records, progress, purge (rebuild, sandbox) ----------------------------

BOB_T2 = Scope(tenant_id="t2", mode="lab", user_id="bob", surface_id="chat", project_id="p1")
ALICE_SAAS = ALICE.model_copy(update={"mode": "saas"})
TOTAL = QueryShape(equal=("kind",), order_by="at")


async def everything(
    views: ViewStore, tenant_id: str | None = None, batch_size: int = 2
) -> list[ViewRecord]:
    return [r async for r in views.records(tenant_id=tenant_id, batch_size=batch_size)]


async def progress_of(
    views: ViewStore, projector: str, tenant_id: str | None = None, batch_size: int = 2
) -> list[tuple[str, int]]:
    found = [p async for p in views.progress(projector, tenant_id=tenant_id, batch_size=batch_size)]
    return sorted(found)


async def fill(views: ViewStore) -> dict[str, list[str]]:
    """Live, tombstoned and expired records of tenants t1 (lab and saas) and t2, and the
    progress of projectors p and q over their streams; the keys of each tenant."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    t1 = [
        record(f"t1-{i}", i + 1, kind="a" if i % 2 else "b", at=f"2026-01-0{i + 1}")
        for i in range(5)
    ]
    t1.append(record("t1-saas", 1, scope=ALICE_SAAS, kind="a", at="2026-01-01"))
    t2 = [record(f"t2-{i}", 1, scope=BOB_T2, kind="a", at=f"2026-01-0{i + 1}") for i in range(3)]
    await views.put_many([*t1, *t2])
    await views.delete("t1-0", ALICE, 9)
    await views.delete("t2-0", BOB_T2, 9)
    await views.put(
        record("t1-old", 1, kind="a", at="2026-01-09").model_copy(update={"expires_at": past})
    )
    writes = [
        write("notes/t1/lab/a", 0, 3),
        write("notes/t1/saas/b", 0, 1),
        write(
            "notes/t2/lab/c", 0, 2, (record("t2-c", 2, scope=BOB_T2, kind="a", at="2026-01-05"), 0)
        ),
        write("notes/t1/lab/d", 0, 4, (record("t1-d", 4, kind="b", at="2026-01-07"), 0)),
    ]
    assert await views.commit("p", writes) == []
    assert (
        await views.commit("q", [write("notes/t1/lab/a", 0, 2), write("notes/t2/lab/c", 0, 1)])
        == []
    )
    return {
        "t1": [*(r.key for r in t1), "t1-old", "t1-d"],
        "t2": [*(r.key for r in t2), "t2-c"],
    }


async def test_an_empty_view_has_no_records_no_progress_and_purges_nothing(
    views: ViewStore,
) -> None:
    assert await everything(views) == []
    assert await everything(views, "t1") == []
    assert await progress_of(views, "p") == []
    assert await views.purge() == 0
    assert await views.purge(tenant_id="t1") == 0


async def test_records_yields_every_record_once_as_get_many_gives_it(views: ViewStore) -> None:
    keys = await fill(views)
    stored = await views.get_many([*keys["t1"], *keys["t2"]], include_deleted=True)

    found = await everything(views)  # 2 a page: many pages

    assert len(found) == len({r.key for r in found}) == len(stored) == 12
    assert {r.key: r for r in found} == stored
    tombs = {r.key for r in found if r.deleted}
    assert tombs == {"t1-0", "t2-0"}
    assert any(r.expires_at is not None for r in found)  # expired ones too
    for tenant in ("t1", "t2"):
        mine = await everything(views, tenant, batch_size=3)
        assert len(mine) == len({r.key for r in mine})
        assert {r.key: r for r in mine} == {k: stored[k] for k in keys[tenant]}
    assert await everything(views, "t3") == []
    assert {r.key for r in await everything(views, batch_size=1000)} == set(stored)


async def test_progress_lists_each_stream_of_one_projector_and_tenant(views: ViewStore) -> None:
    await fill(views)

    assert await progress_of(views, "p") == [
        ("notes/t1/lab/a", 3),
        ("notes/t1/lab/d", 4),
        ("notes/t1/saas/b", 1),
        ("notes/t2/lab/c", 2),
    ]
    assert await progress_of(views, "p", "t1", batch_size=1) == [
        ("notes/t1/lab/a", 3),
        ("notes/t1/lab/d", 4),
        ("notes/t1/saas/b", 1),
    ]
    assert await progress_of(views, "p", "t2") == [("notes/t2/lab/c", 2)]
    assert await progress_of(views, "q") == [("notes/t1/lab/a", 2), ("notes/t2/lab/c", 1)]
    assert await progress_of(views, "q", "t2") == [("notes/t2/lab/c", 1)]
    assert await progress_of(views, "p", "t") == []  # a tenant is a whole segment
    assert await progress_of(views, "nobody") == []


async def test_a_purged_view_is_empty_and_then_behaves_as_a_new_one(views: ViewStore) -> None:
    await views.declare([TOTAL])
    keys = await fill(views)

    assert await views.purge() == 12

    assert await everything(views) == []
    assert await progress_of(views, "p") == await progress_of(views, "q") == []
    assert await views.applied("p", ["notes/t1/lab/a", "notes/t2/lab/c"]) == {}
    assert await views.get_many([*keys["t1"], *keys["t2"]], include_deleted=True) == {}
    by_kind = ViewQuery(
        tenant_id="t1", mode="lab", where=(Filter(field="kind", value="a"),), order_by="at"
    )
    assert (await views.query(by_kind)).items == ()
    assert (await views.query(ViewQuery(tenant_id="t2", mode="lab"))).items == ()

    # as on a new view: an older version than the tombstone's, progress from nothing
    assert await views.put(record("t1-0", 1, kind="a", at="2026-02-01")) is True
    assert (
        await views.commit(
            "p", [write("notes/t1/lab/a", 0, 1, (record("t1-1", 1, kind="a", at="2026-02-02"), 0))]
        )
        == []
    )
    assert await views.applied("p", ["notes/t1/lab/a"]) == {"notes/t1/lab/a": 1}
    assert [r.key for r in (await views.query(by_kind)).items] == ["t1-1", "t1-0"]
    assert sorted(r.key for r in await everything(views)) == ["t1-0", "t1-1"]


async def test_purging_one_tenant_leaves_the_others_records_progress_and_queries(
    views: ViewStore,
) -> None:
    await views.declare([TOTAL])
    keys = await fill(views)
    t2_before = await views.get_many(keys["t2"], include_deleted=True)
    t2_query = ViewQuery(
        tenant_id="t2", mode="lab", where=(Filter(field="kind", value="a"),), order_by="at"
    )
    t2_page = await views.query(t2_query)
    assert [r.key for r in t2_page.items] == ["t2-c", "t2-2", "t2-1"]

    assert await views.purge(tenant_id="t1") == 8

    assert await views.get_many(keys["t1"], include_deleted=True) == {}
    assert {r.key: r for r in await everything(views)} == t2_before
    assert await progress_of(views, "p") == [("notes/t2/lab/c", 2)]
    assert await progress_of(views, "q") == [("notes/t2/lab/c", 1)]
    assert await views.query(t2_query) == t2_page
    for mode in ("lab", "saas"):
        assert (await views.query(ViewQuery(tenant_id="t1", mode=mode))).items == ()
    # t1 starts again from nothing; t2's progress still guards its stream
    assert await views.commit("p", [write("notes/t1/lab/a", 0, 1)]) == []
    assert await views.commit("p", [write("notes/t2/lab/c", 0, 1)]) == ["notes/t2/lab/c"]
    assert await views.purge(tenant_id="t1") == 0
    assert await views.applied("p", ["notes/t1/lab/a"]) == {}


async def test_a_key_put_again_under_another_tenant_is_one_record_of_that_tenant(
    views: ViewStore,
) -> None:
    await views.put(record("moved", 1, title="first"))
    await views.put(record("moved", 2, scope=BOB_T2, title="then"))
    await views.put(record("stays", 1))
    newest = (await views.get_many(["moved"], include_deleted=True))["moved"]
    assert newest.scope.tenant_id == "t2"

    assert [r for r in await everything(views, batch_size=1) if r.key == "moved"] == [newest]
    assert [r.key for r in await everything(views, "t1", batch_size=1)] == ["stays"]
    assert await everything(views, "t2") == [newest]

    assert await views.purge(tenant_id="t1") == 1
    assert (await views.get_many(["moved"], include_deleted=True))["moved"] == newest
    assert await views.purge(tenant_id="t2") == 1
    assert await views.get_many(["moved", "stays"], include_deleted=True) == {}
    assert await everything(views) == []
