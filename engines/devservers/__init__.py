"""Local servers for the cloud backends, without Docker (DESIGN §8): moto_server for
DynamoDB, the Cloud Firestore emulator, and cosmosdb-server for Cosmos DB.

``engines dev servers`` starts them for people (on the fixed ports that
``examples/routes/*.yaml`` name); the test fixtures (``tests/servers/``) start the same
programs on free ports. Each runs in its own process group on 127.0.0.1
(:mod:`.process`). A program that is not installed raises :class:`ServerMissing`,
whose message says what to install.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engines.devservers.process import CHECKOUT, HOST, ServerFailed, ServerProcess, free_port

__all__ = [
    "CHECKOUT",
    "COSMOS_EMULATOR_KEY",
    "COSMOS_SERVER",
    "DEV_SERVERS",
    "FIRESTORE_SERVER",
    "HOST",
    "MOTO_SERVER",
    "DevServer",
    "ServerFailed",
    "ServerMissing",
    "ServerProcess",
    "cosmosdb_server_program",
    "firestore_emulator_script",
    "free_port",
]

#: Where ``npm ci`` in ``tests/servers`` (``make test`` runs it) installs cosmosdb-server.
COSMOSDB_SERVER_BIN: Final = CHECKOUT / "tests" / "servers" / "node_modules" / ".bin"
FIRESTORE_EMULATOR_SCRIPT: Final = Path(
    "platform", "cloud-firestore-emulator", "cloud_firestore_emulator"
)
# The well-known key of Microsoft's Cosmos DB emulator; cosmosdb-server accepts any key.
COSMOS_EMULATOR_KEY: Final = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


class ServerMissing(Exception):
    """A server's program is not installed here; the message says what to install."""


@dataclass(frozen=True)
class DevServer:
    """One local server: which backend it stands in for and how to start it."""

    backend: str
    program: str
    default_port: int
    """The port ``examples/routes/`` names (and compose.yaml publishes)."""
    scheme: str
    timeout: float
    """Seconds to wait for it to answer."""
    command: Callable[[str, int], list[str]]
    """The argv serving on (host, port); raises :class:`ServerMissing`."""
    ready_path: str = "/"
    """What is asked until it answers (any HTTP status)."""

    def url(self, host: str, port: int) -> str:
        return f"{self.scheme}://{host}:{port}"

    def start(self, host: str, port: int) -> ServerProcess:
        """Start it and return once it answers (:class:`ServerMissing`,
        :class:`ServerFailed`)."""
        return ServerProcess.start(
            self.program,
            self.command(host, port),
            ready_url=self.url(host, port) + self.ready_path,
            timeout=self.timeout,
        )


def _moto_command(host: str, port: int) -> list[str]:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise ServerMissing(
            "moto_server is not installed: pip install 'moto[server]' "
            "(`make test` installs it with the test extra)"
        )
    # moto's server, taking one request at a time (see moto_serial.py for why)
    return [sys.executable, "-m", "engines.devservers.moto_serial", host, str(port)]


def firestore_emulator_script() -> Path:
    """The emulator's own launcher under the Cloud SDK (it starts in about a second;
    ``gcloud emulators firestore start`` takes longer and says the same)."""
    install = (
        "install the Google Cloud CLI component cloud-firestore-emulator "
        "(`gcloud components install cloud-firestore-emulator`, or Debian's "
        "google-cloud-cli-firestore-emulator) and a Java runtime"
    )
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        raise ServerMissing(f"the Firestore emulator cannot run here: {install}")
    # gcloud is usually <sdk root>/bin/gcloud; asking it (`gcloud info`) costs ~0.7 s.
    sdk_root = Path(gcloud).resolve().parent.parent
    if not (sdk_root / FIRESTORE_EMULATOR_SCRIPT).exists():
        sdk_root = Path(
            subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout.strip()
        )
    script = sdk_root / FIRESTORE_EMULATOR_SCRIPT
    if not script.exists():
        raise ServerMissing(f"the Firestore emulator is not installed in the Cloud SDK: {install}")
    return script


def _firestore_command(host: str, port: int) -> list[str]:
    return [str(firestore_emulator_script()), "start", f"--host={host}", f"--port={port}"]


def cosmosdb_server_program() -> Path:
    """cosmosdb-server: the checkout's pinned one (``tests/servers/package.json``), else
    one on ``PATH``."""
    pinned = COSMOSDB_SERVER_BIN / "cosmosdb-server"
    found = pinned if pinned.exists() else shutil.which("cosmosdb-server")
    if found is None or shutil.which("node") is None:
        raise ServerMissing(
            "cosmosdb-server is not installed: `npm ci` in tests/servers (which `make test` "
            "runs) installs @vercel/cosmosdb-server; it needs Node.js"
        )
    return Path(found)


def _cosmos_command(host: str, port: int) -> list[str]:
    # Without --host it listens on every interface.
    return [str(cosmosdb_server_program()), "--host", host, "-p", str(port)]


MOTO_SERVER: Final = DevServer(
    "dynamodb", "moto_server", 8001, "http", 30, _moto_command, ready_path="/moto-api/"
)
# Java: it takes longer to start.
FIRESTORE_SERVER: Final = DevServer(
    "firestore", "cloud-firestore-emulator", 8080, "http", 60, _firestore_command
)
COSMOS_SERVER: Final = DevServer("cosmos", "cosmosdb-server", 8081, "https", 30, _cosmos_command)
#: Every local server, in the order ``engines dev servers`` starts them.
DEV_SERVERS: Final = (MOTO_SERVER, FIRESTORE_SERVER, COSMOS_SERVER)
