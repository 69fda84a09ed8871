"""Strategy locks: the seed's strategy toggles and flags, kept as snapshots. One stream
per strategy of a project, ``strategy_lock/{tenant}/{mode}/{project}/{strategy}``, a
versioned entity (:mod:`commands.entities`) shared by everyone granted the project.

Each snapshot states every toggle and flag of the strategy (a full snapshot, never a
patch) and is recorded whether or not it changes anything: taking one is an act worth
keeping. Nothing is ever deleted: the history is append-only, and every event is in the
``strategy_lock`` family. Only an ``admin`` may take one (checked at the edge).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from commands.entities import PutEntity
from commands.sizes import fits
from commands.text import VisibleLine, free_of_controls
from spine.entities import EntityKind

#: The most toggles, and the most flags, one snapshot may hold.
MAX_ENTRIES: Final = 256
#: The largest snapshot, encoded (toggles, flags and note together).
MAX_SNAPSHOT_BYTES: Final = 64 * 1024
MAX_NOTE_CHARS: Final = 2000
NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A toggle's or a flag's name: an identifier (a letter, then letters, digits, ``_``,
``.`` or ``-``; at most 64 characters)."""


def _flag_value(value: object) -> object:
    if isinstance(value, str):
        return free_of_controls(value)
    if isinstance(value, bool | int | float | dict):
        return value
    raise ValueError(
        "a flag is a string, a number, a boolean or a JSON object (not null or an array)"
    )


_FLAG_TYPES = bool | int | float | str | dict[str, Any]
FlagValue = Annotated[_FLAG_TYPES, PlainValidator(_flag_value, json_schema_input_type=_FLAG_TYPES)]
"""A flag's value: a JSON scalar (not ``null``) or a JSON object (whose members are any
JSON)."""


class StrategyLockBody(BaseModel):
    """A full snapshot of a strategy's toggles and flags."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    toggles: dict[Name, StrictBool] = Field(
        max_length=MAX_ENTRIES,
        description=f"every toggle by name, on (true) or off (false); at most {MAX_ENTRIES}",
    )
    flags: dict[Name, FlagValue] = Field(
        max_length=MAX_ENTRIES,
        description=(
            f"every flag by name: a string, number, boolean or JSON object; at most {MAX_ENTRIES}"
        ),
    )
    note: Annotated[str, VisibleLine] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NOTE_CHARS,
        description="why this snapshot was taken",
    )

    @field_validator("note", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("omit note rather than send null")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Self:
        fits(self.model_dump(mode="json", exclude_unset=True), MAX_SNAPSHOT_BYTES, "the snapshot")
        return self


STRATEGY_LOCKS = EntityKind(
    domain="strategy_lock",
    entity="strategy lock",
    path=("project_id", "strategy_id"),
    # the first snapshot and every later one are the same act
    created="strategy_lock.snapshot_taken",
    updated="strategy_lock.snapshot_taken",
    deleted=None,
    access="project",
    family="strategy_lock",
    skip_unchanged=False,
)


class TakeStrategySnapshot(PutEntity):
    """Append a snapshot to a strategy's lock (creating it with the first)."""
