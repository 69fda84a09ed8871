"""Projections: asynchronous projectors that materialize read views from the spine."""

from projections.views import (
    CheckpointStore,
    Filter,
    Grant,
    Page,
    ViewQuery,
    ViewRecord,
    ViewStore,
)

__all__ = ["CheckpointStore", "Filter", "Grant", "Page", "ViewQuery", "ViewRecord", "ViewStore"]
