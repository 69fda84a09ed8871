"""The command bus's wire format (routing/backends/kafka/bus.py) and its type names."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from commands.notes import CreateNote, DeleteNote
from engines.cli import main
from engines.client import message_for, wire_name, wire_names
from routing.backends.kafka.bus import (
    Accepted,
    CommandMessage,
    Refused,
    decode_answer,
    encode_answer,
)


def test_a_message_round_trips_through_json_without_its_empty_fields() -> None:
    message = message_for(
        DeleteNote(note_id="n1"), token="a.b.c", command_id="c-1", surface_id="s1"
    )
    data = orjson.loads(message.encode())
    assert data == {
        "command_id": "c-1",
        "type": "notes.DeleteNote",
        "token": "a.b.c",
        "payload": {"note_id": "n1"},
        "surface_id": "s1",
        "provenance": {},
    }
    assert CommandMessage.model_validate(data) == message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("command_id", ""),
        ("command_id", "has space"),
        ("command_id", "x" * 129),
        ("type", "CreateNote"),
        ("token", ""),
        ("expected_version", -1),
        ("surface_id", "no/slash"),
        ("unknown", 1),
    ],
)
def test_a_malformed_message_is_refused_naming_its_field(field: str, value: object) -> None:
    data = {"command_id": "c-1", "type": "notes.DeleteNote", "token": "t", "payload": {}}
    with pytest.raises(ValidationError) as caught:
        CommandMessage.model_validate({**data, field: value})
    assert caught.value.errors()[0]["loc"][0] == field


def test_a_message_needs_a_command_id() -> None:
    with pytest.raises(ValidationError):
        CommandMessage.model_validate({"type": "notes.DeleteNote", "token": "t", "payload": {}})


def test_answers_round_trip_by_their_status() -> None:
    accepted = Accepted(
        command_id="c", stream_id="notes/t/lab/n", version=3, first_seq=3, last_seq=3
    )
    refused = Refused(command_id="c", code="Unauthenticated", http_status=401, message="no")
    assert decode_answer(encode_answer(accepted)) == accepted
    assert decode_answer(encode_answer(refused)) == refused
    with pytest.raises(ValidationError):
        decode_answer(b'{"status": "maybe", "command_id": "c"}')


def test_every_domain_command_has_one_wire_name() -> None:
    names = wire_names()
    assert names["notes.CreateNote"] is CreateNote
    assert wire_name(CreateNote) == "notes.CreateNote"
    assert len(set(names.values())) == len(names)


def test_engines_worker_without_a_kafka_bus_exits_2_saying_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker"]) == 2
    assert "command_bus on 'inprocess'" in capsys.readouterr().err
