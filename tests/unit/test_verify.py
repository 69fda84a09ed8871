"""The verifier's rules (:mod:`spine.verify`), each on a chain sealed here: no store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from spine.codec import encode, load, seal_after
from spine.events import GENESIS_HASH, EventEnvelope
from spine.feed import Unreadable
from spine.verify import ChainVerifier, Head, verify_events
from tests.conftest import make_event

SID = "notes/t1/lab/x"


def chain(
    n: int, sid: str = SID, event_type: str = "note.created", **fields: Any
) -> list[EventEnvelope]:
    """``n`` events sealed as ``sid``'s seqs 1..n."""
    name = sid.split("/")
    sealed = seal_after(
        [
            make_event(event_type, tenant_id=name[1], mode=name[2], payload={"i": i}, **fields)
            for i in range(n)
        ],
        stream_id=sid,
        head=0,
        prev_hash=GENESIS_HASH,
        recorded_at=datetime.now(UTC),
    )
    return [e for e, _ in sealed]


def first_bad(events: list[EventEnvelope | Unreadable], sid: str = SID) -> tuple[int, str] | None:
    _, found = verify_events(sid, events)
    return None if found is None else (found.seq, found.problem)


def test_a_stream_sealed_by_the_store_verifies() -> None:
    assert verify_events(SID, chain(4)) == (4, None)


def test_a_stream_must_begin_at_seq_1_from_the_genesis() -> None:
    events = chain(3)
    assert first_bad(events[1:]) == (1, "seq 1 is missing (the next stored is seq 2)")


@pytest.mark.parametrize("removed", [1, 2])  # the middle of 4, and one later
def test_a_missing_seq_is_the_first_bad_event(removed: int) -> None:
    events = chain(4)
    del events[removed]
    assert first_bad(events) == (
        removed + 1,
        f"seq {removed + 1} is missing (the next stored is seq {removed + 2})",
    )


def test_a_changed_payload_does_not_hash() -> None:
    events = chain(3)
    events[1] = events[1].model_copy(update={"payload": {"i": 99}})
    assert first_bad(events) == (2, "hash does not match the event's content")


def test_a_reordered_pair_is_caught_at_the_first_of_them() -> None:
    """Bodies swapped behind the store's back: each is loaded under the other's seq."""
    events = chain(4)
    swapped = [
        events[0],
        load(SID, 2, encode(events[2])),
        load(SID, 3, encode(events[1])),
        events[3],
    ]
    assert first_bad(swapped) == (2, "prev_hash is not seq 1's hash")


def test_a_body_under_another_streams_key_does_not_verify() -> None:
    other = "notes/t1/lab/y"
    moved = [load(other, e.seq, encode(e)) for e in chain(2)]
    assert first_bad(moved, other) == (1, "hash does not match the event's content")


def test_a_relabelled_stream_names_its_tenant() -> None:
    """Rows moved under another tenant's stream id: the bodies still say tenant t1."""
    other = "notes/t2/lab/x"
    moved = [load(other, e.seq, encode(e)) for e in chain(2)]
    assert first_bad(moved, other) == (1, "tenant_id 't1' is not the stream's tenant 't2'")


def test_a_stream_of_another_mode_is_caught() -> None:
    other = "notes/t1/saas/x"
    moved = [load(other, e.seq, encode(e)) for e in chain(1)]
    assert first_bad(moved, other) == (1, "mode 'lab' is not the stream's mode 'saas'")


@pytest.mark.parametrize(
    ("sid", "event_type", "family", "problem"),
    [
        (
            "notes/t1/lab/x",
            "budget.debited",
            "budget",
            "an event of family 'budget' in a stream of domain 'notes'",
        ),
        (
            "budget/t1/lab/b",
            "note.created",
            "domain",
            "an event of family 'domain' in the stream of family 'budget'",
        ),
        (
            "rl/t1/lab/run",
            "rlha.feedback",
            "rl",
            "event_type 'rlha.feedback' does not name its family 'rl' first",
        ),
    ],
)
def test_an_event_family_must_agree_with_its_stream_domain(
    sid: str, event_type: str, family: str, problem: str
) -> None:
    events = chain(1, sid, event_type, family=family)
    assert first_bad(list(events), sid) == (1, problem)


def test_family_streams_of_their_own_family_verify() -> None:
    assert (
        verify_events(
            "budget/t1/lab/b", chain(2, "budget/t1/lab/b", "budget.debited", family="budget")
        )[1]
        is None
    )


def test_an_unreadable_body_is_a_bad_event() -> None:
    events: list[EventEnvelope | Unreadable] = [*chain(2)]
    events.append(Unreadable(SID, 3, "stored event cannot be decoded"))
    assert first_bad(events) == (3, "unreadable: stored event cannot be decoded")


def test_interleaved_streams_are_followed_apart_and_each_reports_its_first_break() -> None:
    a, b, c = chain(3, "notes/t1/lab/a"), chain(3, "notes/t1/lab/b"), chain(2, "notes/t1/lab/c")
    b[1] = b[1].model_copy(update={"payload": {"i": -1}})
    verifier = ChainVerifier()
    for trio in zip(a, b, [*c, None], strict=True):
        for event in trio:
            if event is not None:
                verifier.add(event)
    assert verifier.events == 8
    assert verifier.streams == 3
    assert [str(x) for x in verifier.broken.values()] == [
        "notes/t1/lab/b seq 2: hash does not match the event's content"
    ]
    assert set(verifier.heads) == {"notes/t1/lab/a", "notes/t1/lab/c"}
    assert verifier.broken["notes/t1/lab/b"].event_id == b[1].event_id


def test_an_anchored_hash_that_differs_is_rewritten_history() -> None:
    """A chain recomputed by whoever rewrote it verifies on its own; its anchor does not."""
    original, rewritten = chain(3), chain(3)
    count, found = verify_events(SID, rewritten, anchored=Head(2, original[1].hash))
    assert (count, found is not None and found.seq) == (2, 2)
    assert found is not None
    assert found.problem.startswith("rewritten history")


def test_a_stream_short_of_its_anchor_has_lost_its_tail() -> None:
    events = chain(4)
    _, found = verify_events(SID, events[:2], anchored=Head(4, events[3].hash))
    assert found is not None
    assert (found.seq, found.problem) == (
        3,
        "removed tail: the stream ends at seq 2, anchored at seq 4",
    )


def test_an_anchored_stream_with_no_event_was_removed() -> None:
    events = chain(1)
    _, found = verify_events(SID, [], anchored=Head(1, events[0].hash))
    assert found is not None
    assert (found.seq, found.problem) == (1, "removed stream: anchored at seq 1, no event stored")


def test_a_stream_past_its_anchor_verifies() -> None:
    events = chain(3)
    assert verify_events(SID, events, anchored=Head(2, events[1].hash)) == (3, None)


def test_short_of_anchors_names_only_streams_below_their_anchor() -> None:
    a, b = chain(2, "notes/t1/lab/a"), chain(2, "notes/t1/lab/b")
    anchored = {
        "notes/t1/lab/a": Head(2, a[1].hash),
        "notes/t1/lab/b": Head(2, b[1].hash),
        "notes/t1/lab/gone": Head(1, "0" * 64),
    }
    verifier = ChainVerifier(anchored)
    for event in [*a, b[0]]:
        verifier.add(event)
    assert verifier.short_of_anchors() == ["notes/t1/lab/b", "notes/t1/lab/gone"]
