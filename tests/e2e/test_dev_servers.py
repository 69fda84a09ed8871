"""``engines dev servers`` as a user runs it: every server answers once its ready line is
printed, and SIGTERM stops every process of every server."""

from __future__ import annotations

import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.devservers import DEV_SERVERS, MOTO_SERVER, ServerMissing, kafka_answers
from engines.devservers.process import group_alive
from tests.servers.process import HOST, free_port, unavailable

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: Bounds so a broken command fails the test instead of hanging it (not timing checks).
START_SECONDS = 120
STOP_SECONDS = 60


def _answers(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # cosmosdb-server's self-signed certificate
    try:
        with urllib.request.urlopen(url, timeout=5, context=context):
            return True
    except urllib.error.HTTPError:
        return True  # any status: it serves
    except OSError:
        return False


def _serves(url: str) -> bool:
    """An HTTP server answers ``url``; a Kafka broker (a bare ``host:port``) its protocol."""
    return _answers(url + "/") if "://" in url else kafka_answers(url)


def _lines(stream: Iterator[str]) -> queue.Queue[str | None]:
    """The lines of ``stream``, read on a thread (``None`` at its end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.fixture
def dev_servers() -> Iterator[subprocess.Popen[str]]:
    for server in DEV_SERVERS:
        try:
            server.command(HOST, 0)
        except ServerMissing as exc:
            unavailable(str(exc))
    ports = [f"--{s.backend}-port={free_port()}" for s in DEV_SERVERS]
    process = subprocess.Popen(
        [sys.executable, "-m", "engines.cli", "dev", "servers", *ports],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=STOP_SECONDS)


def test_dev_servers_print_ready_lines_serve_and_stop_every_process_on_sigterm(
    dev_servers: subprocess.Popen[str],
) -> None:
    assert dev_servers.stdout is not None
    lines = _lines(dev_servers.stdout)
    ready: dict[str, tuple[str, int]] = {}
    shown: list[str] = []
    while "stop with Ctrl-C" not in shown:
        try:
            line = lines.get(timeout=START_SECONDS)
        except queue.Empty:
            pytest.fail(f"no output for {START_SECONDS} s after: {shown}")
        assert line is not None, (
            f"it exited: {shown}; {dev_servers.stderr and dev_servers.stderr.read()}"
        )
        shown.append(line.strip())
        if " ready " in line:
            backend, _, url, *_, group = line.split()
            ready[backend] = (url, int(group.rstrip(")")))

    assert sorted(ready) == sorted(s.backend for s in DEV_SERVERS)
    assert ready["kafka"][0].count(":") == 1  # a bootstrap address, host:port
    for url, _ in ready.values():
        assert _serves(url), url
    assert {"examples/routes/mixed.yaml", "examples/routes/dynamodb.yaml"} <= set(shown)

    dev_servers.send_signal(signal.SIGTERM)

    assert dev_servers.wait(timeout=STOP_SECONDS) == 0
    for url, group in ready.values():
        assert not group_alive(group), f"{url}: process group {group} still runs"
        assert not _serves(url), url


def test_killing_dev_servers_with_sigkill_leaves_no_server_running() -> None:
    try:
        MOTO_SERVER.command(HOST, 0)
    except ServerMissing as exc:
        unavailable(str(exc))
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engines.cli",
            "dev",
            "servers",
            "--only",
            "dynamodb",
            f"--dynamodb-port={port}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    group = 0
    try:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        while not group:
            line = lines.get(timeout=START_SECONDS)
            assert line is not None, "engines dev servers exited before its server was ready"
            if " ready " in line:
                group = int(line.split()[-1].rstrip(")"))
        url = f"http://{HOST}:{port}/moto-api/"
        assert _answers(url)

        process.send_signal(signal.SIGKILL)  # no handler runs: nothing of ours stops the group
        process.wait(timeout=STOP_SECONDS)

        deadline = time.monotonic() + STOP_SECONDS
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(group), f"moto_server (process group {group}) outlived its parent"
        assert not _answers(url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if group and group_alive(group):  # the test failed: leave nothing running
            os.killpg(group, signal.SIGKILL)


def test_a_server_whose_program_is_missing_says_what_to_install_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engines import devservers
    from engines.cli import main

    monkeypatch.setattr(devservers.shutil, "which", lambda name, **_: None)  # no node, no gcloud

    code = main(["dev", "servers", "--only", "cosmos", "--only", "firestore"])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "cosmos: cosmosdb-server is not installed: `npm ci` in tests/servers" in err
    assert "firestore: the Firestore emulator cannot run here: install the Google Cloud CLI" in err


@pytest.mark.parametrize("option", [f"--{s.backend}-port" for s in DEV_SERVERS])
@pytest.mark.parametrize("value", ["0", "70000", "-1", "http"])
def test_a_port_that_is_not_1_to_65535_is_a_usage_error_before_anything_starts(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from engines.cli import main

    with pytest.raises(SystemExit) as info:
        main(["dev", "servers", f"{option}={value}"])

    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"argument {option}:" in err
    assert "Traceback" not in err


def test_two_servers_given_one_port_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from engines.cli import main
    from engines.devservers.process import free_port

    port = free_port()
    code = main(["dev", "servers", "--dynamodb-port", str(port), "--cosmos-port", str(port)])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert f"dynamodb, cosmos: given the same port {port}; each needs its own" in err


def test_a_port_left_in_time_wait_is_free_and_a_listened_one_is_not() -> None:
    import socket

    from engines.cli.dev import _port_taken
    from engines.devservers.process import HOST

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((HOST, 0))
        server.listen()
        port = server.getsockname()[1]
        assert _port_taken(port)
        client = socket.create_connection((HOST, port))
        accepted, _ = server.accept()
        accepted.close()  # the server's side closes first: its end waits in TIME-WAIT
        client.close()
    assert not _port_taken(port)
