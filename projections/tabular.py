"""The views of flows, graphs and overlays: each document's latest version and its
history, in ``flow_store``, ``graph_store`` and ``overlay_store``."""

from __future__ import annotations

from commands.tabular import FLOWS, GRAPHS, OVERLAYS
from projections.entities import EntityProjector

FLOWS_VIEW = EntityProjector(FLOWS, name="flows", resource_kind="flow_store")
GRAPHS_VIEW = EntityProjector(GRAPHS, name="graphs", resource_kind="graph_store")
OVERLAYS_VIEW = EntityProjector(OVERLAYS, name="overlays", resource_kind="overlay_store")
