"""``engines routes provision FILE`` against moto_server: the first run creates what the
routes file names and says so, a second run creates nothing; a backend that does not
answer is named and makes the exit non-zero."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engines.cli import main
from routing.kinds import ACTIVE_KINDS, VIEW_KINDS
from tests.servers.fixtures import MotoServer, TansuBroker
from tests.servers.process import free_port

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
    for kind in VIEW_KINDS:  # each view store made its table (and its shapes' indexes)
        assert first[kind][0].startswith(f"DynamoDB table {prefix}"), first[kind]
    assert first_code == 0

    assert second_code == 0
    for kind in ACTIVE_KINDS - TRANSPORT:
        assert second[kind] == ["exists"], kind


def test_tools_over_a_cloud_routes_file_need_no_data_directory(
    moto_server: MotoServer, tmp_path: Path, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = routes_file(tmp_path, moto_server, f"t{unique}_")
    provision(path, capsys)
    nowhere = str(tmp_path / "no-data-dir")

    status = main(["projections", "status", "--routes", str(path), "--data-dir", nowhere])
    status_out = capsys.readouterr()
    read = main(["spine", "read", "notes/t/saas/n1", "--routes", str(path), "--data-dir", nowhere])
    read_err = capsys.readouterr().err

    assert status == 0, status_out.err
    assert "notes" in status_out.out
    assert read == 3  # the store was asked: the stream is not there (exit 3)
    assert "not found" in read_err or "no stream" in read_err, read_err
    assert not Path(nowhere).exists()


def test_a_backend_that_does_not_answer_is_named_and_the_exit_is_not_zero(
    moto_server: MotoServer, tmp_path: Path, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    down = MotoServer(port=free_port())  # nothing listens there
    path = routes_file(tmp_path, down, f"d{unique}_")

    code = main(["routes", "provision", str(path), "--data-dir", str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 1
    assert "backend 'dynamodb' for route 'analytics' unavailable" in err  # the first route


def test_an_invalid_routes_file_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mode: saas\nauth: {hs256_secret: " + "s" * 40 + "}\nroutes: {}\n")

    code = main(["routes", "provision", str(path)])

    assert code == 2
    assert "event_spine" in capsys.readouterr().err


@pytest.mark.kafka
def test_provision_creates_the_spine_feeds_topic_once(
    moto_server: MotoServer,
    tansu: TansuBroker,
    tmp_path: Path,
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = routes_file(tmp_path, moto_server, f"k{unique}_")
    data = yaml.safe_load(path.read_text())
    topic = f"spine.{unique}"
    data["routes"]["spine_feed"] = {"backend": "kafka", "name": topic}
    data["connections"]["kafka"] = {"bootstrap_servers": tansu.bootstrap, "partitions": 3}
    path.write_text(yaml.safe_dump(data))

    first_code, first, _ = provision(path, capsys)
    second_code, second, _ = provision(path, capsys)

    assert (first_code, first["spine_feed"]) == (0, [f"Kafka topic {topic} (3 partitions)"])
    assert (second_code, second["spine_feed"]) == (0, ["exists"])
