"""The command bus on Kafka: commands on the route's topic, answers on ``<topic>.results``.

* :class:`KafkaCommandBus` is what ``Registry.command_bus()`` returns for a kafka route:
  it dispatches in process like :class:`~commands.bus.InProcessCommandBus` (the HTTP API
  and the CLI verified their caller themselves), and names the topics other services
  send commands on.
* :class:`CommandMessage` and :data:`Answer` are the wire format (JSON, orjson); a
  command's record is keyed by its ``command_id``, and so is its answer.
* :func:`serve_commands` is the consuming loop of ``engines worker``: a consumer group,
  each command answered (by a function the caller gives: token checks and the domain's
  handler live above routing), the answer published, and only then the offset committed
  (at least once; a repeated command is answered from the spine, so its events exist
  once).
* :class:`CommandClient` is the producer's side: ``send`` and ``send_and_wait``.

Nothing here relies on idempotent producers or transactions: a command delivered twice
is the spine's to settle (its command id), and an answer published twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Annotated, Any, Final, Literal, Self

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from commands.bus import InProcessCommandBus
from routing.backends.kafka.client import (
    KafkaClients,
    partitions_of,
    stop_quietly,
    true_ends,
    unavailable,
)
from routing.catalog import KAFKA_RESULTS_SUFFIX
from spine.errors import BackendUnavailable, EnginesError
from spine.events import Identifier, Provenance

log = logging.getLogger(__name__)

ROUTE: Final = "command_bus"
RESULTS_SUFFIX: Final = KAFKA_RESULTS_SUFFIX
#: The largest token a message may carry (a JWT with many grants stays well under).
MAX_TOKEN_CHARS: Final = 16 * 1024

CommandId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]
"""Visible ASCII, 1 to 128 characters (as an HTTP ``Idempotency-Key``)."""
WireName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}\.[A-Za-z0-9]{1,64}$")]
"""``<domain>.<PayloadClass>``, e.g. ``notes.CreateNote``."""


def results_topic(topic: str) -> str:
    return topic + RESULTS_SUFFIX


class CommandMessage(BaseModel):
    """A command as another service sends it. ``token`` is the caller's JWT (as HTTP's
    bearer token); ``tenant_id``, ``mode`` and ``user_id`` are what the sender states of
    the caller (as HTTP's ``X-Tenant-Id`` headers): optional, and refused where they
    disagree with the token. ``command_id`` is the idempotency key: the same id sent
    again is answered with the original result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: CommandId
    type: WireName
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, repr=False)
    payload: dict[str, Any]
    expected_version: int | None = Field(default=None, ge=0)
    surface_id: Identifier | None = None
    project_id: Identifier | None = None
    tenant_id: str | None = Field(default=None, max_length=256)
    mode: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=256)
    provenance: Provenance = Provenance()

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


