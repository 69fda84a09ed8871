"""Routing: the routes file is validated as a whole; a missing route never falls back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engines.settings import load_settings
from routing.config import RoutesFile
from routing.kinds import ACTIVE_KINDS
from routing.registry import Registry, check_routes
from spine.errors import (
    MissingRoutes,
    ReservedKind,
    RouteNotAllowed,
    RoutingError,
)


def lab_routes(**overrides: Any) -> dict[str, Any]:
    routes: dict[str, Any] = {
        kind: {"backend": "sqlite", "name": kind, "lab": True} for kind in ACTIVE_KINDS
    }
    routes["command_bus"] = {"backend": "inprocess", "name": "commands"}
    routes.update(overrides)
    return {k: v for k, v in routes.items() if v is not None}


def cloud_routes(**overrides: Any) -> dict[str, Any]:
    routes: dict[str, Any] = {kind: {"backend": "dynamodb", "name": kind} for kind in ACTIVE_KINDS}
    routes["command_bus"] = {"backend": "kafka", "name": "commands"}
    routes["spine_feed"] = {"backend": "kafka", "name": "spine"}
    routes["event_spine"] = {"backend": "cosmos", "name": "events"}
    routes["memory_store"] = {"backend": "firestore", "name": "memory"}
    routes.update(overrides)
    return {k: v for k, v in routes.items() if v is not None}


#: A connection block for each cloud backend (nothing is opened by these tests).
CLOUD_CONNECTIONS: dict[str, Any] = {
    "dynamodb": {"region": "eu-west-1"},
    "cosmos": {"endpoint": "https://localhost:1", "key": "a2V5"},
    "firestore": {"project": "engines-test"},
    "kafka": {"bootstrap_servers": "localhost:1"},
}


def config(
    mode: str, routes: dict[str, Any], connections: dict[str, Any] | None = None
) -> RoutesFile:
    return RoutesFile.model_validate(
        {
            "mode": mode,
            "routes": routes,
            "connections": CLOUD_CONNECTIONS if connections is None else connections,
        }
    )


def test_the_packaged_lab_routes_are_complete_and_all_lab_marked() -> None:
    settings, _ = load_settings(None)
    resolved = check_routes(settings)
    assert {r.kind for r in resolved} == ACTIVE_KINDS
    assert all(r.is_lab == (r.route.backend == "sqlite") for r in resolved)
    assert all("LAB" in r.describe() for r in resolved if r.is_lab)


def test_all_three_clouds_can_serve_one_mode_mixed_per_kind() -> None:
    resolved = check_routes(config("saas", cloud_routes()))
    assert {r.route.backend for r in resolved} == {"dynamodb", "cosmos", "firestore", "kafka"}
    assert not any(r.is_lab for r in resolved)


def test_every_missing_kind_is_named_in_one_error() -> None:
    routes = cloud_routes(notes_store=None, budget_store=None, event_spine=None)
    with pytest.raises(MissingRoutes) as info:
        check_routes(config("enterprise", routes))
    assert info.value.kinds == ["budget_store", "event_spine", "notes_store"]
    assert "budget_store, event_spine, notes_store" in str(info.value)


def test_missing_kinds_and_refused_routes_are_reported_together() -> None:
    routes = cloud_routes(
        notes_store=None,
        flow_store={"backend": "sqlite", "name": "f", "lab": True},
        vector_store={"backend": "cosmos", "name": "v"},
    )
    with pytest.raises(MissingRoutes) as info:
        check_routes(config("saas", routes))
    message = str(info.value)
    assert "notes_store" in message
    assert "flow_store: backend 'sqlite' is lab-only" in message
    assert "'vector_store' is reserved, not active" in message


def test_lab_mode_also_requires_every_kind() -> None:
    with pytest.raises(MissingRoutes, match="audit_store"):
        check_routes(config("lab", lab_routes(audit_store=None)))


@pytest.mark.parametrize("mode", ["saas", "enterprise", "system"])
def test_a_lab_backend_is_refused_outside_lab_mode(mode: str) -> None:
    routes = cloud_routes(notes_store={"backend": "sqlite", "name": "notes", "lab": True})
    with pytest.raises(RouteNotAllowed, match="notes_store: backend 'sqlite' is lab-only"):
        check_routes(config(mode, routes))


def test_a_lab_backend_needs_a_route_marked_lab() -> None:
    routes = lab_routes(notes_store={"backend": "sqlite", "name": "notes"})
    with pytest.raises(RouteNotAllowed, match="must say `lab: true`"):
        check_routes(config("lab", routes))


def test_lab_true_on_a_cloud_route_is_refused() -> None:
    routes = cloud_routes(event_spine={"backend": "cosmos", "name": "n", "lab": True})
    with pytest.raises(RouteNotAllowed, match="non-lab backend"):
        check_routes(config("saas", routes))


def test_every_refused_route_is_listed_at_once() -> None:
    routes = cloud_routes(
        notes_store={"backend": "mongodb", "name": "n"},
        flow_store={"backend": "kafka", "name": "f"},
        note_store={"backend": "cosmos", "name": "typo"},
    )
    with pytest.raises(RouteNotAllowed) as info:
        check_routes(config("saas", routes))
    message = str(info.value)
    assert "unknown backend 'mongodb'" in message
    assert "flow_store: backend 'kafka' cannot serve" in message
    assert "unknown resource kind 'note_store'" in message


@pytest.mark.parametrize("kind", ["vector_store", "pii_rehydration", "rag_hydration"])
def test_reserved_kinds_are_refused_as_reserved_not_active(kind: str) -> None:
    with pytest.raises(ReservedKind, match="reserved, not active"):
        check_routes(config("saas", cloud_routes(**{kind: {"backend": "cosmos", "name": "x"}})))
    registry = Registry(config("lab", lab_routes()), Path("."))
    with pytest.raises(ReservedKind, match="reserved, not active"):
        registry.resolve(kind)


def test_a_kind_without_a_route_fails_on_first_use() -> None:
    registry = Registry(config("lab", lab_routes(analytics_store=None)), Path("."))
    with pytest.raises(MissingRoutes, match="analytics_store"):
        registry.resolve("analytics_store")
    with pytest.raises(MissingRoutes):
        registry.check_required()
    with pytest.raises(RoutingError, match="unknown resource kind"):
        registry.resolve("nonsense")


def test_every_backend_routed_without_its_connection_is_named_with_what_to_add() -> None:
    routes = cloud_routes(notes_store={"backend": "mongodb", "name": "n"})
    with pytest.raises(RouteNotAllowed) as info:
        check_routes(config("saas", routes, connections={}))
    message = str(info.value)
    assert "unknown backend 'mongodb'" in message  # with the other problems, in one error
    assert "backend 'dynamodb' has no `connections.dynamodb` block" in message
    assert "`connections.cosmos` block (routes event_spine): add one with its `endpoint`" in (
        message
    )
    assert "`connections.firestore` block (routes memory_store): add one with at least" in (message)


def test_a_connection_block_is_required_only_for_the_backends_routed_to() -> None:
    routes = cloud_routes(event_spine={"backend": "dynamodb", "name": "events"})
    routes["memory_store"] = {"backend": "dynamodb", "name": "memory"}
    kafka = {"bootstrap_servers": "localhost:1"}
    check_routes(config("saas", routes, connections={"dynamodb": {}, "kafka": kafka}))


def test_a_registry_without_a_routed_backends_connection_refuses_to_start() -> None:
    with pytest.raises(RoutingError, match=r"no `connections\.firestore` block"):
        Registry(
            config(
                "saas",
                cloud_routes(),
                connections={
                    "dynamodb": {},
                    "cosmos": {"endpoint": "https://localhost:1", "key": "a2V5"},
                },
            ),
            Path("."),
        )


@pytest.mark.parametrize("keys", [{}, {"key": "a2V5", "key_file": "k"}])
def test_a_cosmos_connection_needs_exactly_one_key(keys: dict[str, str]) -> None:
    connections = {**CLOUD_CONNECTIONS, "cosmos": {"endpoint": "https://localhost:1", **keys}}
    with pytest.raises(RouteNotAllowed, match="exactly one of `key` and `key_file`"):
        check_routes(config("saas", cloud_routes(), connections=connections))


def test_only_the_signing_key_refused_is_a_configuration_problem() -> None:
    with pytest.raises(RoutingError, match="configuration refused:\n  auth: bad") as info:
        check_routes(config("saas", cloud_routes()), also=["auth: bad"])
    assert not isinstance(info.value, RouteNotAllowed)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("mode: prod\nroutes: {}\n", "mode"),
        ("- a\n- b\n", "mapping"),
        ("mode: lab\nroutes: {notes_store: {backend: sqlite, name: 'a b', lab: true}}\n", "name"),
        ("mode: lab\nroutes: [\n", "not valid YAML"),
        ("mode: lab\nextra: 1\n", "extra"),
    ],
)
def test_malformed_routes_files_are_refused_with_the_file_named(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutingError, match=why) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_two_kinds_may_not_share_a_physical_name() -> None:
    routes = cloud_routes(flow_store={"backend": "dynamodb", "name": "notes_store"})
    with pytest.raises(
        RouteNotAllowed, match="flow_store, notes_store: share dynamodb:notes_store"
    ):
        check_routes(config("saas", routes))


def test_names_differing_only_in_letter_case_are_one_name() -> None:
    routes = cloud_routes(
        notes_store={"backend": "dynamodb", "name": "FLOWS"},
        flow_store={"backend": "dynamodb", "name": "flows"},
    )
    with pytest.raises(
        RouteNotAllowed, match="flow_store, notes_store: share dynamodb:FLOWS"
    ) as info:
        check_routes(config("saas", routes))
    assert "named FLOWS, flows" in str(info.value)
    other = cloud_routes(
        notes_store={"backend": "firestore", "name": "FLOWS"},
        flow_store={"backend": "dynamodb", "name": "flows"},
    )
    check_routes(config("saas", other))  # on two backends: two names


async def test_concurrent_first_uses_open_a_backend_once(tmp_path: Path) -> None:
    import asyncio

    registry = Registry(config("lab", lab_routes()), tmp_path)
    try:
        results = await asyncio.gather(*(registry.backend("notes_store") for _ in range(5)))
        assert len({id(backend) for _, backend in results}) == 1
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    "kind", ["event_spine", "budget_store", "strategy_lock_store", "audit_store"]
)
def test_a_ttl_on_an_append_only_kind_is_refused_not_ignored(kind: str) -> None:
    route = {"backend": "sqlite", "name": kind, "lab": True, "options": {"ttl_seconds": 60}}
    with pytest.raises(RouteNotAllowed, match=f"{kind}: option ttl_seconds .*append-only"):
        check_routes(config("lab", lab_routes(**{kind: route})))


def test_an_option_a_kind_does_not_honour_is_refused_naming_where_it_applies() -> None:
    routes = lab_routes(
        notes_store={"backend": "sqlite", "name": "n", "lab": True, "options": {"ttl_seconds": 5}},
        flow_store={
            "backend": "sqlite",
            "name": "f",
            "lab": True,
            "options": {"max_value_bytes": 10},
        },
    )
    with pytest.raises(RouteNotAllowed) as info:
        check_routes(config("lab", routes))
    message = str(info.value)
    assert (
        "notes_store: option ttl_seconds does not apply (only memory_store honours it)" in message
    )
    assert "flow_store: option max_value_bytes does not apply (only blackboard_store" in message


def test_the_options_a_kind_honours_are_accepted() -> None:
    routes = lab_routes(
        memory_store={
            "backend": "sqlite",
            "name": "m",
            "lab": True,
            "options": {"ttl_seconds": 3600},
        },
        blackboard_store={
            "backend": "sqlite",
            "name": "b",
            "lab": True,
            "options": {"max_value_bytes": 65536},
        },
        notes_store={
            "backend": "sqlite",
            "name": "n",
            "lab": True,
            "options": {"ttl_seconds": None},
        },
    )
    resolved = {r.kind: r.route for r in check_routes(config("lab", routes))}
    assert resolved["memory_store"].options.ttl_seconds == 3600
    assert resolved["blackboard_store"].options.max_value_bytes == 65536


@pytest.mark.parametrize("value", ["60", True, 60.0, 2**31, 0, -1])
def test_a_route_option_is_a_plain_positive_integer(value: Any) -> None:
    route = {"backend": "sqlite", "name": "m", "lab": True, "options": {"ttl_seconds": value}}
    with pytest.raises(ValidationError):
        config("lab", lab_routes(memory_store=route))


def test_a_blackboard_value_limit_no_store_could_hold_is_refused_with_the_file() -> None:
    routes = cloud_routes(
        blackboard_store={
            "backend": "dynamodb",
            "name": "board",
            "options": {"max_value_bytes": 256 * 1024 + 1},
        }
    )
    with pytest.raises(ValidationError, match="max_value_bytes"):
        RoutesFile.model_validate({"mode": "saas", "routes": routes})


def test_no_route_may_take_the_name_of_the_command_buss_answers_topic() -> None:
    routes = cloud_routes(spine_feed={"backend": "kafka", "name": "commands.results"})
    with pytest.raises(RouteNotAllowed) as info:
        check_routes(config("saas", routes))
    assert "command_bus (its commands.results), spine_feed: share kafka:commands.results" in str(
        info.value
    )


def test_the_answers_topic_of_the_bus_is_not_a_clash_with_itself() -> None:
    check_routes(config("saas", cloud_routes()))  # commands, commands.results, spine
