"""The routes file: which backend, physical name and options serve each resource kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from spine.errors import RoutingError
from spine.events import Mode

#: The largest number a route option takes (every store holds it as a 32-bit int).
MAX_OPTION = 2**31 - 1

#: The most a blackboard key's value may be set to take (``max_value_bytes``): what a
#: record holding it fits in every store (DynamoDB takes 400 KB an item).
MAX_VALUE_BYTES: Final = 256 * 1024

PhysicalName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")]


class RouteOptions(BaseModel):
    """Options a kind may honour (``routing.kinds.KIND_OPTIONS``); one set on a route to
    a kind that does not is refused with the routes file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl_seconds: int | None = Field(default=None, gt=0, le=MAX_OPTION, strict=True)
    """For session memory: the time to live of a key when its write names none, and the
    most a write may name. Counted from the write's recorded time."""
    max_value_bytes: int | None = Field(default=None, gt=0, le=MAX_VALUE_BYTES, strict=True)
    """For the blackboard: the most bytes a key's value may take, encoded (413 above);
    at most :data:`MAX_VALUE_BYTES`, what fits every store."""


class Route(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    name: PhysicalName
    """Physical name: table, container, collection or topic."""
    lab: bool = False
    """Must be true on every route to a lab-only backend, and only lab mode accepts it."""
    options: RouteOptions = RouteOptions()


class SqliteConnection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = "engines.db"
    """The database file, relative to the data directory unless absolute."""
    synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL|EXTRA)$")
    """SQLite's durability setting (WAL journal). FULL survives power loss."""
    busy_timeout_ms: int = Field(default=10_000, ge=0, le=600_000, strict=True)
    """How long a write waits for another process's lock before the backend is reported
    unavailable."""


class DynamoDBConnection(BaseModel):
    """Amazon DynamoDB (aioboto3). Credentials come from the usual AWS chain (env,
    profile, role) unless given; ``endpoint_url`` points at a local server (moto)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    table_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    """Put before every physical name (one account, several deployments)."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """How long one attempt of a request may wait for its answer (up to three attempts)
    before the backend is reported unavailable (a server that hangs answers no sooner)."""


class CosmosConnection(BaseModel):
    """Azure Cosmos DB (azure-cosmos, aio). ``verify_tls: false`` only for a local
    emulator's self-signed certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str
    key: str | None = None
    key_file: str | None = None
    """A file holding the account key (relative to the data directory)."""
    database: str = Field(default="engines", pattern=r"^[A-Za-z0-9_-]{1,255}$")
    verify_tls: bool = True
    timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    """How long one attempt of a request may wait to connect and for its answer (the
    SDK makes up to about four attempts) before the backend is reported unavailable: a
    server that hangs is reported after about four times this. 5: the SDK's own."""
    endpoint_discovery: bool = True
    """Whether the client follows the regional endpoints the account advertises (the
    SDK's default). ``false``: only ``endpoint`` is used, as behind a port mapping or a
    proxy, where the advertised address is not reachable (an emulator in a container)."""


