"""Configuration files: every problem named in one error."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from engines.runtime import SERVING_GC_THRESHOLDS, serving_gc
from engines.settings import load_settings
from spine.errors import RoutingError


def test_a_saas_file_without_auth_and_without_routes_names_both_problems(
    tmp_path: Path,
) -> None:
    path = tmp_path / "saas.yaml"
    path.write_text("mode: saas\n", encoding="utf-8")

    with pytest.raises(RoutingError) as info:
        load_settings(path)

    message = str(info.value)
    assert "hs256_secret" in message  # the auth problem
    assert "no route for" in message  # and the missing kinds
    assert "event_spine" in message
    assert str(path) in message


def test_a_file_with_bad_fields_and_a_reserved_route_names_both(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "mode: lab\nwrite_wait_seconds: -1\nroutes:\n  vector_store: {backend: sqlite, name: v}\n",
        encoding="utf-8",
    )

    with pytest.raises(RoutingError) as info:
        load_settings(path)

    message = str(info.value)
    assert "write_wait_seconds" in message
    assert "vector_store" in message


def test_schema_errors_and_routing_errors_are_named_together(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "mode: lab\nroutes:\n"
        "  event_spine: {backend: sqlite, name: spine_events}\n"  # no `lab: true`
        "  notes_store: {backend: nosuch, name: notes, lab: true}\n"  # unknown backend
        "  flow_store: {backend: sqlite, lab: true}\n",  # no name
        encoding="utf-8",
    )

    with pytest.raises(RoutingError) as info:
        load_settings(path)

    message = str(info.value)
    assert "flow_store.name" in message
    assert "nosuch" in message
    assert "lab: true" in message
    assert "no route for" in message
    assert "graph_store" in message
    assert "flow_store, " not in message.split("no route for")[1].split("\n")[0]


def test_a_file_with_bad_fields_also_names_a_backend_routed_without_its_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "saas.yaml"
    path.write_text(
        "mode: saas\nwrite_wait_seconds: -1\n"
        "routes:\n  notes_store: {backend: firestore, name: n}\n",
        encoding="utf-8",
    )

    with pytest.raises(RoutingError) as info:
        load_settings(path)

    message = str(info.value)
    assert "write_wait_seconds" in message
    assert "backend 'firestore' has no `connections.firestore` block" in message


def test_a_malformed_connection_block_is_named_once_not_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "saas.yaml"
    path.write_text(
        "mode: saas\nconnections: {firestore: {database: d}}\n"
        "routes:\n  notes_store: {backend: firestore, name: n}\n",
        encoding="utf-8",
    )

    with pytest.raises(RoutingError) as info:
        load_settings(path)

    message = str(info.value)
    assert "connections.firestore.project" in message
    assert "has no `connections.firestore` block" not in message


def test_a_routes_file_that_is_not_text_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(128, 256)) * 3)

    with pytest.raises(RoutingError, match="not UTF-8"):
        load_settings(path)


def test_the_service_runs_the_collector_with_its_thresholds_and_restores_them() -> None:
    before = gc.get_threshold()
    with serving_gc():
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
