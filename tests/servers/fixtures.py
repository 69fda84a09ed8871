"""Session fixtures for the real local servers: moto (DynamoDB, S3), Firestore, Cosmos DB.

Loaded for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``. Each server
starts at most once per session, and only when a test asks for its fixture; its
process group is stopped at session end. A server that cannot start here skips the
test with what to install, except on CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from tests.servers.process import HOST, ServerProcess, free_port, unavailable

HERE = Path(__file__).parent
COSMOSDB_SERVER = HERE / "node_modules" / ".bin" / "cosmosdb-server"
FIRESTORE_EMULATOR_SCRIPT = Path("platform", "cloud-firestore-emulator", "cloud_firestore_emulator")
# The well-known key of Microsoft's Cosmos DB emulator; cosmosdb-server accepts any key.
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if executable is None:
        unavailable("moto_server is not installed: run `make test`, which installs moto[server]")
    server = MotoServer(port=free_port())
    # moto's server, taking one request at a time (see moto_serial.py for why)
    with ServerProcess.start(
        "moto_server",
        [sys.executable, str(HERE / "moto_serial.py"), server.host, str(server.port)],
        ready_url=f"{server.endpoint_url}/moto-api/",
        timeout=30,
    ):
        yield server


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    script = _firestore_emulator_script()
    server = FirestoreEmulator(port=free_port())
    with ServerProcess.start(
        "cloud-firestore-emulator",
        [str(script), "start", f"--host={server.host}", f"--port={server.port}"],
        ready_url=f"{server.endpoint_url}/",
        timeout=60,  # Java
    ):
        yield server


@pytest.fixture(scope="session")
def cosmosdb_server() -> Iterator[CosmosDBServer]:
    if not COSMOSDB_SERVER.exists() or shutil.which("node") is None:
        unavailable(
            "cosmosdb-server is not installed: `npm ci` in tests/servers (which `make test` "
            "runs) installs @vercel/cosmosdb-server; it needs Node.js"
        )
    server = CosmosDBServer(port=free_port())
    with ServerProcess.start(
        "cosmosdb-server",
        # Without --host it listens on every interface.
        [str(COSMOSDB_SERVER), "--host", server.host, "-p", str(server.port)],
        ready_url=f"{server.endpoint_url}/",
        timeout=30,
    ):
        yield server


def _firestore_emulator_script() -> Path:
    install = (
        "install the Google Cloud CLI component cloud-firestore-emulator "
        "(`gcloud components install cloud-firestore-emulator`, or Debian's "
        "google-cloud-cli-firestore-emulator) and a Java runtime"
    )
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        unavailable(f"the Firestore emulator cannot run here: {install}")
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
        unavailable(f"the Firestore emulator is not installed in the Cloud SDK: {install}")
    return script
