"""SEO config: one per surface, ``seo_config/{tenant}/{mode}/{surface}``, a versioned
entity (:mod:`commands.entities`) shared by everyone granted the surface; only an
``admin`` may put one (checked at the edge).

Every field is optional and none has a default: a config is stored exactly as given
(the fields a put names, and no others), so a reader never sees a value nobody wrote.
A put replaces the whole config; a field it leaves out is gone from that version on.
An explicit ``null`` is refused: a field is either given or absent.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from commands.entities import PutEntity
from commands.text import NoControls, VisibleLine
from spine.entities import EntityKind

MAX_URL_CHARS: Final = 2048
MAX_KEYWORDS: Final = 64

Text = Annotated[str, StringConstraints(min_length=1), VisibleLine]
Url = Annotated[
    str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=MAX_URL_CHARS), NoControls
]
"""An absolute ``http`` or ``https`` URL, kept as written (never normalized)."""
Keyword = Annotated[str, StringConstraints(min_length=1, max_length=100), VisibleLine]
RobotsDirective = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z-]{0,31}(:[A-Za-z0-9-]{1,32})?$")
]
"""A robots meta directive: ``noindex``, ``nofollow``, ``max-snippet:50`` ..."""


def _refuse_null(value: object) -> object:
    if value is None:
        raise ValueError("omit the field rather than send null")
    return value


class OpenGraph(BaseModel):
    """The Open Graph tags of the surface's pages."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    title: Text | None = Field(default=None, max_length=200)
    description: Text | None = Field(default=None, max_length=1000)
    type: Text | None = Field(default=None, max_length=64, description="website, article, ...")
    image: Url | None = None
    site_name: Text | None = Field(default=None, max_length=200)
    locale: str | None = Field(
        default=None, pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", description="en_US, fr, ..."
    )

    _not_null = field_validator("*", mode="before")(_refuse_null)


class SeoConfigBody(BaseModel):
    """A surface's SEO config: each field optional, none defaulted."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    title: Text | None = Field(default=None, max_length=200)
    description: Text | None = Field(default=None, max_length=1000)
    keywords: list[Keyword] | None = Field(default=None, max_length=MAX_KEYWORDS)
    canonical_url: Url | None = None
    robots: list[RobotsDirective] | None = Field(
        default=None, min_length=1, max_length=16, description='e.g. ["noindex", "nofollow"]'
    )
    open_graph: OpenGraph | None = None
    twitter_card: Literal["summary", "summary_large_image", "app", "player"] | None = None

    _not_null = field_validator("*", mode="before")(_refuse_null)


SEO_CONFIG = EntityKind(
    domain="seo_config",
    entity="SEO config",
    path=("surface_id",),
    created="seo_config.created",
    updated="seo_config.updated",
    deleted=None,
    access="surface",
)


class PutSeoConfig(PutEntity):
    """Create a surface's SEO config or replace it."""
