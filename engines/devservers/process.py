"""Start a local server in its own process group, wait until it answers, stop the group.

Each group has a watchdog (:mod:`.watchdog`) that stops it if the process that started
it dies without doing so (SIGKILL, a crash): no server outlives its starter. POSIX only,
as process groups are.

Every server binds 127.0.0.1. Output goes to a log file (never an unread pipe, which a
chatty server would fill and block on), and its tail is quoted when the server exits
before it answers or does not answer in time (:class:`ServerFailed`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

HOST = "127.0.0.1"
#: The source checkout this package runs from (cosmosdb-server is installed under it; the
#: watchdog runs as ``python -m`` from it).
CHECKOUT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 2000


class ServerFailed(Exception):
    """A server exited before it answered, or did not answer in time; the message quotes
    the end of its output."""


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """One server process group, started by :meth:`start` and ended by :meth:`stop`
    (or by leaving its ``with`` block)."""

    def __init__(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        log: IO[bytes],
        watchdog: subprocess.Popen[bytes] | None = None,
        lifeline: int | None = None,
    ) -> None:
        self.name = name
        self.process = process
        self._log = log
        self._watchdog = watchdog
        self._lifeline = lifeline
        """The write end of the watchdog's pipe: closing it (or dying) lets it act."""

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        ready_url: str,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> Self:
        """Start ``argv`` in a new session (``env`` added to this process's environment)
        and return once ``ready_url`` answers any HTTP status.

        Raises :class:`ServerFailed` (and stops the group) if the process exits first or
        ``timeout`` seconds pass.
        """
        log = tempfile.TemporaryFile(prefix=f"{name}-")  # noqa: SIM115 (closed by stop())
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        watchdog, lifeline = _watch(process.pid)
        server = cls(name, process, log, watchdog, lifeline)
        try:
            server._wait_ready(ready_url, timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerFailed(
                    f"{self.name} exited with status {code} before it answered on {url}; "
                    f"its output ends with:\n{self.log_tail()}"
                )
            if self._answers(url):
                return
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"{self.name} did not answer on {url} within {timeout:.0f} s; "
                    f"its output ends with:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _answers(self, url: str) -> bool:
        """Whether the server answers ``url`` with any HTTP status (a subclass asks in its
        server's own protocol)."""
        # A self-signed certificate is expected here (cosmosdb-server); only liveness counts.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP status means it is serving
        except OSError:
            return False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self) -> str:
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - LOG_TAIL_CHARS))
        return self._log.read().decode(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process in the group: SIGTERM, then SIGKILL after ``grace`` seconds.

        The whole group, not just the leader: a launcher script's children (the
        Firestore emulator's Java) outlive a signal sent to the script alone.
        """
        if self._log.closed:
            return  # stopped already
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        try:
            signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if group_alive(pgid):
                signal_group(pgid, signal.SIGKILL)
            self.process.wait(timeout=grace)
        finally:
            self._log.close()
            self._release_watchdog(grace)

    def _release_watchdog(self, grace: float) -> None:
        """Let the watchdog go (the group is stopped: it finds nothing to do) and reap it."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=grace)


def _watch(pgid: int) -> tuple[subprocess.Popen[bytes] | None, int | None]:
    """Start the watchdog of group ``pgid`` (:mod:`.watchdog`); return it and the write
    end of its pipe, which only this process holds (``os.pipe`` makes descriptors that
    no child inherits). ``(None, None)`` where there are no process groups."""
    if not hasattr(os, "killpg"):  # pragma: no cover - not POSIX: nothing to watch
        return None, None
    read_end, write_end = os.pipe()
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "engines.devservers.watchdog", str(pgid)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or hang-up on the terminal is not for it
            cwd=CHECKOUT,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return watchdog, write_end


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies don't count.

    A child orphaned by the leader's exit stays a zombie until init reaps it, which
    here can take seconds, so ``killpg(pgid, 0)`` alone would wait for init, not for us.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False
