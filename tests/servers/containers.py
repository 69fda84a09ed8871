"""The servers as containers of the official images (compose.yaml's), for machines with
a Docker engine: ``ENGINES_TEST_SERVERS=containers`` makes the session fixtures
(:mod:`tests.servers.fixtures`) start these through testcontainers instead of local
processes. testcontainers is the ``docker`` extra (``pip install -e '.[docker]'``),
imported only here and only then; without it (or without Docker) the tests that need a
server skip, saying so (they fail on CI).

* DynamoDB Local stands in for moto_server (``-sharedDb``: any region and key; DynamoDB
  only, none of moto's other services);
* the Firestore emulator, from the gcloud emulators image;
* the Cosmos DB Linux emulator, on host port 8081 whatever is asked: clients follow the
  endpoints it advertises, which carry its own port. One per machine, then.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from tests.servers.process import HOST, free_port, unavailable

SWITCH = "ENGINES_TEST_SERVERS"
DYNAMODB_IMAGE = "amazon/dynamodb-local:latest"
FIRESTORE_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
COSMOS_IMAGE = "mcr.microsoft.com/cosmosdb/linux/azure-cosmos-emulator:latest"
COSMOS_PORT = 8081


def wanted() -> bool:
    """Whether the switch asks for containers (anything else: local processes)."""
    return os.environ.get(SWITCH, "processes") == "containers"


def docker_container(image: str) -> Any:
    """A testcontainers container of ``image``; skips (fails on CI) without the extra."""
    try:
        from testcontainers.core.container import DockerContainer
    except ImportError:
        unavailable(
            f"{SWITCH}=containers needs testcontainers: pip install -e '.[docker]' "
            "(and a Docker engine)"
        )
    return DockerContainer(image)


@contextlib.contextmanager
def _running(container: Any, name: str) -> Iterator[Any]:
    try:
        container.start()
    except Exception as exc:  # the Docker SDK's errors: no engine, no image, port taken
        unavailable(f"{name}: the container did not start ({exc}); is a Docker engine running?")
    try:
        yield container
    finally:
        container.stop()


def _wait_http(url: str, timeout: float) -> None:
    """Until ``url`` answers any HTTP status."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the Cosmos emulator's self-signed certificate
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@contextlib.contextmanager
def dynamodb_local() -> Iterator[int]:
    """DynamoDB Local on a free 127.0.0.1 port; yields the port."""
    port = free_port()
    container = (
        docker_container(DYNAMODB_IMAGE)
        .with_command("-jar DynamoDBLocal.jar -sharedDb -inMemory -port 8000")
        .with_bind_ports(8000, (HOST, port))
    )
    with _running(container, "DynamoDB Local"):
        _wait_http(f"http://{HOST}:{port}/", timeout=120)
        yield port


@contextlib.contextmanager
def firestore_emulator() -> Iterator[int]:
    """The Firestore emulator on a free 127.0.0.1 port; yields the port."""
    port = free_port()
    container = (
        docker_container(FIRESTORE_IMAGE)
        .with_command("gcloud emulators firestore start --host-port=0.0.0.0:8080")
        .with_bind_ports(8080, (HOST, port))
    )
    with _running(container, "the Firestore emulator"):
        _wait_http(f"http://{HOST}:{port}/", timeout=180)
        yield port


@contextlib.contextmanager
def cosmos_emulator() -> Iterator[int]:
    """The Cosmos DB emulator on 127.0.0.1:8081; yields the port."""
    container = (
        docker_container(COSMOS_IMAGE)
        .with_env("AZURE_COSMOS_EMULATOR_PARTITION_COUNT", "10")
        .with_env("AZURE_COSMOS_EMULATOR_ENABLE_DATA_PERSISTENCE", "false")
        .with_env("AZURE_COSMOS_EMULATOR_IP_ADDRESS_OVERRIDE", HOST)
        .with_bind_ports(COSMOS_PORT, (HOST, COSMOS_PORT))
    )
    from testcontainers.core.waiting_utils import wait_for_logs

    with _running(container, "the Cosmos DB emulator"):
        wait_for_logs(container, r"Started\s*$", timeout=300)
        yield COSMOS_PORT
