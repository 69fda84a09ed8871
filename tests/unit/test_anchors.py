"""Anchors as pure functions (:mod:`spine.anchors`): what they record, how they fold, and
the keyed chain of macs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spine.anchors import (
    ANCHOR_EVENT,
    MAX_HEADS,
    AnchorPayload,
    AnchorState,
    anchor_mac,
    anchor_stream_id,
    decide_anchors,
    fold_anchors,
)
from spine.codec import seal_after
from spine.events import GENESIS_HASH, EventEnvelope, NewEvent
from spine.verify import Head

KEY = b"k" * 32
ANCHORS = anchor_stream_id("t1", "lab")


def heads(n: int, seq: int = 1, prefix: str = "notes/t1/lab/s") -> dict[str, Head]:
    return {f"{prefix}{i:04d}": Head(seq, f"{seq:064x}") for i in range(n)}


def sealed(
    payloads: list[AnchorPayload], after: list[EventEnvelope] | None = None
) -> list[EventEnvelope]:
    """``payloads`` sealed as the anchor stream's next events after ``after``."""
    before = after or []
    chained = seal_after(
        [
            NewEvent(
                event_type=ANCHOR_EVENT,
                tenant_id="t1",
                mode="lab",
                source="tool",
                command_id=f"anchor:{len(before)}:{i}",
                payload=p.model_dump(mode="json", exclude_none=True),
            )
            for i, p in enumerate(payloads)
        ],
        stream_id=ANCHORS,
        head=len(before),
        prev_hash=before[-1].hash if before else GENESIS_HASH,
        recorded_at=datetime.now(UTC),
    )
    return [*before, *(e for e, _ in chained)]


def test_an_anchor_records_every_head_and_folds_back_to_them() -> None:
    now = heads(3)
    events = sealed(decide_anchors(AnchorState(ANCHORS), now, key=None, run_id="r1"))
    state = fold_anchors(ANCHORS, events, None)
    assert (state.broken, state.heads, state.version, state.anchors) == (None, now, 1, 1)
    assert state.last_at == events[0].recorded_at


def test_only_heads_that_moved_are_anchored_again() -> None:
    first = heads(3)
    events = sealed(decide_anchors(AnchorState(ANCHORS), first, key=None, run_id="r1"))
    state = fold_anchors(ANCHORS, events, None)
    later = {**first, "notes/t1/lab/s0001": Head(2, "2" * 64)}
    (payload,) = decide_anchors(state, later, key=None, run_id="r2")
    assert [h.stream_id for h in payload.heads] == ["notes/t1/lab/s0001"]
    assert (
        decide_anchors(
            fold_anchors(ANCHORS, sealed([payload], events), None), later, key=None, run_id="r3"
        )
        == []
    )


def test_many_heads_are_chunked_into_anchors_of_at_most_max_heads() -> None:
    payloads = decide_anchors(AnchorState(ANCHORS), heads(MAX_HEADS * 2 + 1), key=None, run_id="r")
    assert [len(p.heads) for p in payloads] == [MAX_HEADS, MAX_HEADS, 1]
    assert [(p.part, p.parts) for p in payloads] == [(1, 3), (2, 3), (3, 3)]


def test_long_stream_ids_are_chunked_by_bytes_too() -> None:
    parts = "/".join(c * 128 for c in "xyz")
    long = heads(400, prefix=f"notes/t1/lab/{parts}/s")
    assert len(decide_anchors(AnchorState(ANCHORS), long, key=None, run_id="r")) == 2


def test_keyed_anchors_chain_their_macs_and_fold_with_the_key() -> None:
    payloads = decide_anchors(AnchorState(ANCHORS), heads(MAX_HEADS + 1), key=KEY, run_id="r")
    first = anchor_mac(KEY, "", ANCHORS, 1, payloads[0])
    assert payloads[0].mac == first
    assert payloads[1].mac == anchor_mac(KEY, first, ANCHORS, 2, payloads[1])
    state = fold_anchors(ANCHORS, sealed(payloads), KEY)
    assert (state.broken, state.macs, state.mac) == (None, 2, payloads[1].mac)


def test_a_mac_depends_on_the_key_the_previous_mac_the_stream_and_the_seq() -> None:
    (payload,) = decide_anchors(AnchorState(ANCHORS), heads(1), key=None, run_id="r")
    base = anchor_mac(KEY, "", ANCHORS, 1, payload)
    assert (
        len(
            {
                base,
                anchor_mac(b"j" * 32, "", ANCHORS, 1, payload),
                anchor_mac(KEY, "a" * 64, ANCHORS, 1, payload),
                anchor_mac(KEY, "", anchor_stream_id("t2", "lab"), 1, payload),
                anchor_mac(KEY, "", ANCHORS, 2, payload),
            }
        )
        == 5
    )
    assert anchor_mac(KEY, "", ANCHORS, 1, payload.model_copy(update={"mac": "f" * 64})) == base


