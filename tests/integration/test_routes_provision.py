"""``engines routes provision FILE`` against moto_server: the first run creates what the
routes file names and says so, a second run creates nothing; a store not built yet is
named and makes the exit non-zero."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engines.cli import main
from engines.cli.routes import EXIT_NOT_BUILT
from routing.backends.dynamodb import DynamoBackend
from routing.config import Route
from routing.kinds import ACTIVE_KINDS, VIEW_KINDS
from spine.errors import BackendUnavailable
from tests.servers.fixtures import MotoServer

pytestmark = pytest.mark.dynamodb

ROOT = Path(__file__).resolve().parents[2]
TRANSPORT = {"spine_feed", "command_bus"}


def routes_file(tmp_path: Path, server: MotoServer, prefix: str) -> Path:
    """``examples/routes/dynamodb.yaml``, pointed at ``server``, under fresh table names."""
    data = yaml.safe_load((ROOT / "examples/routes/dynamodb.yaml").read_text())
    data["connections"]["dynamodb"] |= {"endpoint_url": server.endpoint_url, "table_prefix": prefix}
    data["auth"]["hs256_secret_file"] = str(ROOT / data["auth"]["hs256_secret_file"])
    path = tmp_path / "dynamodb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def provision(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, list[str]], str]:
    """Run it: its exit status, per kind the lines printed under its route line, and
    what it wrote to stderr."""
    code = main(["routes", "provision", str(path), "--data-dir", str(path.parent)])
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith(f"# {path}: mode saas, 16 routes"), out
    done: dict[str, list[str]] = {}
    under: list[str] = []
    for line in out[1:]:
        if line.startswith("    "):
            under.append(line.strip())
        else:
            under = done[line.split()[0]] = []
    assert set(done) == ACTIVE_KINDS
    return code, done, captured.err


def test_provision_creates_the_tables_once_and_then_finds_them(
    moto_server: MotoServer, tmp_path: Path, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"p{unique}_"
    path = routes_file(tmp_path, moto_server, prefix)

    first_code, first, _ = provision(path, capsys)
    second_code, second, _ = provision(path, capsys)

    assert first["event_spine"] == [f"DynamoDB table {prefix}spine_events"]
    assert first["projection_checkpoints"] == [f"DynamoDB table {prefix}projection_checkpoints"]
    assert all(first[kind] == ["nothing to create"] for kind in TRANSPORT)
    not_built = {k for k, lines in first.items() if lines[0].startswith("NOT BUILT YET")}
    assert not_built <= VIEW_KINDS
    for kind in VIEW_KINDS - not_built:  # a view store made its table (and indexes)
        assert first[kind] not in ([], ["exists"]), kind
    assert first_code == (EXIT_NOT_BUILT if not_built else 0)

    assert second_code == first_code
    for kind in ACTIVE_KINDS - TRANSPORT - not_built:
        assert second[kind] == ["exists"], kind
    assert {k: v for k, v in second.items() if k in not_built} == {
        k: v for k, v in first.items() if k in not_built
    }


def test_a_store_not_built_yet_is_named_and_the_exit_is_not_zero(
    moto_server: MotoServer,
    tmp_path: Path,
    unique: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def not_built(self: DynamoBackend, route: Route) -> None:
        raise BackendUnavailable(route.name, "dynamodb", "its view store is not built yet")

    monkeypatch.setattr(DynamoBackend, "view_store", not_built)

    code, done, err = provision(routes_file(tmp_path, moto_server, f"n{unique}_"), capsys)

    assert code == EXIT_NOT_BUILT
    for kind in VIEW_KINDS:
        assert done[kind] == ["NOT BUILT YET: its view store is not built yet"]
    assert done["event_spine"] != ["exists"]  # the rest was still provisioned
    assert "not built in this build yet: analytics_store, audit_store" in err


def test_an_invalid_routes_file_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mode: saas\nauth: {hs256_secret: " + "s" * 40 + "}\nroutes: {}\n")

    code = main(["routes", "provision", str(path)])

    assert code == 2
    assert "event_spine" in capsys.readouterr().err
