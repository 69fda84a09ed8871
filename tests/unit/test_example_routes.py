"""The routes files in ``examples/routes/`` stay valid: each loads, passes the start-up
check, and its signing secret is usable (they are run from the repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.auth import TokenVerifier
from engines.devservers import DEV_SERVERS
from engines.settings import load_settings
from routing.kinds import ACTIVE_KINDS
from routing.registry import check_routes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "routes"
ONE_BACKEND = ["dynamodb", "cosmos", "firestore"]
TRANSPORT = {"spine_feed": "direct", "command_bus": "inprocess"}


def backends_of(name: str) -> dict[str, str]:
    settings, _ = load_settings(EXAMPLES / name)
    return {r.kind: r.route.backend for r in check_routes(settings)}


ALL = [*(f"{b}.yaml" for b in ONE_BACKEND), "mixed.yaml", "kafka.yaml"]


@pytest.mark.parametrize("name", ALL)
def test_an_example_routes_file_passes_the_start_up_check_in_saas_mode(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    settings, _ = load_settings(EXAMPLES / name)

    resolved = check_routes(settings)

    assert settings.mode == "saas"
    assert {r.kind for r in resolved} == ACTIVE_KINDS
    assert not any(r.is_lab for r in resolved)
    assert settings.auth.algorithm == "HS256"
    assert settings.auth.hs256_secret_file is not None
    assert "LOCAL-ONLY" in settings.auth.hs256_secret_file
    TokenVerifier(settings.auth, mode=settings.mode, data_dir=tmp_path)  # the secret reads


@pytest.mark.parametrize("backend", ONE_BACKEND)
def test_a_one_backend_example_puts_every_store_on_that_backend(backend: str) -> None:
    routes = backends_of(f"{backend}.yaml")

    assert {k: b for k, b in routes.items() if k not in TRANSPORT} == dict.fromkeys(
        ACTIVE_KINDS - TRANSPORT.keys(), backend
    )
    assert {k: routes[k] for k in TRANSPORT} == TRANSPORT


def test_the_mixed_example_spreads_the_kinds_over_the_three_clouds() -> None:
    routes = backends_of("mixed.yaml")

    assert routes["event_spine"] == "dynamodb"
    assert routes["notes_store"] == "cosmos"
    assert routes["flow_store"] == "firestore"
    assert {k: routes[k] for k in TRANSPORT} == TRANSPORT
    assert set(routes.values()) == {*ONE_BACKEND, *TRANSPORT.values()}


def test_the_kafka_example_puts_the_feed_and_the_bus_on_kafka_over_the_mixed_stores() -> None:
    routes, mixed = backends_of("kafka.yaml"), backends_of("mixed.yaml")

    assert {k: routes[k] for k in TRANSPORT} == dict.fromkeys(TRANSPORT, "kafka")
    assert {k: b for k, b in routes.items() if k not in TRANSPORT} == {
        k: b for k, b in mixed.items() if k not in TRANSPORT
    }


@pytest.mark.parametrize("name", ALL)
def test_an_example_points_at_the_dev_servers_default_ports(name: str) -> None:
    settings, _ = load_settings(EXAMPLES / name)
    c = settings.connections
    urls = {
        "dynamodb": c.dynamodb and c.dynamodb.endpoint_url,
        "cosmos": c.cosmos and c.cosmos.endpoint,
        "firestore": c.firestore and f"http://{c.firestore.emulator_host}",
        "kafka": c.kafka and c.kafka.bootstrap_servers,
    }
    for server in DEV_SERVERS:
        if urls.get(server.backend) is not None:
            assert urls[server.backend] == server.url("127.0.0.1", server.default_port)
