"""Versioned entities as pure functions: the decider and the projector every entity
domain shares (commands/entities.py, projections/entities.py), no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from commands.entities import (
    DeleteEntity,
    EntityDecider,
    PutEntity,
    can_see,
    may_create,
)
from commands.envelope import Command
from commands.handler import fold
from engines.http.entities import EntityApi
from projections.entities import EntityProjector, version_key
from projections.views import ViewRecord
from spine.codec import seal
from spine.entities import Access, EntityKind
from spine.errors import ConcurrencyError, IntegrityError, InvalidField, NotFound, ScopeMismatch
from spine.events import GENESIS_HASH, EventEnvelope, Scope

ALICE = Scope(tenant_id="t1", mode="lab", user_id="alice", surface_id="s1", project_id="p1")
BOB = ALICE.model_copy(update={"user_id": "bob"})
OWNED = EntityKind(
    domain="docs",
    entity="doc",
    path=("id",),
    created="doc.created",
    updated="doc.updated",
    deleted="doc.deleted",
    fixed=("app_id",),
)
SHARED = EntityKind(
    domain="board",
    entity="key",
    path=("project_id", "key"),
    created="key.created",
    updated="key.updated",
    deleted="key.deleted",
    access="project",
    recreate=True,
)
APPEND_ONLY = EntityKind(
    domain="snap",
    entity="snapshot",
    path=("id",),
    created="snap.taken",
    updated="snap.taken",
    family="strategy_lock",
    skip_unchanged=False,
)


class Put(PutEntity):
    pass


class Delete(DeleteEntity):
    pass


def command(payload: Any, scope: Scope = ALICE, **fields: Any) -> Command[Any]:
    return Command[Any](scope=scope, payload=payload, **fields)


def run(kind: EntityKind, *commands: Command[Any]) -> list[EventEnvelope]:
    """Decide each command on the fold of what came before and seal its events."""
    decider = EntityDecider(kind)
    events: list[EventEnvelope] = []
    for cmd in commands:
        for new in decider.decide(fold(decider, events), cmd):
            env, _ = seal(
                new,
                stream_id=decider.stream_id(cmd),
                seq=len(events) + 1,
                prev_hash=events[-1].hash if events else GENESIS_HASH,
                recorded_at=datetime.now(UTC),
            )
            events.append(env)
    return events


def put(body: dict[str, Any], create: str = "may", path: tuple[str, ...] = ("d1",)) -> Put:
    return Put(path=path, body=body, create=create)  # type: ignore[arg-type]


# -- deciding ------------------------------------------------------------------------------


def test_a_put_creates_then_replaces_and_a_delete_ends_the_entity() -> None:
    events = run(
        OWNED,
        command(put({"app_id": "a", "v": 1}, "must")),
        command(put({"app_id": "a", "v": 2}, "never")),
        command(Delete(path=("d1",))),
    )

    assert [e.event_type for e in events] == ["doc.created", "doc.updated", "doc.deleted"]
    assert {e.stream_id for e in events} == {"docs/t1/lab/d1"}
    assert [e.family for e in events] == ["domain"] * 3
    state = fold(EntityDecider(OWNED), events)
    assert (state.version, state.live, state.ever) == (3, False, True)


def test_a_put_of_the_body_it_has_appends_nothing_unless_every_put_is_an_act() -> None:
    same = command(put({"app_id": "a", "v": 1}))
    assert len(run(OWNED, same, command(put({"app_id": "a", "v": 1})))) == 1

    snap = command(put({"x": 1}))
    events = run(APPEND_ONLY, snap, command(put({"x": 1})))
    assert [(e.event_type, e.family) for e in events] == [("snap.taken", "strategy_lock")] * 2


def test_creating_what_exists_is_a_failed_precondition_and_updating_what_does_not_is_404() -> None:
    created = command(put({"app_id": "a"}, "must"))
    with pytest.raises(ConcurrencyError):
        run(OWNED, created, command(put({"app_id": "a", "v": 2}, "must")))
    with pytest.raises(NotFound):
        run(OWNED, command(put({"app_id": "a"}, "never")))
    with pytest.raises(NotFound):
        run(OWNED, command(Delete(path=("d1",))))


def test_an_owned_entity_is_absent_to_another_user_even_to_overwrite() -> None:
    created = command(put({"app_id": "a"}, "must"))
    for other in (
        command(put({"app_id": "a", "v": 9}), BOB),
        command(put({"app_id": "a", "v": 9}, "must"), BOB),
        command(Delete(path=("d1",)), BOB),
    ):
        with pytest.raises(NotFound):
            run(OWNED, created, other)


def test_a_deleted_owned_entity_stays_gone_and_a_keyed_one_may_be_created_again() -> None:
    gone = (command(put({"app_id": "a"}, "must")), command(Delete(path=("d1",))))
    with pytest.raises(NotFound):
        run(OWNED, *gone, command(put({"app_id": "a"}, "must")))

    key = ("p1", "k")
    events = run(
        SHARED,
        command(put({"v": 1}, "must", key)),
        command(Delete(path=key)),
        command(put({"v": 2}, "must", key), BOB),
    )
    assert [(e.event_type, e.seq, e.user_id) for e in events] == [
        ("key.created", 1, "alice"),
        ("key.deleted", 2, "alice"),
        ("key.created", 3, "bob"),
    ]


def test_a_fixed_field_cannot_change_after_creation() -> None:
    with pytest.raises(InvalidField) as caught:
        run(OWNED, command(put({"app_id": "a"})), command(put({"app_id": "b"})))
    assert caught.value.loc == ("body", "app_id")


def test_a_shared_entity_is_changed_by_anyone_granted_its_project_and_names_the_writer() -> None:
    key = ("p1", "k")
    grants = {"s1": frozenset({"p1"})}
    events = run(
        SHARED,
        command(put({"v": 1}, "must", key), grants=grants),
        command(put({"v": 2}, "never", key), BOB, grants=grants),
    )
    assert [e.user_id for e in events] == ["alice", "bob"]

    elsewhere = {"s1": frozenset({"p2"})}
    with pytest.raises(NotFound):
        run(
            SHARED,
            command(put({"v": 1}, "must", key)),
            command(Delete(path=key), BOB, grants=elsewhere),
        )


def test_creating_outside_the_callers_grants_or_without_a_surface_is_refused() -> None:
    with pytest.raises(ScopeMismatch):
        run(OWNED, command(put({"app_id": "a"}), grants={"s2": frozenset()}))
    no_surface = ALICE.model_copy(update={"surface_id": None})
    with pytest.raises(InvalidField):
        run(OWNED, command(put({"app_id": "a"}), no_surface))


def test_an_append_only_entity_cannot_be_deleted() -> None:
    with pytest.raises(InvalidField):
        run(APPEND_ONLY, command(put({"x": 1})), command(Delete(path=("d1",))))


@pytest.mark.parametrize(
    ("access", "scope", "user", "grants", "seen"),
    [
        ("owner", ALICE, "alice", None, True),
        ("owner", ALICE, "bob", None, False),
        ("owner", ALICE, "alice", {"s1": frozenset({"p2"})}, False),
        ("project", ALICE, "bob", {"s9": frozenset({"p1"})}, True),
        ("project", ALICE, "bob", {"s1": frozenset({"p2"})}, False),
        ("surface", ALICE, "bob", {"s1": frozenset()}, True),
        ("surface", ALICE, "bob", {"s2": frozenset()}, False),
    ],
)
def test_who_can_see_an_entity(
    access: Any, scope: Scope, user: str, grants: Any, seen: bool
) -> None:
    assert can_see(access, scope, user, grants) is seen


# -- projecting ----------------------------------------------------------------------------


def project(kind: EntityKind, events: list[EventEnvelope]) -> dict[str, ViewRecord]:
    projector = EntityProjector(kind, name="v", resource_kind="flow_store")
    view: dict[str, ViewRecord] = {}
    for event in events:
        for record in projector.apply(event, view):
            view[record.key] = record
    return view


def test_the_view_keeps_the_latest_and_every_version_and_a_delete_leaves_a_tombstone() -> None:
    events = run(
        OWNED,
        command(put({"app_id": "a", "v": 1}, "must")),
        command(put({"app_id": "a", "v": 2})),
        command(Delete(path=("d1",))),
    )
    view = project(OWNED, events)
    sid = "docs/t1/lab/d1"

    latest = view[sid]
    assert (latest.version, latest.deleted, latest.data["v"]) == (3, True, 2)
    assert latest.data["created_at"] < latest.data["updated_at"]
    versions = [view[version_key(sid, seq)] for seq in (1, 2, 3)]
    assert [(v.version, v.data["seq"], v.data.get("v"), v.data["deleted"]) for v in versions] == [
        (1, 1, 1, False),
        (1, 2, 2, False),
        (1, 3, None, True),
    ]
    assert {v.data["entry"] for v in versions} == {"version"}
    assert (latest.data["entry"], latest.data["id"]) == ("latest", "d1")


def test_a_payload_cannot_overwrite_the_fields_the_view_derives() -> None:
    events = run(OWNED, command(put({"app_id": "a", "entry": "version", "stream_id": "x"})))
    record = project(OWNED, events)["docs/t1/lab/d1"]
    assert (record.data["entry"], record.data["stream_id"]) == ("latest", "docs/t1/lab/d1")


def test_a_deletion_before_any_creation_is_an_integrity_error() -> None:
    events = run(OWNED, command(put({"app_id": "a"})), command(Delete(path=("d1",))))
    projector = EntityProjector(OWNED, name="v", resource_kind="flow_store")
    with pytest.raises(IntegrityError):
        projector.apply(events[1], {})


# -- what a domain chooses: creation by access, URLs, sparse bodies ---------------------

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


def thing_api(**options: Any) -> EntityApi:
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
    assert thing_api().location(("p1", "x")) == "/things/p1/x"


def test_path_fields_outside_the_url_are_named_in_the_query_with_the_version() -> None:
    things = thing_api(url_fields=("thing_id",))

    assert things.location(("p1", "x")) == "/things/x?project_id=p1"
    assert things.location(("p1", "x"), 3) == "/things/x?project_id=p1&version=3"


def thing_record(**body: Any) -> ViewRecord:
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
    given = thing_record(title="t")

    assert thing_api().render(given)["tags"] is None
    sparse = thing_api(sparse=True)
    for answer in (sparse.render(given), sparse.render_version(given)):
        assert answer["title"] == "t"
        assert "tags" not in answer


def test_a_key_longer_than_a_view_record_takes_is_fitted_and_never_collides() -> None:
    from projections.entities import latest_key
    from projections.views import MAX_KEY, fitted_key

    short = "board/t1/lab/p1/k"
    long = "board/" + "/".join(["x" * 128] * 4)
    assert fitted_key(short) == short
    assert len(fitted_key(long)) <= MAX_KEY
    assert fitted_key(long).startswith("board#")
    assert fitted_key(long) != fitted_key(long + "y")
    assert len(version_key(long, 10**18)) <= MAX_KEY
    assert latest_key(long) != version_key(long, 1)
