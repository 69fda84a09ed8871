"""The blackboard: keys shared by everyone granted a project, one stream per key,
``blackboard/{tenant}/{mode}/{project_id}/{run_id}/{key}``, each a versioned entity
(:mod:`commands.entities`) with ``access="project"``.

No silent overwrite: every change names the version it replaces (``If-Match``) or
that there is none (``If-None-Match: *``), checked against the stream. A deleted key may
be created again; its versions keep counting on the same stream, so a version (an ETag)
is never handed out twice for one key.

A value is any JSON value, at most the ``blackboard_store`` route's ``max_value_bytes``
encoded (checked at the edge, which knows the route), or :data:`DEFAULT_MAX_VALUE_BYTES`
where the route sets none.
"""

from __future__ import annotations

from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.entities import DeleteEntity, PutEntity
from commands.sizes import encoded_size
from spine.entities import EntityKind
from spine.errors import ValueTooLarge

#: The per-key limit where the route sets none: an encoded value this size fits every
#: backend's item (DynamoDB's 400 KB is the smallest) with room for the envelope.
DEFAULT_MAX_VALUE_BYTES: Final = 256 * 1024

BLACKBOARD = EntityKind(
    domain="blackboard",
    entity="blackboard key",
    path=("project_id", "run_id", "key"),
    created="blackboard.key_created",
    updated="blackboard.key_updated",
    deleted="blackboard.key_deleted",
    access="project",
    recreate=True,
)


class BlackboardBody(BaseModel):
    """A key's content: any JSON value (``null`` too)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Any = Field(
        description="any JSON value, at most the route's max_value_bytes encoded "
        f"({DEFAULT_MAX_VALUE_BYTES} if the route sets none)"
    )

    @model_validator(mode="after")
    def _is_json(self) -> Self:
        encoded_size(self.value, "value")
        return self


def check_value_size(value: Any, limit: int | None) -> None:
    """Refuse (:class:`ValueTooLarge`) a value over ``limit`` bytes encoded (``None``: the
    route sets none, so :data:`DEFAULT_MAX_VALUE_BYTES`)."""
    limit = DEFAULT_MAX_VALUE_BYTES if limit is None else limit
    size = encoded_size(value, "value")
    if size > limit:
        raise ValueTooLarge(
            f"value is {size} bytes encoded; a blackboard key holds at most {limit} bytes"
        )


class PutBlackboardKey(PutEntity):
    pass


class DeleteBlackboardKey(DeleteEntity):
    pass
