"""``engines projections rebuild`` on each cloud backend (the session's local servers):
the spine, checkpoints, notes and budgets on one backend (``spine_feed: direct``), the
two views rebuilt blue/green, verified and switched; a store that is down."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.settings import Settings, load_settings
from routing.config import Route
from tests.e2e.mixed.conftest import routed
from tests.integration.rebuild_support import (
    Deployment,
    live_names,
    run,
    run_cli,
    view_tally,
    write_routes,
    write_some,
)

ON_ONE_BACKEND = ("event_spine", "projection_checkpoints", "notes_store", "budget_store")


def on(request: pytest.FixtureRequest, backend: str, unique: str) -> Settings:
    return routed(request, dict.fromkeys(ON_ONE_BACKEND, backend), unique)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
        pytest.param("cosmos", marks=pytest.mark.cosmos),
        pytest.param("firestore", marks=pytest.mark.firestore),
    ],
)
def test_a_cloud_view_is_rebuilt_blue_green_verified_and_switched(
    request: pytest.FixtureRequest,
    backend: str,
    unique: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = on(request, backend, unique)
    lab = Deployment(write_routes(tmp_path / "routes.yaml", settings), tmp_path)
    run(write_some(lab.settings, tmp_path, notes=4, budgets=1))
    before = lab.settings
    live = {k: run(view_tally(before, tmp_path, k, n)) for k, n in live_names(before).items()}
    code, rows, err = run_cli(
        capsys,
        "projections",
        "rebuild",
        "notes",
        "budgets",
        *lab.cli("--switch", "--format", "json"),
    )
    assert code == 0, err
    after = load_settings(lab.routes)[0]
    for row in rows:
        assert row["backend"] == backend
        assert row["verified"] is True
        assert row["switched"] is True
        assert row["records"] == live[row["kind"]].records
        assert row["checksum"] == live[row["kind"]].hex
        assert after.routes[row["kind"]].name == row["into"]
        assert after.routes[row["kind"]].backend == backend
    # the service on the new routes serves the rebuilt views
    for kind, name in live_names(after).items():
        assert run(view_tally(after, tmp_path, kind, name)) == live[kind]


@pytest.mark.dynamodb
def test_a_store_that_is_down_exits_1_naming_the_route_and_switches_nothing(
    request: pytest.FixtureRequest, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = on(request, "dynamodb", unique)
    assert settings.connections.dynamodb is not None
    down = settings.connections.dynamodb.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})
    routes = dict(settings.routes)
    routes["notes_store"] = Route(backend="dynamodb", name=f"notes{unique}")
    settings = settings.model_copy(
        update={
            "connections": settings.connections.model_copy(update={"dynamodb": down}),
            "routes": routes,
        }
    )
    lab = Deployment(write_routes(tmp_path / "routes.yaml", settings), tmp_path)
    text = lab.routes.read_text()
    code, _, err = run_cli(capsys, "projections", "rebuild", "notes", *lab.cli("--switch"))
    assert code == 1, err
    assert f"backend 'dynamodb' for route 'notes{unique}" in err
    assert lab.routes.read_text() == text
    assert not list(tmp_path.glob("routes.yaml.bak-*"))
