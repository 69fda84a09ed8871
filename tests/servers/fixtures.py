"""Session fixtures for the real local servers: moto (DynamoDB, S3), Firestore, Cosmos DB,
and Tansu (Kafka), in memory or kept in moto's S3 and restartable.

Loaded for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``. Each server
starts at most once per session, and only when a test asks for its fixture; its
process group is stopped at session end. A server that cannot start here skips the
test with what to install, except on CI (``CI=true``), where it fails.

``ENGINES_TEST_SERVERS=containers`` starts the official images instead (compose.yaml's,
through testcontainers: :mod:`tests.servers.containers`), where a Docker engine runs.
Tansu is one static binary, so it runs as a local process either way.
"""

from __future__ import annotations

import uuid
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
    ServerFailed,
    ServerMissing,
    TansuS3Storage,
    firestore_emulator_script,
    start_tansu,
)
from engines.devservers import ServerProcess as BareServerProcess
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


@dataclass(frozen=True)
class TansuBroker(LocalServer):
    """Tansu, a Kafka-compatible broker: clients bootstrap from ``bootstrap``."""

    scheme: ClassVar[str] = "tcp"

    @property
    def bootstrap(self) -> str:
        return self.host_port

    @property
    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}


class TansuOnS3:
    """Tansu keeping topics, records and committed offsets in a bucket on moto's S3:
    :meth:`restart` stops its process group and starts it again on the same port, from
    the same bucket, as a broker restart in production would."""

    fetch_max_wait_ms: ClassVar[int] = 2_000
    """The fetch wait its consumers need. Tansu reads a partition by listing every
    record batch object under the partition's prefix, on each fetch, and gives up the
    fetch (an empty answer, no error) once that takes longer than the fetch's wait. The
    listing grows with the partition: on moto's S3 (one request at a time), a few
    hundred batches take from tens to hundreds of milliseconds, and with a short wait
    (50 ms) such a partition is never read again. Stay well above it."""

    def __init__(self, storage: TansuS3Storage, port: int) -> None:
        self.storage = storage
        self.broker = TansuBroker(port=port)
        self._process = _start_tansu(port, storage)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def restart(self) -> None:
        self._process.stop()
        self._process = _start_tansu(self.broker.port, self.storage)

    def stop(self) -> None:
        self._process.stop()


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


def _start_tansu(port: int, storage: TansuS3Storage | None = None) -> BareServerProcess:
    """Tansu on ``port``: skipped (failed on CI) if it is not installed."""
    try:
        return start_tansu(HOST, port, storage)
    except ServerMissing as exc:
        unavailable(str(exc))
    except ServerFailed as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    """Tansu in memory, for every Kafka test of the session (each uses topics and
    groups of its own)."""
    broker = TansuBroker(port=free_port())
    with _start_tansu(broker.port):
        yield broker


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> Iterator[MotoServer]:
    """moto_server, for its S3. With ENGINES_TEST_SERVERS=containers, DynamoDB Local (no
    S3) takes moto_server's place, so S3 gets a moto_server of its own."""
    if not containers.wanted():
        yield request.getfixturevalue("moto_server")
        return
    server = MotoServer(port=free_port())
    with _start(MOTO_SERVER, server.port):
        yield server


@pytest.fixture(scope="session")
def tansu_on_s3(s3_server: MotoServer) -> Iterator[TansuOnS3]:
    """Tansu kept in a fresh bucket on moto's S3, restartable (:class:`TansuOnS3`)."""
    import boto3

    storage = TansuS3Storage(
        bucket=f"tansu-{uuid.uuid4().hex[:12]}",
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        aws_access_key_id=storage.access_key_id,
        aws_secret_access_key=storage.secret_access_key,
    )
    s3.create_bucket(Bucket=storage.bucket)
    broker = TansuOnS3(storage, free_port())
    try:
        yield broker
    finally:
        broker.stop()


def _firestore_emulator_script() -> Path:
    try:
        return firestore_emulator_script()
    except ServerMissing as exc:
        unavailable(str(exc))
