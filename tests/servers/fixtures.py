"""Session fixtures for the real local servers: moto (DynamoDB, S3), Firestore, Cosmos DB.

Loaded for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``. Each server
starts at most once per session, and only when a test asks for its fixture; its
process group is stopped at session end. A server that cannot start here skips the
test with what to install, except on CI (``CI=true``), where it fails.

``ENGINES_TEST_SERVERS=containers`` starts the official images instead (compose.yaml's,
through testcontainers: :mod:`tests.servers.containers`), where a Docker engine runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from engines.devservers import (
    COSMOS_EMULATOR_KEY,
    COSMOS_SERVER,
    FIRESTORE_SERVER,
    MOTO_SERVER,
    DevServer,
    ServerMissing,
    firestore_emulator_script,
)
from tests.servers import containers
from tests.servers.process import HOST, ServerProcess, free_port, unavailable

HERE = Path(__file__).parent
COSMOSDB_SERVER = HERE / "node_modules" / ".bin" / "cosmosdb-server"


@dataclass(frozen=True)
class LocalServer:
    """Where a server listens; ``env`` is what its SDK reads to find it."""

    scheme: ClassVar[str] = "http"
    port: int
    host: str = HOST

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return f"{self.scheme}://{self.host_port}"

    @property
    def env(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class MotoServer(LocalServer):
    """moto_server: every AWS service moto mocks (DynamoDB, S3, ...) at one endpoint."""

    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


@dataclass(frozen=True)
class FirestoreEmulator(LocalServer):
    """The Cloud Firestore emulator; clients find it through ``FIRESTORE_EMULATOR_HOST``."""

    project: str = "engines-test"

    @property
    def env(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.host_port, "GOOGLE_CLOUD_PROJECT": self.project}


@dataclass(frozen=True)
class CosmosDBServer(LocalServer):
    """cosmosdb-server: HTTPS with a self-signed certificate, so ``connection_verify=False``."""

    scheme: ClassVar[str] = "https"
    key: str = field(default=COSMOS_EMULATOR_KEY, repr=False)
    connection_verify: bool = False

    @property
    def env(self) -> dict[str, str]:
        # azure-cosmos reads no variable itself; these are the names its samples use.
        return {"COSMOS_ENDPOINT": self.endpoint_url, "COSMOS_KEY": self.key}


def _start(server: DevServer, port: int) -> ServerProcess:
    """Start ``server`` on ``port``: skipped (failed on CI) if it is not installed."""
    try:
        argv = server.command(HOST, port)
    except ServerMissing as exc:
        unavailable(str(exc))
    return ServerProcess.start(
        server.program,
        argv,
        ready_url=server.url(HOST, port) + server.ready_path,
        timeout=server.timeout,
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    if containers.wanted():  # DynamoDB Local in its place
        with containers.dynamodb_local() as port:
            yield MotoServer(port=port)
        return
    server = MotoServer(port=free_port())
    with _start(MOTO_SERVER, server.port):
        yield server


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    if containers.wanted():
        with containers.firestore_emulator() as port:
            yield FirestoreEmulator(port=port)
        return
    server = FirestoreEmulator(port=free_port())
    with _start(FIRESTORE_SERVER, server.port):
        yield server


@pytest.fixture(scope="session")
def cosmosdb_server() -> Iterator[CosmosDBServer]:
    if containers.wanted():  # the Cosmos DB emulator in its place
        with containers.cosmos_emulator() as port:
            yield CosmosDBServer(port=port)
        return
    server = CosmosDBServer(port=free_port())
    with _start(COSMOS_SERVER, server.port):
        yield server


def _firestore_emulator_script() -> Path:
    try:
        return firestore_emulator_script()
    except ServerMissing as exc:
        unavailable(str(exc))
