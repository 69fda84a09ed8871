"""``engines dev servers``: the cloud backends' local servers, for trying a routes file
without Docker or a cloud account.

It starts moto_server (DynamoDB), the Cloud Firestore emulator, cosmosdb-server (Cosmos
DB) and Tansu (a Kafka-compatible broker) on 127.0.0.1, each in its own process group, on
the ports ``examples/routes/*.yaml`` name (Kafka: 9092, as compose.yaml publishes it);
prints one line per server once it answers (Kafka: its bootstrap address), then the
routes files to use; and stops every group on Ctrl-C or SIGTERM. Local only: the servers
keep data in memory and forget it when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import time
from pathlib import Path
from types import FrameType

from engines.cli.common import err, port_number
from engines.devservers import (
    CHECKOUT,
    DEV_SERVERS,
    HOST,
    DevServer,
    ServerFailed,
    ServerMissing,
    ServerProcess,
)

#: The example routes files and the servers each needs.
ROUTES_FILES: dict[str, tuple[str, ...]] = {
    "dynamodb.yaml": ("dynamodb",),
    "cosmos.yaml": ("cosmos",),
    "firestore.yaml": ("firestore",),
    "mixed.yaml": ("dynamodb", "cosmos", "firestore"),
}
EXAMPLES = CHECKOUT / "examples" / "routes"

#: Exit statuses (also in the command's help).
EXIT_STOPPED = 0  # stopped by Ctrl-C or SIGTERM
EXIT_FAILED = 1  # a server did not start, or exited while running
EXIT_MISSING = 2  # a server's program is not installed, or its port is taken

EPILOG = """\
exit status: 0 stopped by Ctrl-C or SIGTERM; 1 a server failed to start or exited
while running (its output is quoted); 2 a server's program is not installed (the
message says what to install; --only leaves it out) or its port is in use, or an
option is invalid (a port is 1 to 65535).
"""


class _Stop(Exception):
    """Ctrl-C or SIGTERM: stop every server."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    del frame
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the stop short
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def _port_taken(port: int) -> bool:
    """Whether something listens on ``port`` (a port left in TIME-WAIT by a server just
    stopped is free: the servers bind with SO_REUSEADDR too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _chosen(args: argparse.Namespace) -> list[tuple[DevServer, int]]:
    only = set(args.only or [s.backend for s in DEV_SERVERS])
    return [(s, getattr(args, f"{s.backend}_port")) for s in DEV_SERVERS if s.backend in only]


def _problems(chosen: list[tuple[DevServer, int]]) -> list[str]:
    """What stops a server from starting before anything is started: its program, its
    port (a server already there would answer our readiness check in its place)."""
    problems = []
    ports = [port for _, port in chosen]
    for port in sorted({p for p in ports if ports.count(p) > 1}):
        named = ", ".join(s.backend for s, p in chosen if p == port)
        problems.append(f"{named}: given the same port {port}; each needs its own")
    for server, port in chosen:
        try:
            server.command(HOST, port)
        except ServerMissing as exc:
            problems.append(f"{server.backend}: {exc}")
            continue
        if _port_taken(port):
            problems.append(
                f"{server.backend}: port {port} on {HOST} is in use (another `engines dev "
                f"servers`?); choose another with --{server.backend}-port"
            )
    return problems


def _print_routes(started: set[str], defaults: bool) -> None:
    print("routes files for these servers (run engines from the repository root):", flush=True)
    for name, needs in ROUTES_FILES.items():
        missing = [n for n in needs if n not in started]
        note = f"  (needs {', '.join(missing)} too)" if missing else ""
        print(f"  {_shown(EXAMPLES / name)}{note}", flush=True)
    if not defaults:
        print(
            "  (they name the default ports: with other ports, copy one and change its "
            "`connections`)",
            flush=True,
        )
    print("stop with Ctrl-C", flush=True)


def cmd_servers(args: argparse.Namespace) -> int:
    chosen = _chosen(args)
    problems = _problems(chosen)
    if problems:
        err(*(f"engines dev servers: {p}" for p in problems))
        return EXIT_MISSING
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    running: list[tuple[DevServer, ServerProcess]] = []
    try:
        for server, port in chosen:
            process = server.start(HOST, port)
            running.append((server, process))
            print(
                f"{server.backend:<10} ready  {server.url(HOST, port):<24} "
                f"{server.program} (process group {process.process.pid})",
                flush=True,
            )
        defaults = all(port == server.default_port for server, port in chosen)
        _print_routes({server.backend for server, _ in chosen}, defaults)
        while True:
            for server, process in running:
                code = process.process.poll()
                if code is not None:
                    err(
                        f"engines dev servers: {server.program} exited with status {code}; "
                        f"its output ends with:\n{process.log_tail()}"
                    )
                    return EXIT_FAILED
            time.sleep(0.5)
    except _Stop as stop:
        err(f"engines dev servers: {stop}: stopping")
        return EXIT_STOPPED
    except ServerFailed as exc:
        err(f"engines dev servers: {exc}")
        return EXIT_FAILED
    finally:
        for sig in previous:  # ignored while stopping (see _on_signal)
            signal.signal(sig, signal.SIG_IGN)
        for _, process in reversed(running):
            process.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if running:
            err("engines dev servers: every server stopped")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="local development helpers")
    dsub = dev.add_subparsers(dest="dev_command", required=True)
    ds = dsub.add_parser(
        "servers",
        help="run the cloud backends' local servers until Ctrl-C",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for server in DEV_SERVERS:
        ds.add_argument(
            f"--{server.backend}-port",
            type=port_number,
            default=server.default_port,
            metavar="PORT",
            help=f"{server.program}'s port (default {server.default_port})",
        )
    ds.add_argument(
        "--only",
        action="append",
        choices=[s.backend for s in DEV_SERVERS],
        help="start this one (repeatable; default: all)",
    )
    ds.set_defaults(func=cmd_servers)
