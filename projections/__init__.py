"""Projections: asynchronous projectors that materialize read views from the spine."""

from projections.driver import FeedLoop, ProjectorStatus, projector_status
from projections.parking import Parked, ParkingStore
from projections.projector import Projector, next_version
from projections.runner import ProjectorRunner
from projections.views import (
    Filter,
    Grant,
    Page,
    ViewQuery,
    ViewRecord,
    ViewStore,
    ViewWrite,
)

__all__ = [
    "FeedLoop",
    "Filter",
    "Grant",
    "Page",
    "Parked",
    "ParkingStore",
    "Projector",
    "ProjectorRunner",
    "ProjectorStatus",
    "ViewQuery",
    "ViewRecord",
    "ViewStore",
    "ViewWrite",
    "next_version",
    "projector_status",
]
