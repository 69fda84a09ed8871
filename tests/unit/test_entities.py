"""The versioned-entity core, the parts a domain chooses: who may create what, where an
entity's URL points, and how a record's body is answered."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from commands.entities import Access, EntityKind, PutEntity, may_create
from engines.http.entities import EntityApi
from projections.views import ViewRecord
from spine.events import Scope

ON_CHAT_P1 = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="chat", project_id="p1")
ON_CHAT = ON_CHAT_P1.model_copy(update={"project_id": None})


@pytest.mark.parametrize(
    ("access", "grants", "scope", "allowed"),
    [
        ("owner", {"chat": frozenset({"p1"})}, ON_CHAT_P1, True),
        ("owner", {"chat": frozenset({"p1"})}, ON_CHAT, False),
        ("project", {"chat": frozenset({"p2"})}, ON_CHAT_P1, False),
        ("project", {"chat": frozenset({"p1"})}, ON_CHAT_P1, True),
        # a per-surface entity belongs to no project: the surface is what is granted
        ("surface", {"chat": frozenset({"p1"})}, ON_CHAT, True),
        ("surface", {"chat": frozenset()}, ON_CHAT, True),
        ("surface", {"canvas": frozenset()}, ON_CHAT, False),
    ],
)
def test_what_a_caller_may_create_follows_the_kinds_access(
    access: Access, grants: dict[str, frozenset[str]], scope: Scope, allowed: bool
) -> None:
    assert may_create(access, scope, grants) is allowed


class Body(BaseModel):
    title: str | None = None
    tags: list[str] | None = None


def api(**options: Any) -> EntityApi:
    kind = EntityKind(
        domain="things",
        entity="thing",
        path=("project_id", "thing_id"),
        created="thing.created",
        updated="thing.updated",
    )
    return EntityApi(
        kind=kind,
        view="things",
        put_type=PutEntity,
        delete_type=None,
        body=Body,
        base_path="/things",
        **options,
    )


def test_an_entitys_location_names_every_path_field_by_default() -> None:
    assert api().location(("p1", "x")) == "/things/p1/x"


def test_path_fields_outside_the_url_are_named_in_the_query_with_the_version() -> None:
    things = api(url_fields=("thing_id",))

    assert things.location(("p1", "x")) == "/things/x?project_id=p1"
    assert things.location(("p1", "x"), 3) == "/things/x?project_id=p1&version=3"


def record(**body: Any) -> ViewRecord:
    data = {
        "project_id": "p1",
        "thing_id": "x",
        **body,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "seq": 1,
        "event_type": "thing.created",
        "deleted": False,
        "recorded_at": "2026-01-01T00:00:00Z",
    }
    return ViewRecord(key="things/t1/lab/p1/x", scope=ON_CHAT_P1, version=1, data=data)


def test_a_body_field_never_given_is_answered_as_null_unless_the_api_is_sparse() -> None:
    given = record(title="t")

    assert api().render(given)["tags"] is None
    sparse = api(sparse=True)
    for answer in (sparse.render(given), sparse.render_version(given)):
        assert answer["title"] == "t"
        assert "tags" not in answer
