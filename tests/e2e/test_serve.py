"""The real thing: the ``engines`` console script, as a user runs it.

One server per module (``engines serve`` in a scratch working directory, so its data
lands in ``./.engines`` there), driven over real HTTP; the other CLI commands run
against the same directory. Routes files with problems must stop ``serve`` and
``routes check`` at once, naming every problem.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import jwt
import orjson
import pytest

from engines.auth import lab_secret
from routing.kinds import ACTIVE_KINDS, VIEW_KINDS
from spine.codec import verify_chain
from spine.events import EventEnvelope

pytestmark = pytest.mark.e2e

STARTUP_SECONDS = 20
QUICK_EXIT_SECONDS = 15
SAAS_SECRET = "an-hs256-secret-of-at-least-32-characters"


def engines_executable() -> str:
    beside = Path(sys.executable).parent / "engines"
    if beside.exists():
        return str(beside)
    found = shutil.which("engines")
    if found is None:
        pytest.skip("the `engines` console script is not installed (pip install -e .)")
    return found


def run_cli(
    *args: str, cwd: Path, timeout: float = QUICK_EXIT_SECONDS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engines_executable(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    cwd: Path
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("serve")
    port = free_port()
    log = cwd / "server.log"
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen(
            [engines_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = Server(f"http://127.0.0.1:{port}", cwd, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"engines serve exited with {proc.returncode}:\n{server.stderr()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"engines serve did not answer /healthz:\n{server.stderr()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cli_token(server: Server) -> str:
    result = run_cli("token", "--tenant", "t", "--user", "u", "--surface", "s", cwd=server.cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def http(server: Server, cli_token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {cli_token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


# -- a running server ---------------------------------------------------------------------


def test_serve_announces_lab_mode_on_stderr(server: Server) -> None:
    log = server.stderr()

    assert "mode=lab" in log
    assert "[LAB]" in log
    assert "not for production" in log
    assert (server.cwd / ".engines" / "engines.db").exists()


def test_token_prints_just_a_token_signed_with_the_data_dirs_lab_secret(
    server: Server, cli_token: str
) -> None:
    result = run_cli("token", "--tenant", "t", "--user", "u", "--surface", "s", cwd=server.cwd)

    assert result.stdout.count("\n") == 1
    assert result.stdout.strip().count(".") == 2
    secret = (server.cwd / ".engines" / "lab-jwt-secret").read_text().strip()
    for token in (cli_token, result.stdout.strip()):
        claims = jwt.decode(token, secret, algorithms=["HS256"])
        assert (claims["sub"], claims["tenant_id"], claims["mode"]) == ("u", "t", "lab")
        assert (claims["surfaces"], claims["projects"]) == (["s"], [])
        assert 3500 <= claims["exp"] - claims["iat"] <= 3600


def test_a_note_round_trips_over_real_http(http: httpx.Client) -> None:
    created = http.post("/notes", json={"title": "over the wire", "tags": ["e2e"]})
    assert created.status_code == 201, created.text
    note = created.json()
    assert (note["user_id"], note["surface_id"], note["version"]) == ("u", "s", 1)
    assert created.headers["X-Engines-Mode"] == "lab"
    assert "X-Engines-Lab" in created.headers

    fetched = http.get(created.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.json() == note

    updated = http.put(
        f"/notes/{note['note_id']}", json={"title": "edited"}, headers={"If-Match": '"1"'}
    )
    assert (updated.status_code, updated.headers["ETag"]) == (200, '"2"')

    listed = http.get("/notes", params={"tag": "e2e"}).json()["items"]
    assert note["note_id"] not in {n["note_id"] for n in listed}  # the update dropped the tag
    listed = http.get("/notes").json()["items"]
    assert [n["title"] for n in listed if n["note_id"] == note["note_id"]] == ["edited"]


def test_a_request_without_a_token_is_refused_over_real_http(server: Server) -> None:
    response = httpx.get(f"{server.url}/notes", timeout=10)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_spine_read_prints_the_notes_events_as_json_lines(
    server: Server, http: httpx.Client
) -> None:
    note = http.post("/notes", json={"title": "on the spine"}).json()
    http.put(f"/notes/{note['note_id']}", json={"title": "still on the spine"})

    result = run_cli("spine", "read", f"notes/t/lab/{note['note_id']}", "--verify", cwd=server.cwd)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    events = [EventEnvelope.model_validate(orjson.loads(line)) for line in lines]
    assert [e.event_type for e in events] == ["note.created", "note.updated"]
    assert {(e.tenant_id, e.mode, e.user_id, e.surface_id) for e in events} == {
        ("t", "lab", "u", "s")
    }
    assert verify_chain(events) == 2
    assert "hash chain verified: 2 events" in result.stderr
    assert "[LAB]" in result.stderr


def test_spine_tail_follows_new_events_in_order(server: Server, http: httpx.Client) -> None:
    http.post("/notes", json={"title": "before the tail"})
    tail = subprocess.Popen(
        [engines_executable(), "spine", "tail", "--limit", "2"],
        cwd=server.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        lines = []
        while not any("following new events" in line for line in lines):
            lines.append(tail.stderr.readline())
            assert lines[-1], "".join(lines)
        note = http.post("/notes", json={"title": "tailed"}).json()
        http.delete(f"/notes/{note['note_id']}")
        out, err = tail.communicate(timeout=QUICK_EXIT_SECONDS)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    rows = [line.split("\t", 1) for line in out.splitlines()]
    events = [EventEnvelope.model_validate(orjson.loads(body)) for _, body in rows]
    assert [e.event_type for e in events] == ["note.created", "note.deleted"]
    assert {e.stream_id for e in events} == {f"notes/t/lab/{note['note_id']}"}
    assert {partition for partition, _ in rows} == {"all"}
    assert "[LAB]" in "".join(lines)


def test_spine_read_refuses_a_malformed_stream_id(server: Server) -> None:
    result = run_cli("spine", "read", "notes/../etc", cwd=server.cwd)

    assert result.returncode == 3
    assert "stream" in result.stderr


def test_projections_status_shows_the_checkpoint_and_no_lag(
    server: Server, http: httpx.Client
) -> None:
    http.post("/notes", json={"title": "projected"})

    deadline = time.monotonic() + 10
    while True:
        result = run_cli("projections", "status", cwd=server.cwd)
        assert result.returncode == 0, result.stderr
        header, *rows = result.stdout.splitlines()
        assert header.split() == ["projector", "partition", "checkpoint", "lag", "parked"]
        (row,) = (r.split() for r in rows if r.startswith("notes"))
        name, partition, checkpoint, lag, parked = row
        if lag == "0" or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert (name, partition, lag, parked) == ("notes", "all", "0", "0")
    assert int(checkpoint) > 0
    assert "[LAB]" in result.stderr


# -- routes files -------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


#: The connections ``all_dynamodb()`` needs (nothing is reached by the tests using it).
SAAS_CONNECTIONS = "{dynamodb: {}, kafka: {bootstrap_servers: '127.0.0.1:1'}}"


def saas_file(tmp_path: Path, routes: dict[str, str], connections: str = SAAS_CONNECTIONS) -> Path:
    lines = [
        "mode: saas",
        "auth:",
        "  algorithm: HS256",
        f"  hs256_secret: {SAAS_SECRET}",
        f"connections: {connections}",
        "routes:",
    ]
    lines += [f"  {kind}: {route}" for kind, route in routes.items()]
    return write(tmp_path / "saas.yaml", "\n".join(lines) + "\n")


def all_dynamodb() -> dict[str, str]:
    routes = {kind: f"{{backend: dynamodb, name: {kind}}}" for kind in VIEW_KINDS}
    routes |= {
        "event_spine": "{backend: dynamodb, name: spine}",
        "projection_checkpoints": "{backend: dynamodb, name: checkpoints}",
        "spine_feed": "{backend: kafka, name: spine-feed}",
        "command_bus": "{backend: kafka, name: commands}",
    }
    return routes


def test_routes_check_lists_every_kind_of_the_packaged_lab_file(tmp_path: Path) -> None:
    lab_file = Path(str(resources.files("engines").joinpath("lab.yaml")))

    result = run_cli("routes", "check", str(lab_file), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "mode lab" in result.stderr  # beside the table, which stays parseable
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["kind", "backend", "name", "lab"]
    kinds = [line.split()[0] for line in lines]
    assert sorted(kinds) == sorted(ACTIVE_KINDS)
    for line in lines:
        if line.startswith("command_bus"):
            assert "LAB" not in line
        else:
            assert line.split()[1] == "sqlite"
            assert "LAB: embedded" in line
    as_json = run_cli("routes", "check", str(lab_file), "--format", "json", cwd=tmp_path)
    routes = {r["kind"]: r for r in orjson.loads(as_json.stdout)}
    assert routes["event_spine"]["backend"] == "sqlite"


def test_a_complete_saas_file_passes_routes_check(tmp_path: Path) -> None:
    result = run_cli("routes", "check", str(saas_file(tmp_path, all_dynamodb())), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "mode saas" in result.stderr
    assert "LAB" not in result.stdout


@pytest.mark.parametrize("command", ["serve", "check"])
def test_a_saas_file_missing_kinds_is_refused_naming_every_one(
    tmp_path: Path, command: str
) -> None:
    path = saas_file(tmp_path, {"event_spine": "{backend: dynamodb, name: spine}"})
    args = (
        ["serve", "--routes", str(path), "--port", str(free_port())]
        if command == "serve"
        else ["routes", "check", str(path)]
    )

    started = time.monotonic()
    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode != 0
    assert time.monotonic() - started < QUICK_EXIT_SECONDS
    missing = ACTIVE_KINDS - {"event_spine"}
    for kind in missing:
        assert kind in result.stderr, kind
    assert "event_spine" not in result.stderr
    assert not (tmp_path / ".engines").exists()


@pytest.mark.parametrize("command", ["serve", "check"])
def test_a_reserved_kind_is_refused_as_reserved_not_active(tmp_path: Path, command: str) -> None:
    path = saas_file(tmp_path, {**all_dynamodb(), "vector_store": "{backend: dynamodb, name: v}"})
    args = (
        ["serve", "--routes", str(path), "--port", str(free_port())]
        if command == "serve"
        else ["routes", "check", str(path)]
    )

    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode != 0
    assert "vector_store" in result.stderr
    assert "reserved, not active" in result.stderr


@pytest.mark.parametrize("command", ["serve", "check"])
def test_a_sqlite_route_in_saas_mode_is_refused(tmp_path: Path, command: str) -> None:
    routes = {**all_dynamodb(), "notes_store": "{backend: sqlite, name: notes, lab: true}"}
    path = saas_file(tmp_path, routes)
    args = (
        ["serve", "--routes", str(path), "--port", str(free_port())]
        if command == "serve"
        else ["routes", "check", str(path)]
    )

    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode != 0
    assert "notes_store" in result.stderr
    assert "lab-only" in result.stderr
    assert not (tmp_path / ".engines").exists()


def test_token_mints_for_a_saas_configuration_with_its_own_secret(tmp_path: Path) -> None:
    path = saas_file(tmp_path, all_dynamodb())

    result = run_cli("token", "--routes", str(path), "--tenant", "t", "--user", "u", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SAAS_SECRET, algorithms=["HS256"])
    assert (claims["mode"], claims["tenant_id"], claims["sub"]) == ("saas", "t", "u")
    assert not (tmp_path / ".engines").exists()


@pytest.mark.parametrize("ttl", ["0", "-60", "soon"])
def test_token_refuses_a_lifetime_that_is_not_a_positive_number_of_seconds(
    tmp_path: Path, ttl: str
) -> None:
    result = run_cli("token", "--tenant", "t", "--user", "u", "--ttl", ttl, cwd=tmp_path)

    assert result.returncode != 0
    assert result.stdout == ""
    assert "--ttl" in result.stderr


def test_token_mints_kind_roles_and_projects_per_surface(tmp_path: Path) -> None:
    lab_secret(tmp_path / ".engines")  # as `engines serve` leaves it
    result = run_cli(
        *("token", "--tenant", "t", "--user", "bot", "--surface", "chat", "--surface", "canvas"),
        *("--project", "p1", "--project", "chat=p2", "--kind", "agent"),
        *("--role", "admin", "--role", "auditor"),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    secret = (tmp_path / ".engines" / "lab-jwt-secret").read_text().strip()
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["kind"], claims["roles"]) == ("agent", ["admin", "auditor"])
    assert claims["surfaces"] == ["chat", "canvas"]
    assert claims["projects"] == {"chat": ["p1", "p2"], "canvas": ["p1"]}


def test_token_grants_a_plain_project_on_every_surface_and_defaults_to_a_user(
    tmp_path: Path,
) -> None:
    lab_secret(tmp_path / ".engines")  # as `engines serve` leaves it
    result = run_cli(
        "token",
        "--tenant",
        "t",
        "--user",
        "u",
        "--surface",
        "chat",
        "--project",
        "p1",
        cwd=tmp_path,
    )

    secret = (tmp_path / ".engines" / "lab-jwt-secret").read_text().strip()
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["kind"], claims["roles"], claims["projects"]) == ("user", [], ["p1"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--surface", "chat", "--project", "builder=p1"], "builder"),
        (["--kind", "robot"], "--kind"),
        (["--role", "root"], "--role"),
        (["--tenant", "engines:unauthenticated"], "tenant_id"),
    ],
)
def test_token_refuses_what_would_not_verify(tmp_path: Path, args: list[str], named: str) -> None:
    lab_secret(tmp_path / ".engines")  # as `engines serve` leaves it
    base = ["token", "--user", "u"] + ([] if "--tenant" in args else ["--tenant", "t"])

    result = run_cli(*base, *args, cwd=tmp_path)

    assert result.returncode != 0
    assert result.stdout == ""
    assert named in result.stderr


def test_serve_leaves_forwarded_headers_to_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from engines.cli import main

    configs: list[uvicorn.Config] = []

    async def serve(self: uvicorn.Server, sockets: object = None) -> None:
        configs.append(self.config)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "serve", serve)

    assert main(["serve", "--data-dir", str(tmp_path), "--port", "1"]) == 0

    (config,) = configs
    assert config.proxy_headers is False


def unusable_file(tmp_path: Path) -> Path:
    """Every kind routed, but to clouds without their connections, and a secret file
    too short to sign with."""
    secret = write(tmp_path / "short-secret", "too-short\n")
    routes = {kind: f"{{backend: firestore, name: {kind}}}" for kind in VIEW_KINDS}
    routes |= {
        "event_spine": "{backend: cosmos, name: spine}",
        "projection_checkpoints": "{backend: dynamodb, name: checkpoints}",
        "spine_feed": "{backend: direct, name: feed}",
        "command_bus": "{backend: inprocess, name: commands}",
    }
    lines = ["mode: saas", "auth:", f"  hs256_secret_file: {secret}", "routes:"]
    lines += [f"  {kind}: {route}" for kind, route in routes.items()]
    return write(tmp_path / "unusable.yaml", "\n".join(lines) + "\n")


@pytest.mark.parametrize("command", ["serve", "check", "provision"])
def test_a_file_that_cannot_work_is_refused_naming_every_problem_before_serving(
    tmp_path: Path, command: str
) -> None:
    path = unusable_file(tmp_path)
    args = {
        "serve": ["serve", "--routes", str(path), "--port", str(free_port())],
        "check": ["routes", "check", str(path)],
        "provision": ["routes", "provision", str(path)],
    }[command]

    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    for backend in ("dynamodb", "cosmos", "firestore"):
        assert f"no `connections.{backend}` block" in result.stderr, backend
    assert "short-secret has 9 characters; at least 32 are required" in result.stderr
    assert "serving on" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / ".engines").exists()


def test_a_missing_secret_file_is_named_by_routes_check(tmp_path: Path) -> None:
    path = saas_file(tmp_path, all_dynamodb())
    write(path, path.read_text().replace(f"hs256_secret: {SAAS_SECRET}", "hs256_secret_file: gone"))

    result = run_cli("routes", "check", str(path), cwd=tmp_path)

    assert result.returncode == 2
    assert "configuration refused:\n  auth: cannot read key file gone" in result.stderr


def test_serve_whose_backend_does_not_answer_exits_1_without_a_traceback(tmp_path: Path) -> None:
    routes = all_dynamodb() | {
        "spine_feed": "{backend: direct, name: f}",
        "command_bus": "{backend: inprocess, name: c}",
    }
    nowhere = f"http://127.0.0.1:{free_port()}"
    path = saas_file(tmp_path, routes, f"{{dynamodb: {{endpoint_url: '{nowhere}'}}}}")

    result = run_cli("serve", "--routes", str(path), "--port", str(free_port()), cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert "backend 'dynamodb' for route" in result.stderr
    assert "unavailable" in result.stderr
    assert "serving on" not in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_lab_data_dir_whose_secret_is_too_short_refuses_to_start(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write(data / "lab-jwt-secret", "short")

    result = run_cli("serve", "--data-dir", str(data), "--port", str(free_port()), cwd=tmp_path)

    assert result.returncode == 2
    assert "lab-jwt-secret has 5 characters" in result.stderr
    assert "serving on" not in result.stderr
    assert not (data / "engines.db").exists()


@pytest.mark.parametrize("content", [None, "short"])
def test_a_kafka_record_key_that_cannot_serve_is_named_by_routes_check(
    tmp_path: Path, content: str | None
) -> None:
    key = tmp_path / "record.key"
    if content is not None:
        write(key, content)
    kafka = f"{{bootstrap_servers: '127.0.0.1:1', record_key_file: '{key}'}}"
    path = saas_file(tmp_path, all_dynamodb(), f"{{dynamodb: {{}}, kafka: {kafka}}}")

    result = run_cli("routes", "check", str(path), cwd=tmp_path)

    assert result.returncode == 2, result.stdout
    assert f"connections.kafka.record_key_file {key}" in result.stderr
