"""Parked events (DESIGN §4): an event a projector cannot apply after a few tries is
recorded here with its error, and its stream is held back (no later seq of it is
applied over the missing one) until an operator retries or skips it. Every other
stream goes on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

MAX_ERROR_CHARS = 2000


class Parked(BaseModel):
    """One held-back stream of one projector, and the event that could not be applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    projector: str
    stream_id: str
    seq: int = Field(ge=1)
    """The first seq not applied: the failing event's."""
    event_id: str | None = None
    event_type: str | None = None
    error: str = Field(max_length=MAX_ERROR_CHARS)
    attempts: int = Field(ge=1)
    parked_at: datetime


@runtime_checkable
class ParkingStore(Protocol):
    async def park(self, parked: Parked) -> None:
        """Record ``parked`` (replacing any earlier record for its projector and stream)."""
        ...

    async def parked(self, projector: str | None = None) -> list[Parked]:
        """Every parked stream (of ``projector``, if given), oldest first."""
        ...

    async def find(self, projector: str, stream_ids: Sequence[str]) -> dict[str, Parked]:
        """Which of ``stream_ids`` are parked for ``projector``."""
        ...

    async def release(self, projector: str, stream_id: str) -> bool:
        """Forget the record; True if there was one."""
        ...


def error_text(exc: BaseException) -> str:
    """What a parked record says of an exception: its type and message, bounded."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
