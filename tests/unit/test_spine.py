"""Pure spine logic: stream ids, ids, sealing and the hash chain, append rules, upcasters."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from spine.appending import check_expected_version
from spine.codec import (
    ADDED_LATER,
    StoredFormError,
    decode,
    encode,
    load,
    load_many,
    seal,
    timestamp_text,
    verify_chain,
)
from spine.errors import ConcurrencyError, IntegrityError, InvalidStreamId, UpcastError
from spine.events import ANY, GENESIS_HASH, NO_STREAM, EventEnvelope, uuid7
from spine.streams import parse_stream_id, stream_id
from spine.upcasting import Upcasters
from tests.conftest import make_event


def test_stream_ids_embed_domain_tenant_and_mode() -> None:
    sid = stream_id("notes", "acme", "lab", "n1")
    assert sid == "notes/acme/lab/n1"
    assert parse_stream_id(sid) == ("notes", "acme", "lab", ("n1",))


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("Notes", "t", "lab", "x"), "domain"),
        (("notes", "a/b", "lab", "x"), "tenant_id"),
        (("notes", "", "lab", "x"), "tenant_id"),
        (("notes", "t", "prod", "x"), "mode"),
        (("notes", "t", "lab"), "at least one part"),
        (("notes", "t", "lab", ".."), "part"),
        (("notes", "t", "lab", "a b"), "part"),
        (("notes", "t", "lab", "x" * 129), "part"),
        (("notes", "t", "lab", "ok", "x/y"), "part"),
        (("notes", "t\n", "lab", "x"), "tenant_id"),  # `$` alone would let a newline end it
        (("notes", "t", "lab", "x\n"), "part"),
        (("notes\n", "t", "lab", "x"), "domain"),
    ],
)
def test_stream_ids_refuse_segments_that_could_break_their_shape(
    args: tuple[str, ...], why: str
) -> None:
    with pytest.raises(InvalidStreamId, match=why):
        stream_id(*args)


def test_a_stream_id_ending_in_a_newline_does_not_parse() -> None:
    with pytest.raises(InvalidStreamId):
        parse_stream_id("notes/t1/lab/x\n")


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(200)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    millis = [i.int >> 80 for i in ids]
    assert millis == sorted(millis)


def test_envelopes_are_frozen_and_refuse_unknown_fields() -> None:
    event = make_event()
    with pytest.raises(ValidationError):
        event.payload = {}  # type: ignore[misc]
    with pytest.raises(ValidationError):
        make_event(surprise=1)
    with pytest.raises(ValidationError):
        make_event("NotAType")
    with pytest.raises(ValidationError):
        make_event(tenant_id="a/b")


def _chain(n: int) -> list[EventEnvelope]:
    prev, out = GENESIS_HASH, []
    for seq in range(1, n + 1):
        env, body = seal(
            make_event(payload={"i": seq, "f": 0.1 * seq}),
            stream_id="notes/t1/lab/x",
            seq=seq,
            prev_hash=prev,
            recorded_at=datetime.now(UTC),
        )
        assert load("notes/t1/lab/x", seq, body) == env
        assert decode(body, stream_id="notes/t1/lab/x", seq=seq) == env
        prev = env.hash
        out.append(env)
    return out


def _rows(events: list[EventEnvelope]) -> list[tuple[str, int, bytes]]:
    return [(e.stream_id, e.seq, encode(e)) for e in events]


def test_sealed_events_round_trip_through_their_stored_form() -> None:
    events = _chain(3)
    assert load_many(_rows(events)) == events
    assert verify_chain(load_many(_rows(events))) == 3


def test_the_stored_form_leaves_out_keys_constants_and_absent_fields() -> None:
    (event,) = _chain(1)
    stored = orjson.loads(encode(event))
    assert "stream_id" not in stored
    assert "seq" not in stored
    assert "route" not in stored
    assert None not in stored.values()
    assert stored["hash"] == event.hash
    assert stored["prev_hash"] == GENESIS_HASH


def test_a_body_in_the_full_canonical_form_loads_as_well() -> None:
    (event,) = _chain(1)
    full = orjson.dumps(event.model_dump(mode="json"))
    assert load(event.stream_id, event.seq, full) == event
    assert verify_chain([load(event.stream_id, event.seq, full)]) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{broken",
        b"[1, 2]",
        b'{"hash": "x"}',
        b"null",
        "{}",
    ],
)
def test_a_stored_body_that_is_not_an_envelope_does_not_load(body: bytes | str) -> None:
    with pytest.raises(StoredFormError, match="cannot be decoded"):
        load("notes/t1/lab/x", 1, body)


def test_a_stored_body_with_unknown_fields_or_a_bad_payload_does_not_load() -> None:
    (event,) = _chain(1)
    stored = orjson.loads(encode(event))
    with pytest.raises(StoredFormError, match="surprise"):
        load("notes/t1/lab/x", 1, orjson.dumps({**stored, "surprise": 1}))
    with pytest.raises(StoredFormError, match="payload is not an object"):
        load("notes/t1/lab/x", 1, orjson.dumps({**stored, "payload": [1]}))
    with pytest.raises(StoredFormError, match=r"missing \['event_type'\]"):
        load(
            "notes/t1/lab/x",
            1,
            orjson.dumps({k: v for k, v in stored.items() if k != "event_type"}),
        )
    with pytest.raises(StoredFormError, match="cannot be decoded"):
        load("notes/t1/lab/x", 1, orjson.dumps({**stored, "recorded_at": "yesterday"}))


def test_the_store_keys_a_body_is_loaded_under_are_covered_by_the_chain() -> None:
    """A body moved to another stream or seq behind the store's back no longer
    verifies: the keys come from where it is stored and the hash covers them."""
    (event,) = _chain(1)
    assert verify_chain([load("notes/t1/lab/x", 1, encode(event))]) == 1
    with pytest.raises(IntegrityError):
        verify_chain([load("notes/t1/lab/y", 1, encode(event))])


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: e.model_copy(update={"payload": {"i": 999}}),
        lambda e: e.model_copy(update={"user_id": "mallory"}),
        lambda e: e.model_copy(update={"hash": "f" * 64}),
        lambda e: e.model_copy(update={"prev_hash": "0" * 63 + "1"}),
    ],
)
def test_any_edit_of_a_stored_event_breaks_the_chain(tamper: Any) -> None:
    events = _chain(3)
    events[1] = tamper(events[1])
    with pytest.raises(IntegrityError, match="seq 2"):
        verify_chain(events)


def sealed_the_old_way(seq: int, prev_hash: str) -> bytes:
    """A stored event as the spine wrote it before ``agent_id`` joined the envelope: the
    canonical form had no ``agent_id`` key at all, and ``run_id``/``step_id`` were set."""
    fields = make_event(payload={"i": seq}).model_dump(mode="json")
    for name in ADDED_LATER:
        del fields[name]
    fields.update(
        stream_id="notes/t1/lab/old",
        seq=seq,
        route="event_spine",
        recorded_at=timestamp_text(datetime.now(UTC)),
        prev_hash=prev_hash,
    )
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()
    return canonical[:-1] + b',"hash":"' + digest.encode() + b'"}'


def test_events_sealed_before_agent_id_existed_still_verify() -> None:
    first = sealed_the_old_way(1, GENESIS_HASH)
    second = sealed_the_old_way(2, orjson.loads(first)["hash"])

    events = [decode(first), decode(second)]

    assert [e.agent_id for e in events] == [None, None]
    assert verify_chain(events) == 2
    # re-encoded, no agent_id appears
    assert ["agent_id" in orjson.loads(encode(e)) for e in events] == [False, False]
    assert verify_chain([load(e.stream_id, e.seq, encode(e)) for e in events]) == 2


def test_a_set_agent_id_is_covered_by_the_chain() -> None:
    env, body = seal(
        make_event(agent_id="summarizer"),
        stream_id="notes/t1/lab/x",
        seq=1,
        prev_hash=GENESIS_HASH,
        recorded_at=datetime.now(UTC),
    )
    assert orjson.loads(body)["agent_id"] == "summarizer"
    assert verify_chain([load("notes/t1/lab/x", 1, body)]) == 1
    with pytest.raises(IntegrityError):
        verify_chain([env.model_copy(update={"agent_id": "impostor"})])
    with pytest.raises(IntegrityError):
        verify_chain([env.model_copy(update={"agent_id": None})])


def test_absent_run_and_step_ids_are_stored_and_verified_as_absent() -> None:
    _, body = seal(
        make_event(run_id=None, step_id=None),
        stream_id="notes/t1/lab/x",
        seq=1,
        prev_hash=GENESIS_HASH,
        recorded_at=datetime.now(UTC),
    )
    stored = load("notes/t1/lab/x", 1, body)
    assert (stored.run_id, stored.step_id, "agent_id" in orjson.loads(body)) == (None, None, False)
    assert verify_chain([stored]) == 1


def test_a_missing_event_breaks_the_chain() -> None:
    events = _chain(3)
    with pytest.raises(IntegrityError):
        verify_chain([events[0], events[2]])


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (ANY, 0, True),
        (ANY, 7, True),
        (NO_STREAM, 0, True),
        (NO_STREAM, 1, False),
        (0, 0, True),
        (3, 3, True),
        (3, 4, False),
        (4, 3, False),
    ],
)
def test_expected_version_rules(expected: Any, actual: int, ok: bool) -> None:
    if ok:
        check_expected_version("s", expected, actual)
    else:
        with pytest.raises(ConcurrencyError):
            check_expected_version("s", expected, actual)


def test_upcasters_chain_one_version_at_a_time() -> None:
    upcasters = Upcasters()

    @upcasters.register("note.created", 1)
    def v1_to_v2(p: dict[str, Any]) -> dict[str, Any]:
        return {**p, "tags": []}

    @upcasters.register("note.created", 2)
    def v2_to_v3(p: dict[str, Any]) -> dict[str, Any]:
        p["title"] = p.pop("name")
        return p

    (old,) = _chain(1)
    old = old.model_copy(update={"payload": {"name": "x"}})
    new = upcasters.upcast(old)
    assert (new.schema_version, new.payload) == (3, {"title": "x", "tags": []})
    assert old.payload == {"name": "x"}  # the stored event is untouched
    current = new.model_copy(update={"event_type": "note.updated"})
    assert upcasters.upcast(current) is current


def test_a_failing_upcaster_names_the_event() -> None:
    upcasters = Upcasters()
    upcasters.register("note.created", 1)(lambda p: p["missing"])
    with pytest.raises(UpcastError, match=r"note\.created v1 of notes/t1/lab/x seq 1"):
        upcasters.upcast(_chain(1)[0])
    with pytest.raises(ValueError, match="exists"):
        upcasters.register("note.created", 1)(lambda p: p)
