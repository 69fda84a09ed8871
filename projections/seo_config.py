"""The SEO config view (``seo_config_store``): each surface's config as it stands, and
every version of it."""

from __future__ import annotations

from commands.seo_config import SEO_CONFIG
from projections.entities import EntityProjector

SEO_CONFIG_VIEW = EntityProjector(SEO_CONFIG, name="seo_config", resource_kind="seo_config_store")
