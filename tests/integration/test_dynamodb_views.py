"""What only the DynamoDB view store does, against moto_server: its transaction and
item limits, the indexes it builds for declared shapes, and the order it keeps where no
index helps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from projections.views import Filter, QueryShape, ViewQuery, ViewRecord, ViewWrite
from routing.backends.dynamodb import DynamoBackend, DynamoViewStore
from routing.backends.dynamodb import open_backend as open_dynamodb
from routing.backends.dynamodb.viewindex import index_attributes
from routing.config import Route
from spine.errors import InvalidInput
from spine.events import Scope
from tests.contract.cloud_dynamodb import dynamodb_connections
from tests.servers.fixtures import MotoServer

pytestmark = pytest.mark.dynamodb

SCOPE = Scope(tenant_id="t1", mode="saas", user_id="alice", surface_id="chat")
ROUTE = Route(backend="dynamodb", name="view")
RUNS = QueryShape(equal=("run",), order_by="at")


def record(key: str, version: int = 1, **data: Any) -> ViewRecord:
    return ViewRecord(key=key, scope=SCOPE, version=version, data={"updated_at": "u", **data})


@pytest.fixture
async def opener(
    moto_server: MotoServer, tmp_path: Path, unique: str
) -> AsyncIterator[Callable[..., Awaitable[DynamoBackend]]]:
    """Opens backends on one set of tables (as several processes would)."""
    opened: list[DynamoBackend] = []

    async def open_one(*, create: bool = True) -> DynamoBackend:
        connections = dynamodb_connections(moto_server, f"v{unique}_")
        backend = await open_dynamodb(connections, tmp_path, create=create)
        opened.append(backend)
        return backend

    yield open_one
    for backend in opened:
        await backend.aclose()


@pytest.fixture
async def backend(opener: Callable[..., Awaitable[DynamoBackend]]) -> DynamoBackend:
    return await opener()


@pytest.fixture
async def views(backend: DynamoBackend) -> DynamoViewStore:
    return await backend.view_store(ROUTE)


def index_reads(store: DynamoViewStore, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The index each query request of ``store`` reads, from now on."""
    reads: list[str | None] = []
    query = store._client.query

    async def spy(**request: Any) -> Any:
        reads.append(request.get("IndexName"))
        return await query(**request)

    monkeypatch.setattr(store._client, "query", spy)
    return reads


async def test_a_write_over_the_transaction_limit_is_refused_and_nothing_is_written(
    views: DynamoViewStore,
) -> None:
    assert views.max_write_records == 99
    fine = ViewWrite("a", 0, 1, [(record("ka"), 0)])
    too_many = ViewWrite("b", 0, 1, [(record(f"b{i}"), 0) for i in range(100)])
    with pytest.raises(InvalidInput, match="holds 100 records; DynamoDB commits at most 99"):
        await views.commit("p", [fine, too_many])
    assert await views.applied("p", ["a", "b"]) == {}
    assert await views.get("ka") is None

    full = ViewWrite("b", 0, 1, [(record(f"b{i}"), 0) for i in range(99)])
    assert await views.commit("p", [full]) == []
    assert len(await views.get_many([f"b{i}" for i in range(99)])) == 99


async def test_a_record_over_an_items_400_kb_is_refused_and_nothing_is_written(
    views: DynamoViewStore,
) -> None:
    big = record("big", body="x" * 410_000)
    with pytest.raises(InvalidInput, match="refused, not split"):
        await views.put_many([record("small"), big])
    with pytest.raises(InvalidInput, match="refused, not split"):
        await views.commit("p", [ViewWrite("s", 0, 1, [(big, 0)])])
    assert await views.get_many(["small", "big"]) == {}
    assert await views.applied("p", ["s"]) == {}


