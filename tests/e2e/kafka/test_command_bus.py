"""The command bus on Kafka (issue 10, item 3): commands sent by another service reach
the spine through ``engines worker``, checked as the HTTP API checks a request, answered
on the results topic, and carried out once however often they are delivered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from commands.notes import CreateNote
from engines.auth import LAB_SECRET_FILE, mint_lab_token
from engines.client import CommandClient, message_for
from engines.runtime import Runtime
from engines.worker import CommandWorker
from routing.backends.kafka.bus import Accepted, CommandMessage, Refused
from tests.e2e.kafka.conftest import (
    ANSWER_SECONDS,
    Spawn,
    answers_to,
    running_worker,
)
from tests.e2e.support import PROJECT, SURFACE, TENANT, USER, audit_events, note_stream_id
from tests.servers.fixtures import TansuBroker

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def token_for(data_dir: Path, *, user_id: str = USER, tenant_id: str = TENANT) -> str:
    return mint_lab_token(
        data_dir,
        tenant_id=tenant_id,
        user_id=user_id,
        surfaces=[SURFACE],
        projects=[PROJECT],
        ttl_seconds=600,
    )


def create_note(
    data_dir: Path, unique: str, *, token: str | None = None, **fields: Any
) -> CommandMessage:
    """The message creating note ``n-<unique>`` as command ``c-<unique>`` (by default,
    for the default caller)."""
    return message_for(
        CreateNote(note_id=f"n-{unique}", title="from the bus"),
        token=token or token_for(data_dir),
        command_id=f"c-{unique}",
        **fields,
    )


async def stream_events(runtime: Runtime, stream_id: str) -> int:
    return len([e async for e in runtime.spine.scan() if e.stream_id == stream_id])


async def test_a_command_is_carried_out_answered_with_its_version_and_reaches_the_view(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await client.send_and_wait(create_note(tmp_path, unique), timeout=ANSWER_SECONDS)
    stream = note_stream_id(f"n-{unique}")
    assert answer == Accepted(
        command_id=f"c-{unique}", stream_id=stream, version=1, first_seq=1, last_seq=1
    )
    assert await runtime.wait_for("notes", stream, 1, 5)
    record = await runtime.view_of("notes").get(stream)
    assert record is not None
    assert record.data["title"] == "from the bus"
    assert (record.scope.user_id, record.scope.surface_id, record.scope.project_id) == (
        USER,
        SURFACE,
        PROJECT,
    )


def forged(data_dir: Path) -> str:
    """The default caller's claims, signed with a key that is not the server's."""
    claims = jwt.decode(token_for(data_dir), options={"verify_signature": False})
    return jwt.encode(claims, "x" * 48, algorithm="HS256")


def expired(data_dir: Path) -> str:
    """The default caller's claims, signed with the server's key, an hour past ``exp``."""
    claims = jwt.decode(token_for(data_dir), options={"verify_signature": False})
    secret = (data_dir / LAB_SECRET_FILE).read_text(encoding="utf-8").strip()
    return jwt.encode({**claims, "exp": int(time.time()) - 3600}, secret, algorithm="HS256")


@pytest.mark.parametrize("bad_token", [forged, expired])
async def test_a_forged_or_expired_token_is_refused_and_audited(
    runtime: Runtime,
    worker: CommandWorker,
    client: CommandClient,
    tmp_path: Path,
    unique: str,
    bad_token: Callable[[Path], str],
) -> None:
    answer = await client.send_and_wait(
        create_note(tmp_path, unique, token=bad_token(tmp_path)), timeout=ANSWER_SECONDS
    )
    assert isinstance(answer, Refused)
    assert (answer.code, answer.http_status) == ("Unauthenticated", 401)
    assert await stream_events(runtime, note_stream_id(f"n-{unique}")) == 0
    (audit,) = await audit_events(runtime)
    assert audit.event_type == "audit.access_denied"
    assert audit.payload["reason_code"] == "Unauthenticated"


async def test_a_token_whose_identity_differs_from_the_message_is_refused_and_audited(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    answer = await client.send_and_wait(
        create_note(tmp_path, unique, tenant_id="t2"), timeout=ANSWER_SECONDS
    )
    assert isinstance(answer, Refused)
    assert (answer.code, answer.http_status) == ("ScopeMismatch", 403)
    (audit,) = await audit_events(runtime)
    assert (audit.tenant_id, audit.user_id) == (TENANT, USER)
    assert audit.payload["request"]["claimed"] == {"tenant_id": ["t2"]}
    assert await stream_events(runtime, note_stream_id(f"n-{unique}")) == 0


async def test_a_command_delivered_twice_is_carried_out_once_and_answered_twice(
    runtime: Runtime,
    worker: CommandWorker,
    raw_producer: AIOKafkaProducer,
    tansu: TansuBroker,
    topic: str,
    tmp_path: Path,
    unique: str,
) -> None:
    message = create_note(tmp_path, unique)
    for _ in range(2):
        await raw_producer.send_and_wait(topic, message.encode(), key=message.command_id.encode())
    first, second = await answers_to(tansu, topic, message.command_id, 2)
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert (first.version, second.version) == (1, 1)
    assert (first.deduplicated, second.deduplicated) == (False, True)
    assert await stream_events(runtime, note_stream_id(f"n-{unique}")) == 1


async def test_another_user_resending_a_command_id_is_refused(
    runtime: Runtime, worker: CommandWorker, client: CommandClient, tmp_path: Path, unique: str
) -> None:
    mine = await client.send_and_wait(create_note(tmp_path, unique), timeout=ANSWER_SECONDS)
    assert isinstance(mine, Accepted)
    theirs = await client.send_and_wait(
        create_note(tmp_path, unique, token=token_for(tmp_path, user_id="u2")),
        timeout=ANSWER_SECONDS,
    )
    assert isinstance(theirs, Refused)
    assert (theirs.code, theirs.http_status) == ("ScopeMismatch", 403)
    assert await stream_events(runtime, note_stream_id(f"n-{unique}")) == 1
    assert [e.user_id for e in await audit_events(runtime)] == ["u2"]


async def test_malformed_messages_do_not_stop_the_worker(
    worker: CommandWorker,
    client: CommandClient,
    raw_producer: AIOKafkaProducer,
    tansu: TansuBroker,
    topic: str,
    tmp_path: Path,
    unique: str,
) -> None:
    good = create_note(tmp_path, unique)
    bad_type = good.model_dump(mode="json") | {"command_id": f"t-{unique}", "type": "notes.Nope"}
    bad_payload = good.model_dump(mode="json") | {"command_id": f"p-{unique}", "payload": {}}
    no_id = good.model_dump(mode="json", exclude={"command_id"})
    for key, value in (
        (None, b"not json"),
        (f"k-{unique}".encode(), b"\xff{"),
        (None, orjson.dumps(no_id)),
        (f"t-{unique}".encode(), orjson.dumps(bad_type)),
        (f"p-{unique}".encode(), orjson.dumps(bad_payload)),
    ):
        await raw_producer.send_and_wait(topic, value, key=key)
    answer = await client.send_and_wait(good, timeout=ANSWER_SECONDS)
    assert isinstance(answer, Accepted)
    (not_json,) = await answers_to(tansu, topic, f"k-{unique}", 1)
    (unknown,) = await answers_to(tansu, topic, f"t-{unique}", 1)
    (invalid,) = await answers_to(tansu, topic, f"p-{unique}", 1)
    assert isinstance(not_json, Refused)
    assert not_json.http_status == 400
    assert isinstance(unknown, Refused)
    assert unknown.code == "UnknownCommandType"
    assert isinstance(invalid, Refused)
    assert (invalid.code, invalid.http_status) == ("InvalidPayload", 422)  # as HTTP
    assert "payload.title" in invalid.message


KILLABLE_WORKER = """
import asyncio, sys
from pathlib import Path
from engines import worker
from engines.settings import load_settings

