"""Configuration files: every problem named in one error."""

from __future__ import annotations

from pathlib import Path

import pytest

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
