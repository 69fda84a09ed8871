"""The Kafka clients as the routes file configures them, topics, and the true end of a
partition.

Errors of the SDK become :class:`~spine.errors.BackendUnavailable` naming the route.

**The end of a partition.** A partition's head is read from a fetch's high watermark,
not from ``ListOffsets`` alone: Tansu (the test broker) answers ``ListOffsets(latest)``
with the base offset of the last record *batch* plus one. :func:`true_ends` asks
``ListOffsets``, fetches from one before that, and takes the high watermark the fetch
reports, which is right on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from routing.config import KafkaConnection, read_record_key
from spine.errors import BackendUnavailable, RoutingError

log = logging.getLogger(__name__)

BACKEND = "kafka"


class KafkaClients:
    """Builds aiokafka clients from one ``connections.kafka`` block."""

    def __init__(self, conn: KafkaConnection, data_dir: Path) -> None:
        self.conn = conn
        self.data_dir = data_dir

    def common(self) -> dict[str, Any]:
        c = self.conn
        options: dict[str, Any] = {
            "bootstrap_servers": c.bootstrap_servers.split(","),
            "client_id": c.client_id,
            "security_protocol": c.security_protocol,
            "request_timeout_ms": int(c.timeout_seconds * 1000),
        }
        if c.sasl_mechanism is not None:
            options["sasl_mechanism"] = c.sasl_mechanism
            options["sasl_plain_username"] = c.sasl_username
            options["sasl_plain_password"] = self._password()
        return options

    def _password(self) -> str | None:
        name = self.conn.sasl_password_file
        if name is None:
            return None
        path = Path(name) if Path(name).is_absolute() else self.data_dir / name
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RoutingError(
                f"connections.kafka.sasl_password_file {name}: {exc.strerror}"
            ) from exc

    def record_key(self) -> bytes | None:
        """The secret of ``record_key_file`` (:mod:`.wire`), or ``None`` without one."""
        return read_record_key(self.conn, self.data_dir)

    def producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self.common(),
            acks="all",
            enable_idempotence=self.conn.idempotent_producer,
            linger_ms=self.conn.linger_ms,
            max_request_size=4 * 1024 * 1024,
        )

    def consumer(
        self, *topics: str, group_id: str | None = None, **options: Any
    ) -> AIOKafkaConsumer:
        options.setdefault("auto_offset_reset", "earliest")
        return AIOKafkaConsumer(
            *topics,
            **self.common(),
            group_id=group_id,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.conn.fetch_max_wait_ms,
            session_timeout_ms=self.conn.session_timeout_ms,
            heartbeat_interval_ms=self.conn.heartbeat_interval_ms,
            rebalance_timeout_ms=self.conn.rebalance_timeout_ms,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **options,
        )

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.common())

    async def ensure_topics(self, topics: Sequence[str], route: str) -> list[str]:
        """Create the topics missing (``partitions`` each); return those it created."""
        admin = self.admin()
        async with unavailable(route, "create topics"):
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                wanted = [t for t in topics if t not in existing]
                created = []
                for topic in wanted:
                    new = NewTopic(
                        topic,
                        num_partitions=self.conn.partitions,
                        replication_factor=self.conn.replication_factor,
                    )
                    try:
                        answer = await admin.create_topics([new])
                    except TopicAlreadyExistsError:
                        continue  # another process made it first
                    # aiokafka answers a topic's refusal with its code, not an error
                    for name, code, message, *_ in getattr(answer, "topic_errors", ()):
                        if code == 0:
                            created.append(name)
                        elif code != TopicAlreadyExistsError.errno:
                            raise BackendUnavailable(
                                route, BACKEND, f"topic {name!r} not created: {message} ({code})"
                            )
                return created
            finally:
                await admin.close()


async def stop_quietly(client: Any) -> None:
    """Stop an aiokafka client whatever state it is in. Stopping one whose broker went
    away can raise ``CancelledError`` from its own background tasks: that is not this
    task being cancelled, and must not end it (a worker would stop serving); a real
    cancellation of this task still propagates."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("stopping %s raised CancelledError from its own tasks", type(client).__name__)
    except Exception as exc:
        log.debug("stopping %s: %s", type(client).__name__, exc)


@contextlib.asynccontextmanager
async def unavailable(route: str, doing: str) -> AsyncIterator[None]:
    """SDK and connection errors as :class:`BackendUnavailable` for ``route``."""
    try:
        yield
    except KafkaError as exc:
        raise BackendUnavailable(route, BACKEND, f"{doing}: {type(exc).__name__}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(route, BACKEND, f"{doing}: {exc!r}") from exc


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, route: str) -> list[TopicPartition]:
    """The topic's partitions, from fresh metadata; a missing topic is an error."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise BackendUnavailable(
            route, BACKEND, f"topic {topic!r} does not exist: run `engines routes provision`"
        )
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def true_ends(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timeout: float
) -> dict[TopicPartition, int]:
    """Each partition's end offset (the offset its next record will take), read from a
    fetch's high watermark (see the module's docstring). ``consumer`` must have no group
    (it is assigned the partitions here)."""
    ends: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    probe = [tp for tp in partitions if ends[tp] > 0]
    if not probe:
        return ends
    consumer.assign(probe)
    for tp in probe:
        consumer.seek(tp, ends[tp] - 1)
    out = dict(ends)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = set(probe)
    while waiting and loop.time() < deadline:
        await consumer.getmany(*waiting, timeout_ms=100, max_records=1)
        for tp in list(waiting):
            hw = consumer.highwater(tp)
            if hw is not None:
                out[tp] = max(out[tp], hw)
                waiting.discard(tp)
    if waiting:
        log.warning("no high watermark within %.1fs for %s", timeout, sorted(waiting))
    return out
