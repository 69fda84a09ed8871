"""The ViewStore and CheckpointStore contracts (projections.views), for every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.views import CheckpointStore, Filter, Grant, ViewQuery, ViewRecord, ViewStore
from spine.errors import InvalidInput
from spine.events import Scope
from tests.contract.conftest import Harness

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat", project_id="p1")


@pytest.fixture
async def views(harness: Harness, unique: str) -> ViewStore:
    v: ViewStore = await harness.backend.view_store(harness.route(f"view_{unique}"))
    return v


@pytest.fixture
async def checkpoints(harness: Harness, unique: str) -> CheckpointStore:
    c: CheckpointStore = await harness.backend.checkpoint_store(harness.route(f"cp_{unique}"))
    return c


def record(key: str, version: int = 1, scope: Scope = ALICE, **data: Any) -> ViewRecord:
    return ViewRecord(
        key=key, scope=scope, version=version, data={"updated_at": "2026-01-01", **data}
    )


async def test_stores_satisfy_their_protocols(
    views: ViewStore, checkpoints: CheckpointStore
) -> None:
    assert isinstance(views, ViewStore)
    assert isinstance(checkpoints, CheckpointStore)


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

    assert await keys(Grant(surface_id="chat", project_ids=("p1",))) == ["chat-none", "chat-p1"]
    assert await keys(Grant(surface_id="chat")) == ["chat-none"]
    assert await keys(Grant(surface_id="canvas", project_ids=("p1",))) == []
    assert await keys(
        Grant(surface_id="chat", project_ids=("p2",)),
        Grant(surface_id="canvas", project_ids=("p2",)),
    ) == ["canvas-p2", "chat-none", "chat-p2"]
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


async def test_checkpoints_start_at_zero_only_move_forward_and_reset(
    checkpoints: CheckpointStore,
) -> None:
    assert await checkpoints.get("p") == 0
    await checkpoints.put("p", 10)
    await checkpoints.put("p", 7)
    assert await checkpoints.get("p") == 10
    await checkpoints.put("q", 3)
    assert await checkpoints.all() == {"p": 10, "q": 3}
    await checkpoints.reset("p")
    assert await checkpoints.get("p") == 0