class Accepted(BaseModel):
    """The command's events are on the spine (or it changed nothing: no seqs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["accepted"] = "accepted"
    command_id: str
    stream_id: str
    version: int
    first_seq: int | None = None
    last_seq: int | None = None
    deduplicated: bool = False


class Refused(BaseModel):
    """The command was not carried out. ``code`` names the reason (the error's class),
    ``http_status`` is what the HTTP API answers for it. Nothing was written, but where
    the HTTP API records the refusal too (a debit over its budget's limit: 402, with its
    ``budget.debit_refused`` event)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["refused"] = "refused"
    command_id: str
    code: str
    http_status: int
    message: str


Answer = Annotated[Accepted | Refused, Field(discriminator="status")]
_ANSWER: TypeAdapter[Accepted | Refused] = TypeAdapter(Answer)


def encode_answer(answer: Accepted | Refused) -> bytes:
    return orjson.dumps(answer.model_dump(mode="json"))


def decode_answer(value: bytes) -> Accepted | Refused:
    return _ANSWER.validate_json(value)


class CommandTimeout(EnginesError):
    """No answer came within the wait. The command may still be carried out: send it
    again with the same ``command_id`` to learn its result (never a second set of
    events)."""

    def __init__(self, command_id: str, timeout: float) -> None:
        self.command_id = command_id
        super().__init__(f"no answer to command {command_id!r} within {timeout:g} s")


class KafkaCommandBus(InProcessCommandBus):
    """Dispatches in process (the HTTP API, the CLI) and names the topics on which other
    services send commands to ``engines worker``."""

    def __init__(self, clients: KafkaClients, topic: str) -> None:
        super().__init__()
        self.clients = clients
        self.topic = topic

    @property
    def results_topic(self) -> str:
        return results_topic(self.topic)

    @property
    def group_id(self) -> str:
        return f"{self.clients.conn.group_prefix}{self.topic}.worker"


Answerer = Callable[[bytes | None, bytes | None], Awaitable[Accepted | Refused | None]]
"""Answers one record (key, value); ``None``: nothing to answer (logged and skipped)."""


async def serve_commands(
    bus: KafkaCommandBus, answer: Answerer, stop: asyncio.Event, *, max_backoff: float = 5.0
) -> None:
    """Consume ``bus``'s topic as its consumer group until ``stop`` is set: each record
    answered by ``answer`` on the results topic (keyed by command id), and a partition's
    offset committed only after the answers of what it covers are published. A
    partition's records are answered in order, the partitions of a batch side by side.
    A broker that does not answer is waited for (logged, retried with backoff, with new
    clients): what was not committed is delivered again, and the spine answers a
    repeated command with its original result."""
    backoff = 0.1
    while not stop.is_set():
        try:
            await _serve_once(bus, answer, stop)
        except BackendUnavailable as exc:
            log.warning("command bus: %s; retrying in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, max_backoff)


async def _serve_once(bus: KafkaCommandBus, answer: Answerer, stop: asyncio.Event) -> None:
    consumer = bus.clients.consumer(bus.topic, group_id=bus.group_id)
    producer = bus.clients.producer()

    async def partition(tp: TopicPartition, records: list[Any]) -> None:
        sent = []
        for record in records:
            reply = await answer(record.key, record.value)
            if reply is not None:  # published while the next is answered; awaited below
                async with unavailable(ROUTE, "publish an answer"):
                    sent.append(
                        await producer.send(
                            bus.results_topic,
                            key=reply.command_id.encode(),
                            value=encode_answer(reply),
                        )
                    )
        async with unavailable(ROUTE, "publish an answer"):
            await asyncio.gather(*sent)
        await _commit(consumer, tp, records[-1].offset + 1)

    try:
        async with unavailable(ROUTE, "connect"):
            await producer.start()
            await consumer.start()
        while not stop.is_set():
            async with unavailable(ROUTE, "consume"):
                batch = await consumer.getmany(timeout_ms=200, max_records=100)
            # every partition finished (or failed) before the next fetch or a retry
            results = await asyncio.gather(
                *(partition(tp, records) for tp, records in batch.items()),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
    finally:
        for client in (consumer, producer):
            await stop_quietly(client)


async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        await consumer.commit({tp: offset})
    except KafkaError as exc:  # the partition moved to another member: it answers again
        log.warning(
            "offset %d of %s not committed (%s); its commands are answered again", offset, tp, exc
        )


class CommandClient:
    """Sends commands to the bus's topic; ``send_and_wait`` also waits for the answer on
    the results topic (read from its end at :meth:`start`, every partition, no group).
    Use as an async context manager."""

    def __init__(self, clients: KafkaClients, topic: str, *, create: bool = False) -> None:
        self.clients = clients
        self.topic = topic
        self.create = create
        self._producer: AIOKafkaProducer | None = None
        self._results: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[Accepted | Refused]] = {}

    async def start(self) -> None:
        if self.create:
            await self.clients.ensure_topics([self.topic, results_topic(self.topic)], ROUTE)
        producer = self.clients.producer()
        results = self.clients.consumer()
        self._producer, self._results = producer, results
        async with unavailable(ROUTE, "connect"):
            await producer.start()
            await results.start()
            parts = await partitions_of(results, results_topic(self.topic), ROUTE)
            ends = await true_ends(results, parts, self.clients.conn.timeout_seconds)
            results.assign(parts)
            for tp in parts:
                results.seek(tp, ends[tp])
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._results is not None
        while True:
            try:
                batch = await self._results.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("reading answers failed (%s); retrying", exc)
                await asyncio.sleep(0.2)
                continue
            for records in batch.values():
                for record in records:
                    key = (record.key or b"").decode("utf-8", "replace")
                    future = self._waiting.get(key)
                    if future is None or future.done():
                        continue
                    try:
                        future.set_result(decode_answer(record.value or b""))
                    except ValueError as exc:
                        log.warning("answer to %r is not readable: %s", key, exc)

    async def send(self, message: CommandMessage) -> None:
        """Publish ``message`` (acknowledged by every in-sync replica)."""
        if self._producer is None:
            raise RuntimeError("CommandClient.start() first")
        async with unavailable(ROUTE, "send a command"):
            await self._producer.send_and_wait(
                self.topic, key=message.command_id.encode(), value=message.encode()
            )

    async def send_and_wait(self, message: CommandMessage, timeout: float) -> Accepted | Refused:
        """Send ``message`` and return its answer: :class:`Accepted` with the version, or
        :class:`Refused`; :class:`CommandTimeout` if none comes within ``timeout`` s."""
        future = self._waiting.get(message.command_id)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            self._waiting[message.command_id] = future
        try:
            await self.send(message)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise CommandTimeout(message.command_id, timeout) from None
        finally:
            if self._waiting.get(message.command_id) is future:
                del self._waiting[message.command_id]

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for client in (self._results, self._producer):
            if client is not None:
                await stop_quietly(client)
        self._results = self._producer = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