class FirestoreConnection(BaseModel):
    """Google Cloud Firestore (AsyncClient). ``emulator_host`` (host:port) points the
    client at a local emulator; otherwise the usual Google credentials are used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
    database: str = "(default)"
    emulator_host: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """How long one request may take, its retries included, before the backend is
    reported unavailable (a server that is down answers no sooner)."""


class KafkaConnection(BaseModel):
    """A Kafka cluster (aiokafka), for ``spine_feed: kafka`` and ``command_bus: kafka``.
    Nothing here relies on idempotent producers or transactions (correctness comes
    from the spine's command ids and seqs); a cluster that has them may turn the
    producer's on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(pattern=r"^[A-Za-z0-9_.:\[\]-]+(,[A-Za-z0-9_.:\[\]-]+)*$")
    """``host:port[,host:port...]``."""
    client_id: str = Field(default="engines", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    group_prefix: str = Field(default="engines.", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    """Put before a consumer group's name (``<prefix><topic>.<projector>``)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_file: str | None = None
    """A file holding the SASL password (relative to the data directory)."""
    partitions: int = Field(default=16, ge=1, le=10_000, strict=True)
    """Partitions of a topic created here (``routes provision``, start-up with create)."""
    replication_factor: int = Field(default=1, ge=1, le=16, strict=True)
    record_key_file: str | None = None
    """A file (relative to the data directory) holding a secret every process of the
    deployment shares: the relay signs each record of the spine's topic with it and
    projectors pass over records not signed with it, so writing to the topic without
    it can neither add an event to a view nor hold a stream back. Without it,
    projectors trust the topic (its write access is the boundary). At least 32 bytes."""
    idempotent_producer: bool = False
    """Turn on the producer's idempotence where the cluster offers it (a real Kafka);
    off by default: correctness never depends on it."""
    linger_ms: int = Field(default=0, ge=0, le=1_000, strict=True)
    """How long the producer waits to fill a batch (0: send at once; latency first)."""
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000, strict=True)
    """How long a fetch waits at the broker for records before answering empty. A broker
    reading object storage (Tansu on S3) answers empty when its read takes longer than
    this, even with records there: keep it well above that read."""
    session_timeout_ms: int = Field(default=10_000, ge=100, le=3_600_000, strict=True)
    """A consumer group member silent this long is dropped and its partitions handed to
    the others (a real cluster takes 6 s to 30 min by default; a local broker less, and
    a shorter one makes joins faster there)."""
    heartbeat_interval_ms: int = Field(default=3_000, ge=10, le=3_600_000, strict=True)
    """How often a member tells the group it lives (well under ``session_timeout_ms``)."""
    rebalance_timeout_ms: int = Field(default=30_000, ge=100, le=3_600_000, strict=True)
    """How long the group waits for its members to rejoin in a rebalance."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """How long a request (a send, a metadata read, a group join) may take before the
    backend is reported unavailable."""


#: The fewest bytes a Kafka record key may hold.
MIN_RECORD_KEY_BYTES: Final = 32


def read_record_key(conn: KafkaConnection, data_dir: Path) -> bytes | None:
    """The secret of ``conn.record_key_file`` (relative to ``data_dir``), or ``None``
    without one; :class:`RoutingError` naming the file if it cannot serve."""
    name = conn.record_key_file
    if name is None:
        return None
    path = Path(name) if Path(name).is_absolute() else data_dir / name
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise RoutingError(f"connections.kafka.record_key_file {path}: {exc.strerror}") from exc
    if len(secret) < MIN_RECORD_KEY_BYTES:
        raise RoutingError(
            f"connections.kafka.record_key_file {path} holds {len(secret)} bytes; "
            f"a record key needs at least {MIN_RECORD_KEY_BYTES}"
        )
    return secret


class Connections(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sqlite: SqliteConnection = SqliteConnection()
    dynamodb: DynamoDBConnection | None = None
    cosmos: CosmosConnection | None = None
    firestore: FirestoreConnection | None = None
    kafka: KafkaConnection | None = None


class RoutesFile(BaseModel):
    """The routing part of a configuration file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode
    connections: Connections = Connections()
    routes: dict[str, Route] = Field(default_factory=dict)


def load_yaml(path: Path, text: str | None = None) -> dict[str, Any]:
    """Read a YAML mapping (from ``text`` if given, else the file), with errors that
    name the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8") if text is None else text)
    except OSError as exc:
        raise RoutingError(f"cannot read routes file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RoutingError(f"routes file {path} is not UTF-8 text: {exc.reason}") from exc
    except yaml.YAMLError as exc:
        raise RoutingError(f"routes file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RoutingError(f"routes file {path} must hold a mapping at the top")
    return data


def describe_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"routes file {path} is invalid:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