def test_anchors_rewritten_without_the_key_fold_without_it_but_not_with_it() -> None:
    """An attacker recomputes the anchors' heads and chain; the macs stay the old ones."""
    (payload,) = decide_anchors(AnchorState(ANCHORS), heads(2), key=KEY, run_id="r")
    forged_heads = tuple(h.model_copy(update={"hash": "e" * 64}) for h in payload.heads)
    forged = sealed([payload.model_copy(update={"heads": forged_heads})])
    assert fold_anchors(ANCHORS, forged, None).broken is None
    broken = fold_anchors(ANCHORS, forged, KEY).broken
    assert broken is not None
    assert (broken.stream_id, broken.seq) == (ANCHORS, 1)
    assert broken.problem == "the anchor's mac does not verify with the configured anchor key"


def test_a_key_given_with_unkeyed_anchors_fails() -> None:
    events = sealed(decide_anchors(AnchorState(ANCHORS), heads(1), key=None, run_id="r"))
    broken = fold_anchors(ANCHORS, events, KEY).broken
    assert broken is not None
    assert broken.problem == "the anchor carries no mac, and an anchor key is configured"


def test_keyed_anchors_fold_without_the_key_and_say_how_many_macs_went_unchecked() -> None:
    events = sealed(decide_anchors(AnchorState(ANCHORS), heads(1), key=KEY, run_id="r"))
    state = fold_anchors(ANCHORS, events, None)
    assert (state.broken, state.macs) == (None, 1)


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        ("notes/t2/lab/x", "anchors 'notes/t2/lab/x', not a stream of t1/lab"),
        ("anchor/t1/lab/heads", "anchors 'anchor/t1/lab/heads', not a stream of t1/lab"),
        ("not a stream", "anchors 'not a stream', not a stream id"),
    ],
)
def test_an_anchor_names_only_streams_of_its_tenant_and_mode(stream: str, problem: str) -> None:
    payload = AnchorPayload.model_validate(
        {
            "heads": [{"stream_id": stream, "seq": 1, "hash": "a" * 64}],
            "run_id": "r",
            "part": 1,
            "parts": 1,
        }
    )
    broken = fold_anchors(ANCHORS, sealed([payload]), None).broken
    assert broken is not None
    assert broken.problem == problem


def test_an_anchor_below_an_earlier_one_breaks_the_fold_there() -> None:
    events = sealed(decide_anchors(AnchorState(ANCHORS), heads(1, seq=5), key=None, run_id="r1"))
    lower = decide_anchors(
        fold_anchors(ANCHORS, events, None), heads(1, seq=3), key=None, run_id="r2"
    )
    state = fold_anchors(ANCHORS, sealed(lower, events), None)
    assert state.broken is not None
    assert state.broken.seq == 2
    assert state.heads == heads(1, seq=5)
    assert state.version == 1


def test_an_anchor_stream_whose_chain_breaks_folds_up_to_the_break() -> None:
    first = sealed(decide_anchors(AnchorState(ANCHORS), heads(1), key=None, run_id="r1"))
    events = sealed(
        decide_anchors(fold_anchors(ANCHORS, first, None), heads(1, seq=2), key=None, run_id="r2"),
        first,
    )
    events[1] = events[1].model_copy(update={"payload": {**events[1].payload, "run_id": "x"}})
    state = fold_anchors(ANCHORS, events, None)
    assert state.broken is not None
    assert (state.broken.seq, state.broken.problem) == (
        2,
        "hash does not match the event's content",
    )
    assert state.heads == heads(1)


def test_an_event_that_is_not_an_anchor_breaks_the_fold() -> None:
    events = sealed(decide_anchors(AnchorState(ANCHORS), heads(1), key=None, run_id="r"))
    odd = events[0].model_copy(update={"payload": {"heads": "all of them"}})
    broken = fold_anchors(ANCHORS, [odd], None).broken
    assert broken is not None
    assert broken.seq == 1


def test_no_domain_writes_and_no_projector_reads_the_anchor_domain() -> None:
    from engines.domains import DOMAINS
    from spine.anchors import ANCHOR_DOMAIN

    assert ANCHOR_DOMAIN not in {d.name for d in DOMAINS}
    assert not [p.name for d in DOMAINS for p in d.projectors if ANCHOR_DOMAIN in p.domains]
