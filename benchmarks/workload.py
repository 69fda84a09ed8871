"""The notes events every benchmark appends, so each measures the same shape."""

from __future__ import annotations

from typing import Any

from spine.events import NO_STREAM, ExpectedVersion, NewEvent, new_id
from spine.streams import stream_id


def note_event(
    note_id: str,
    seq: int,
    command_id: str | None = None,
    *,
    mode: str = "lab",
    surface_id: str = "s",
    run_id: str | None = "bench",
    tag: str = "lab",
) -> NewEvent:
    """``note.created`` at seq 1, else ``note.updated``, shaped as commands.notes makes
    them (about 300 B of JSON payload)."""
    payload: dict[str, Any] = {
        "title": f"Bench note {seq:06d}",
        "content_type": "markdown",
        "content": "x" * 200,
        "tags": ["bench", tag],
    }
    if seq == 1:
        payload["source"] = {"created_by": "user", "agent_id": None, "run_id": None}
        payload["note_id"] = note_id
    return NewEvent(
        event_type="note.created" if seq == 1 else "note.updated",
        tenant_id="t1",
        mode=mode,
        user_id="u1",
        surface_id=surface_id,
        run_id=run_id,
        source="ui",
        command_id=command_id or new_id(),
        payload=payload,
    )


def new_note(mode: str = "lab") -> tuple[str, str]:
    """A fresh note id and its stream id."""
    note_id = new_id()
    return note_id, stream_id("notes", "t1", mode, note_id)


def expected(version: int) -> ExpectedVersion:
    return version or NO_STREAM
