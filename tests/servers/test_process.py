"""The launcher itself, on a stand-in server (Python's http.server behind a parent process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.devservers.process import group_alive
from tests.servers.process import HOST, ServerProcess, free_port, unavailable

# A parent that starts an HTTP server as its child and waits, the way the Firestore
# emulator's launcher script starts Java: stopping only the parent would leave the child.
LAUNCHER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", sys.argv[1], sys.argv[2]])
print("child", child.pid, flush=True)
child.wait()
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_ends_the_whole_process_group_not_only_the_leader() -> None:
    port = free_port()
    server = ServerProcess.start(
        "stand-in",
        [sys.executable, "-c", LAUNCHER, HOST, str(port)],
        ready_url=f"http://{HOST}:{port}/",
        timeout=30,
    )
    child = int(server.log_tail().split()[1])
    assert _alive(child)

    server.stop()

    assert not _alive(child)
    assert server.process.returncode is not None


# A starter that starts the stand-in through the launcher, says which processes run it,
# and waits to be killed.
STARTER = """
import sys, time
from engines.devservers.process import ServerProcess
server = ServerProcess.start(
    "stand-in", [sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]],
    ready_url=f"http://{sys.argv[2]}:{sys.argv[3]}/", timeout=30,
)
print(server.process.pid, server.log_tail().split()[1], flush=True)
time.sleep(600)
"""
#: A bound so a broken watchdog fails the test instead of hanging it (not a timing check).
GONE_SECONDS = 60


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_whole_group_stops_when_its_starter_is_killed_without_stopping_it() -> None:
    port = free_port()
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, LAUNCHER, HOST, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    leader = 0
    try:
        assert starter.stdout is not None
        leader, child = (int(pid) for pid in starter.stdout.readline().split())
        assert _alive(leader)
        assert _alive(child)

        starter.send_signal(signal.SIGKILL)
        starter.wait(timeout=GONE_SECONDS)

        assert _gone_within([leader, child], GONE_SECONDS), "the stand-in outlived its starter"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        if leader and group_alive(leader):  # the test failed: leave nothing running
            os.killpg(leader, signal.SIGKILL)


def test_a_server_that_exits_before_answering_fails_with_its_output() -> None:
    script = "import sys; print('no licence for port', file=sys.stderr); sys.exit(3)"
    with pytest.raises(pytest.fail.Exception, match=r"(?s)status 3 .*no licence for port"):
        ServerProcess.start(
            "stand-in",
            [sys.executable, "-c", script],
            ready_url=f"http://{HOST}:{free_port()}/",
            timeout=30,
        )


def test_a_server_that_never_answers_fails_after_the_timeout_and_is_stopped() -> None:
    script = "import os, time; print('still warming up', os.getpid(), flush=True); time.sleep(60)"
    with pytest.raises(pytest.fail.Exception, match=r"(?s)within 1 s.*still warming up") as failed:
        ServerProcess.start(
            "stand-in",
            [sys.executable, "-c", script],
            ready_url=f"http://{HOST}:{free_port()}/",
            timeout=1,
        )
    pid = int(str(failed.value).split()[-1])
    assert not _alive(pid)


def test_a_missing_server_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install it"):
        unavailable("install it")


def test_a_missing_server_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install it"):
        unavailable("install it")


def test_the_containers_switch_without_testcontainers_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    from tests.servers import containers

    real_import = builtins.__import__

    def no_testcontainers(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("testcontainers"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_testcontainers)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("ENGINES_TEST_SERVERS", "containers")

    assert containers.wanted()
    with pytest.raises(pytest.skip.Exception, match=r"pip install -e '\.\[docker\]'"):
        containers.docker_container(containers.DYNAMODB_IMAGE)
