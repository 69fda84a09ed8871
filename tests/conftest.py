"""Shared helpers for every test layer."""

from __future__ import annotations

from typing import Any

import pytest

from spine.events import NewEvent, new_id

# The real local servers (moto, Firestore, Cosmos DB), for any test that asks for one.
pytest_plugins = ["tests.servers.fixtures"]


def make_event(
    event_type: str = "note.created",
    *,
    tenant_id: str = "t1",
    mode: str = "lab",
    command_id: str | None = None,
    payload: dict[str, Any] | None = None,
    **fields: Any,
) -> NewEvent:
    """A valid event for tests; override any envelope field by keyword."""
    return NewEvent.model_validate(
        {
            "event_type": event_type,
            "tenant_id": tenant_id,
            "mode": mode,
            "user_id": "u1",
            "run_id": "run-1",
            "step_id": "step-1",
            "source": "ui",
            "command_id": command_id or new_id(),
            "payload": {"n": 1} if payload is None else payload,
            **fields,
        }
    )


@pytest.fixture
def unique() -> str:
    """A fresh name fragment, so tests never share streams, tables or keys."""
    return new_id().replace("-", "")[-12:]
