"""The causal order ``engines replay`` prints, on hand-made events: parents before
children, siblings by seq then time, and hostile links (cycles, self-parents, unknown
parents, a repeated id, a chain thousands deep) shown once each, without looping."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from engines.cli.replay import causal_order
from spine.codec import GENESIS_HASH
from spine.events import EventEnvelope

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(
    event_id: str, parent: str | None = None, *, seq: int = 1, at: int = 0, stream: str = "s"
) -> EventEnvelope:
    return EventEnvelope(
        event_id=event_id,
        event_type="note.created",
        tenant_id="t1",
        mode="lab",
        run_id="r",
        step_id=event_id,
        parent_event_id=parent,
        source="agent",
        command_id=f"c-{event_id}",
        stream_id=f"notes/t1/lab/{stream}",
        seq=seq,
        recorded_at=T0 + timedelta(seconds=at),
        prev_hash=GENESIS_HASH,
        hash="x",
    )


def shape(events: list[EventEnvelope]) -> list[tuple[str, int, str | None]]:
    return [(s.event.event_id, s.depth, s.parent) for s in causal_order(events)]


def test_children_follow_their_parent_and_siblings_go_by_seq_then_time() -> None:
    events = [
        ev("c2", "root", seq=2, at=1),
        ev("c1", "root", seq=1, at=5, stream="b"),
        ev("g", "c2", seq=3, at=2),
        ev("root", seq=1, at=0),
        ev("other", seq=1, at=9, stream="c"),
    ]
    assert shape(events) == [
        ("root", 0, None),
        ("c1", 1, "root"),
        ("c2", 1, "root"),
        ("g", 2, "c2"),
        ("other", 0, None),
    ]


def test_an_unknown_parent_makes_a_root_with_a_note() -> None:
    (step,) = causal_order([ev("a", "elsewhere")])
    assert (step.depth, step.parent) == (0, None)
    assert "parent elsewhere is not in this run" in step.notes


def test_cycles_self_parents_and_repeated_ids_are_shown_once_each() -> None:
    events = [
        ev("a", "c", at=0),
        ev("b", "a", at=1),
        ev("c", "b", at=2),
        ev("self", "self", at=3),
        ev("a", None, at=4, stream="dup"),
    ]
    steps = causal_order(events)
    assert [s.event.event_id for s in steps] == ["self", "a", "b", "c", "a"]
    assert "its parent is itself" in steps[0].notes
    assert any("parent cycle" in n for n in steps[1].notes)
    assert any("a second event with id a" in n for n in steps[4].notes)


def test_a_chain_thousands_deep_is_walked_without_recursion() -> None:
    chain = [ev("e0", seq=1)] + [ev(f"e{i}", f"e{i - 1}", seq=i + 1) for i in range(1, 5000)]
    started = time.monotonic()
    steps = causal_order(chain)
    assert [s.depth for s in steps] == list(range(5000))
    assert time.monotonic() - started < 5
