"""spine.importing without a store: how an import is cut into atomic writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spine.codec import seal_after
from spine.errors import InvalidAppend
from spine.events import GENESIS_HASH, EventEnvelope
from spine.importing import command_runs, split
from tests.conftest import make_event

SID = "notes/t1/lab/n1"


def sealed(commands: list[str]) -> list[EventEnvelope]:
    events = [make_event(command_id=c) for c in commands]
    pairs = seal_after(
        events, stream_id=SID, head=0, prev_hash=GENESIS_HASH, recorded_at=datetime.now(UTC)
    )
    return [e for e, _ in pairs]


def test_command_runs_name_each_commands_seqs() -> None:
    assert command_runs(sealed(["a", "b", "b", "c"])) == [("a", 1, 1), ("b", 2, 3), ("c", 4, 4)]


def test_chunks_hold_their_markers_and_cut_between_commands_only() -> None:
    events = sealed([f"c{i // 3}" for i in range(30)])  # ten commands of three

    chunks = split(events, max_items=20, per_command=1, extra=1)

    # 3 events + 1 marker a command, 1 outbox marker: four commands (17 items) a chunk
    assert [len(c) for c in chunks] == [12, 12, 6]
    assert [e for c in chunks for e in c] == events
    starts = [c[0].seq for c in chunks[1:]]
    assert all(events[s - 2].command_id != events[s - 1].command_id for s in starts)


def test_chunks_stay_under_a_byte_budget() -> None:
    events = sealed([f"c{i}" for i in range(10)])

    chunks = split(events, max_items=100, per_command=1, extra=1, max_bytes=300, size=lambda e: 100)

    assert [len(c) for c in chunks] == [3, 3, 3, 1]


def test_a_command_no_write_can_hold_is_refused() -> None:
    with pytest.raises(InvalidAppend, match="command 'big'"):
        split(sealed(["a", *["big"] * 99]), max_items=100, per_command=1, extra=1)
