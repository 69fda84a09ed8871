"""Flows, graphs and overlays: the seed's tabular documents, one stream per document,
``{flows|graphs|overlays}/{tenant}/{mode}/{id}``, each a versioned entity
(:mod:`commands.entities`) owned by the user who created it.

A document is ``{id, scope, json_blob, version, timestamps}``; an overlay also names
the app it belongs to (``app_id``, set at creation for good, filterable in lists).
"""

from __future__ import annotations

from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.entities import DeleteEntity, PutEntity
from commands.sizes import fits
from spine.entities import EntityKind
from spine.events import Identifier

#: The largest ``json_blob``, encoded: well inside every backend's item limit (DynamoDB's
#: 400 KB is the smallest) with room for the envelope.
MAX_BLOB_BYTES: Final = 256 * 1024


class DocumentBody(BaseModel):
    """A flow's or a graph's content: any JSON value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    json_blob: Any = Field(description=f"any JSON value, at most {MAX_BLOB_BYTES} bytes encoded")

    @model_validator(mode="after")
    def _fits(self) -> Self:
        fits(self.json_blob, MAX_BLOB_BYTES, "json_blob")
        return self


class OverlayBody(DocumentBody):
    """An overlay's content and the app it belongs to (set at creation for good)."""

    app_id: Identifier


def document_kind(domain: str, entity: str, *, fixed: tuple[str, ...] = ()) -> EntityKind:
    """A kind of tabular document: one stream per id, owned by its creator, with
    ``<entity>.created``, ``.updated`` and ``.deleted`` events."""
    return EntityKind(
        domain=domain,
        entity=entity,
        path=("id",),
        created=f"{entity}.created",
        updated=f"{entity}.updated",
        deleted=f"{entity}.deleted",
        fixed=fixed,
    )


FLOWS = document_kind("flows", "flow")
GRAPHS = document_kind("graphs", "graph")
OVERLAYS = document_kind("overlays", "overlay", fixed=("app_id",))


class PutFlow(PutEntity):
    pass


class DeleteFlow(DeleteEntity):
    pass


class PutGraph(PutEntity):
    pass


class DeleteGraph(DeleteEntity):
    pass


class PutOverlay(PutEntity):
    pass


class DeleteOverlay(DeleteEntity):
    pass