carry = worker.CommandWorker._carry

async def carry_then_hang(self, message):
    await carry(self, message)  # the events are on the spine; the answer never goes out
    print("carried", message.command_id, flush=True)
    await asyncio.sleep(3600)

worker.CommandWorker._carry = carry_then_hang
asyncio.run(worker.run_worker(load_settings(Path(sys.argv[1]))[0], Path(sys.argv[2])))
"""


async def test_a_command_taken_by_a_worker_killed_mid_way_is_answered_by_another_once(
    runtime: Runtime,
    client: CommandClient,
    routes_file: Path,
    tansu: TansuBroker,
    topic: str,
    tmp_path: Path,
    unique: str,
    spawn: Spawn,
) -> None:
    proc = spawn("-c", KILLABLE_WORKER, str(routes_file), str(tmp_path), stdout=subprocess.PIPE)
    message = create_note(tmp_path, unique)
    await client.send(message)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), ANSWER_SECONDS)
    assert line.split() == ["carried", message.command_id]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stream = note_stream_id(f"n-{unique}")
    assert await stream_events(runtime, stream) == 1
    async with running_worker(runtime):
        (answer,) = await answers_to(tansu, topic, message.command_id, 1)
    assert isinstance(answer, Accepted)
    assert (answer.version, answer.deduplicated) == (1, True)
    assert await stream_events(runtime, stream) == 1


async def test_engines_worker_answers_and_stops_on_sigterm(
    runtime: Runtime,
    client: CommandClient,
    routes_file: Path,
    tmp_path: Path,
    unique: str,
    spawn: Spawn,
) -> None:
    proc = spawn(
        "-m",
        "engines.cli",
        "worker",
        "--routes",
        str(routes_file),
        "--data-dir",
        str(tmp_path),
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), ANSWER_SECONDS)
    while "worker consuming" not in line:
        assert line, "engines worker exited before it was ready"
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), ANSWER_SECONDS)
    answer = await client.send_and_wait(create_note(tmp_path, unique), timeout=ANSWER_SECONDS)
    assert isinstance(answer, Accepted)
    assert answer.version == 1
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0


async def test_a_message_with_a_repeated_key_is_refused_as_http_refuses_the_body(
    runtime: Runtime,
    worker: CommandWorker,
    raw_producer: AIOKafkaProducer,
    tansu: TansuBroker,
    topic: str,
    tmp_path: Path,
    unique: str,
) -> None:
    text = create_note(tmp_path, unique).encode().decode()
    twice = text.replace('"title":"from the bus"', '"title":"a","title":"b"', 1)
    assert twice != text
    await raw_producer.send_and_wait(topic, twice.encode(), key=f"c-{unique}".encode())

    (answer,) = await answers_to(tansu, topic, f"c-{unique}", 1)

    assert isinstance(answer, Refused)
    assert (answer.code, answer.http_status) == ("MalformedCommand", 400)
    assert "same key twice" in answer.message
    assert await stream_events(runtime, note_stream_id(f"n-{unique}")) == 0
