"""The Firestore view store against the emulator: what the view suite cannot say for
every backend (Firestore's limits, document ids, queries it cannot express, the
indexes provisioning deploys)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from projections.views import Filter, Grant, Page, QueryShape, ViewQuery, ViewRecord, ViewWrite
from routing.backends.firestore import FirestoreBackend, FirestoreViewStore, open_backend
from routing.backends.firestore.layout import MAX_DOC_ID_BYTES, encode_id
from routing.config import Route
from spine.errors import InvalidInput
from spine.events import Scope
from tests.contract.cloud_firestore import emulator_connections
from tests.servers.fixtures import FirestoreEmulator

pytestmark = pytest.mark.firestore

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="chat", project_id="p1")


@pytest.fixture
async def backend(firestore_emulator: FirestoreEmulator) -> AsyncIterator[FirestoreBackend]:
    opened = await open_backend(emulator_connections(firestore_emulator), Path("."))
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def views(backend: FirestoreBackend, unique: str) -> FirestoreViewStore:
    return await backend.view_store(Route(backend="firestore", name=f"view_{unique}"))


def record(key: str, version: int = 1, scope: Scope = ALICE, **data: Any) -> ViewRecord:
    return ViewRecord(
        key=key, scope=scope, version=version, data={"updated_at": "2026-01-01", **data}
    )


async def every_page(views: FirestoreViewStore, query: ViewQuery) -> list[str]:
    keys: list[str] = []
    cursor = None
    while True:
        page: Page = await views.query(query.model_copy(update={"cursor": cursor}))
        keys += [r.key for r in page.items]
        if page.next_cursor is None:
            return keys
        cursor = page.next_cursor


async def test_a_write_over_the_commit_limit_is_refused_and_writes_nothing(
    views: FirestoreViewStore,
) -> None:
    assert views.max_write_records == 499
    records = [(record(f"k{i}"), 0) for i in range(views.max_write_records + 1)]
    with pytest.raises(InvalidInput, match="499"):
        await views.commit("p", [ViewWrite("ok", 0, 1), ViewWrite("s", 0, 1, records)])
    assert await views.applied("p", ["ok", "s"]) == {}
    assert await views.get("k0") is None


async def test_a_record_over_the_document_limit_is_refused_and_writes_nothing(
    views: FirestoreViewStore,
) -> None:
    huge = record("big", text="x" * 1_100_000)
    with pytest.raises(InvalidInput, match="document"):
        await views.commit("p", [ViewWrite("s", 0, 1, [(huge, 0)])])
    with pytest.raises(InvalidInput, match="document"):
        await views.put(huge)
    assert await views.applied("p", ["s"]) == {}
    assert await views.get("big") is None


async def test_any_key_is_a_document_id_and_reads_back(views: FirestoreViewStore) -> None:
    keys = ["notes/t1/lab/n-1", ".", "..", "__name__", "a b%2F/c", "é" * 512, "/" * 512]
    assert all(len(encode_id(k).encode()) <= MAX_DOC_ID_BYTES for k in keys)
    assert len({encode_id(k) for k in keys}) == len(keys)
    for key in keys:
        assert await views.put(record(key, title=key)) is True
    found = await views.get_many(keys)
    assert {k: r.data["title"] for k, r in found.items()} == {k: k for k in keys}
    assert sorted(await every_page(views, ViewQuery(tenant_id="t1", mode="lab"))) == sorted(keys)


async def test_a_field_a_newer_version_drops_no_longer_matches(views: FirestoreViewStore) -> None:
    await views.put(record("k", 1, kind="memo", tags=["x"]))
    await views.put(record("k", 2))
    for where in (
        Filter(field="kind", value="memo"),
        Filter(field="tags", op="contains", value="x"),
    ):
        page = await views.query(ViewQuery(tenant_id="t1", mode="lab", where=(where,)))
        assert page.items == ()


async def test_filters_firestore_cannot_express_are_answered_page_by_page(
    views: FirestoreViewStore,
) -> None:
    """Two contains, ranges on two other fields, and more grants than one disjunction
    takes: checked in memory, the pages still full and in order."""
    grants = tuple(
        Grant(surface_id=f"s{s}", project_ids=tuple(f"p{p}" for p in range(8))) for s in range(5)
    )
    wanted = []
    for i in range(60):
        scope = ALICE.model_copy(update={"surface_id": f"s{i % 7}", "project_id": f"p{i % 9}"})
        tags = ["a", "b"] if i % 2 else ["a"]
        await views.put(record(f"k{i:02d}", 1, scope=scope, tags=tags, n=i, at=f"{i:03d}"))
        if i % 7 < 5 and i % 9 < 8 and i % 2 and 10 <= i < 50 and f"{i:03d}" >= "020":
            wanted.append(f"k{i:02d}")
    query = ViewQuery(
        tenant_id="t1",
        mode="lab",
        grants=grants,
        where=(
            Filter(field="tags", op="contains", value="a"),
            Filter(field="tags", op="contains", value="b"),
            Filter(field="n", op="ge", value=10),
            Filter(field="n", op="lt", value=50),
            Filter(field="at", op="ge", value="020"),
        ),
        order_by="n",
        descending=False,
        limit=3,
    )
    assert await every_page(views, query) == wanted
    first = await views.query(query)
    assert len(first.items) == 3


async def test_a_query_no_index_serves_is_answered_by_a_scan(
    views: FirestoreViewStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(9):
        await views.put(record(f"k{i}", 1, updated_at=f"2026-01-0{i % 4}", n=i))
    query = ViewQuery(
        tenant_id="t1", mode="lab", where=(Filter(field="n", op="ge", value=2),), limit=2
    )
    served = await every_page(views, query)

    async def refused(*args: object) -> Page:
        raise gexc.FailedPrecondition("The query requires an index. You can create it here")  # type: ignore[no-untyped-call]

    monkeypatch.setattr(views, "_query", refused)
    assert await every_page(views, query) == served
    ascending = query.model_copy(update={"descending": False})
    assert await every_page(views, ascending) == list(reversed(served))


async def test_declared_shapes_become_indexes_to_deploy(
    backend: FirestoreBackend, views: FirestoreViewStore
) -> None:
    shape = QueryShape(equal=("user_id", "run"), order_by="at")
    await views.declare([shape])
    await views.declare([shape])
    assert sum(views.route in line for line in backend.created) == 1
    config = backend.index_config()
    mine = [i for i in config["indexes"] if i["collectionGroup"] == views.route]
    assert len(mine) == 4
    paths = [f["fieldPath"] for f in mine[0]["fields"]]
    assert paths == ["tenant_id", "mode", "deleted", "user_id", "f.run", "f.at", "key"]
    assert {f["order"] for i in mine for f in i["fields"][-2:]} == {"ASCENDING", "DESCENDING"}
    assert {"collectionGroup": views.route, "fieldPath": "body", "indexes": []} in config[
        "fieldOverrides"
    ]