async def test_a_declared_shape_gets_its_index_and_its_queries_read_it(
    backend: DynamoBackend, views: DynamoViewStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await views.put(record("before", run="r1", at=5))  # written before the index exists
    await views.declare([RUNS])
    await views.declare([RUNS])  # idempotent
    assert backend.created.count(f"index run__by__at on DynamoDB table {views.table}") == 1
    for i, run in enumerate(["r1", "r2", "r1", "r1"]):
        await views.put(record(f"k{i}", run=run, at=i))

    answer = await backend._client.query(
        TableName=views.table,
        IndexName="run__by__at",
        KeyConditionExpression="#h = :h",
        ExpressionAttributeNames={"#h": index_attributes(RUNS)[0]},
        ExpressionAttributeValues={":h": {"S": 't1#saas#["r1"]'}},
    )
    assert [i["pk"]["S"] for i in answer["Items"]] == ["r#k0", "r#k2", "r#k3", "r#before"]

    reads = index_reads(views, monkeypatch)
    query = ViewQuery(
        tenant_id="t1", mode="saas", where=(Filter(field="run", value="r1"),), order_by="at"
    )
    page = await views.query(query.model_copy(update={"limit": 2}))
    assert [r.key for r in page.items] == ["before", "k3"]
    page = await views.query(query.model_copy(update={"cursor": page.next_cursor}))
    assert [r.key for r in page.items] == ["k2", "k0"]
    assert set(reads) == {"run__by__at"}


async def test_another_process_learns_the_declared_shapes_and_indexes_its_writes(
    opener: Callable[..., Awaitable[DynamoBackend]],
    views: DynamoViewStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await views.declare([RUNS])
    other = await (await opener(create=False)).view_store(ROUTE)
    await other.put(record("theirs", run="r1", at=1))

    reads = index_reads(other, monkeypatch)
    query = ViewQuery(
        tenant_id="t1", mode="saas", where=(Filter(field="run", value="r1"),), order_by="at"
    )
    assert [r.key for r in (await views.query(query)).items] == ["theirs"]
    assert [r.key for r in (await other.query(query)).items] == ["theirs"]
    assert reads == ["run__by__at"]


async def test_a_store_opened_without_create_builds_no_index_but_answers(
    opener: Callable[..., Awaitable[DynamoBackend]], views: DynamoViewStore
) -> None:
    reader_backend = await opener(create=False)
    reader = await reader_backend.view_store(ROUTE)
    await reader.declare([RUNS])
    described = await reader_backend._client.describe_table(TableName=views.table)
    names = [i["IndexName"] for i in described["Table"]["GlobalSecondaryIndexes"]]
    assert names == ["by__updated_at"]
    assert reader_backend.created == []

    await views.put(record("k", run="r1", at=1))
    query = ViewQuery(
        tenant_id="t1", mode="saas", where=(Filter(field="run", value="r1"),), order_by="at"
    )
    assert [r.key for r in (await reader.query(query)).items] == ["k"]


@pytest.mark.parametrize("descending", [True, False])
async def test_an_order_without_an_index_is_kept_across_pages_for_mixed_numbers(
    views: DynamoViewStore, descending: bool
) -> None:
    values = [3, -2.5, 0, 10**12, -(10**12), 0.001, -0.001, 3, 7.25, None, "text", 2]
    for i, n in enumerate(values):
        data: dict[str, Any] = {} if n is None else {"n": n}
        await views.put(record(f"k{i:02d}", **data))
    seen: list[ViewRecord] = []
    cursor = None
    while True:
        page = await views.query(
            ViewQuery(
                tenant_id="t1",
                mode="saas",
                order_by="n",
                descending=descending,
                limit=5,
                cursor=cursor,
            )
        )
        seen += page.items
        if (cursor := page.next_cursor) is None:
            break

    def rank(r: ViewRecord) -> tuple[int, float | str, str]:
        n = r.data.get("n")
        if n is None:
            return (0, 0, r.key)
        return (2, n, r.key) if isinstance(n, str) else (1, n, r.key)

    assert [r.key for r in seen] == [r.key for r in sorted(seen, key=rank, reverse=descending)]
    assert len(seen) == len(values)
