"""The Cosmos DB view store against cosmosdb-server, beyond the contract suite: what one
transactional batch cannot take, ids for keys Cosmos DB does not take as ids, and
paging by a declared order (a composite index) as by an undeclared one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from projections.views import QueryShape, ViewQuery, ViewRecord, ViewWrite
from routing.backends.cosmos import CosmosBackend, CosmosViewStore
from routing.backends.cosmos.ids import MAX_ID
from routing.backends.cosmos.views import MAX_WRITE_RECORDS, record_id
from routing.config import Route
from spine.errors import InvalidInput
from spine.events import Scope
from spine.streams import stream_id
from tests.contract.cloud_cosmos import cosmos_harness
from tests.servers.fixtures import CosmosDBServer

pytestmark = pytest.mark.cosmos

ALICE = Scope(tenant_id="t1", mode="saas", user_id="alice", surface_id="chat")
STREAM = stream_id("notes", "t1", "saas", "n1")


@pytest.fixture
async def backend(
    cosmosdb_server: CosmosDBServer, unique: str, tmp_path: Path
) -> AsyncIterator[CosmosBackend]:
    async with cosmos_harness(cosmosdb_server, f"engines-{unique}", tmp_path) as h:
        assert isinstance(h.backend, CosmosBackend)
        yield h.backend


@pytest.fixture
async def views(backend: CosmosBackend, unique: str) -> CosmosViewStore:
    return await backend.view_store(Route(backend="cosmos", name=f"view_{unique}"))


def record(key: str, version: int = 1, scope: Scope = ALICE, **data: Any) -> ViewRecord:
    return ViewRecord(key=key, scope=scope, version=version, data={"at": "2026-01-01", **data})


async def test_a_write_over_one_batch_is_refused_whole_and_writes_nothing(
    views: CosmosViewStore,
) -> None:
    assert views.max_write_records == MAX_WRITE_RECORDS == 99
    fits = ViewWrite("notes/t1/saas/a", 0, 1, [(record(f"a{i}"), 0) for i in range(99)])
    over = ViewWrite(STREAM, 0, 1, [(record(f"k{i}"), 0) for i in range(100)])
    with pytest.raises(InvalidInput, match="at most 99"):
        await views.commit("p", [fits, over])
    assert await views.applied("p", ["notes/t1/saas/a", STREAM]) == {}
    assert await views.get("a0") is None
    assert await views.commit("p", [fits]) == []
    assert len(await views.get_many([f"a{i}" for i in range(99)])) == 99


async def test_a_write_whose_records_leave_its_streams_tenant_and_mode_is_refused(
    views: CosmosViewStore,
) -> None:
    other = ALICE.model_copy(update={"tenant_id": "t2"})
    elsewhere = ViewWrite(STREAM, 0, 1, [(record("mine"), 0), (record("theirs", scope=other), 0)])
    with pytest.raises(InvalidInput, match="one partition"):
        await views.commit("p", [elsewhere])
    assert await views.get_many(["mine", "theirs"]) == {}
    assert await views.applied("p", [STREAM]) == {}


async def test_keys_with_slashes_and_up_to_512_characters_have_valid_ids(
    views: CosmosViewStore,
) -> None:
    long_key = "notes/t1/saas/" + "x/" * 249
    assert len(long_key) == 512
    keys = ["a/b?c#d\\e", long_key, long_key[:-1] + "y"]
    ids = [record_id(k) for k in keys]
    assert all(len(i) <= MAX_ID and not set(i) & set("/\\?#") for i in ids)
    assert len(set(ids)) == 3
    assert await views.commit("p", [ViewWrite(STREAM, 0, 1, [(record(k), 0) for k in keys])]) == []
    found = await views.get_many(keys)
    assert sorted(found) == sorted(keys)
    got = await views.get(long_key)
    assert got is not None
    assert got.key == long_key


@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.parametrize("descending", [True, False])
async def test_paging_by_a_declared_or_undeclared_order_returns_each_record_once(
    backend: CosmosBackend, views: CosmosViewStore, declared: bool, descending: bool
) -> None:
    if declared:
        await views.declare([QueryShape(equal=("user_id",), order_by="at")])
        assert any("composite indexes" in line for line in backend.created)
        policy = (await views.container.read())["indexingPolicy"]
        paths = [[i["path"] for i in index] for index in policy["compositeIndexes"]]
        assert paths == [["/data/at", "/key"]] * 2
    # 13 records, many tied on their order value: the key breaks ties
    for i in range(13):
        await views.put(record(f"k{i:02d}", at=f"2026-01-0{i // 5 + 1}"))
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        query = ViewQuery(
            tenant_id="t1",
            mode="saas",
            user_id="alice",
            order_by="at",
            descending=descending,
            limit=3,
            cursor=cursor,
        )
        page = await views.query(query)
        seen += [(r.data["at"], r.key) for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(seen, reverse=descending)
    assert len(set(seen)) == 13


async def test_opening_with_create_says_what_it_made(backend: CosmosBackend, unique: str) -> None:
    await backend.view_store(Route(backend="cosmos", name=f"v_{unique}"))
    await backend.checkpoint_store(Route(backend="cosmos", name=f"c_{unique}"))
    assert any(f"v_{unique}" in line and "a view store" in line for line in backend.created)
    assert any(f"c_{unique}" in line and "checkpoint" in line for line in backend.created)
