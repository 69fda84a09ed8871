"""Resource kinds (the seed's gap matrix), which are required, and which are reserved."""

from __future__ import annotations

from typing import Final

#: Kinds whose records are read views materialized by projectors.
VIEW_KINDS: Final[frozenset[str]] = frozenset(
    {
        "notes_store",
        "flow_store",
        "graph_store",
        "overlay_store",
        "blackboard_store",
        "memory_store",
        "budget_store",
        "strategy_lock_store",
        "seo_config_store",
        "analytics_store",
        "audit_store",
    }
)

#: Every active kind. Each one needs a route in every mode.
ACTIVE_KINDS: Final[frozenset[str]] = VIEW_KINDS | {
    "event_spine",  # the append-only log
    "spine_feed",  # delivery from the spine to projectors
    "command_bus",  # transport for commands
    "projection_checkpoints",  # where projectors keep their positions
}

#: Known to the seed, not active: routing them is refused.
RESERVED_KINDS: Final[frozenset[str]] = frozenset(
    {
        "pii_rehydration",
        "rag_hydration",
        "tool_registry",
        "canvas_registry",
        "vector_store",
        "connector_execution",
    }
)


def required_kinds(mode: str) -> frozenset[str]:
    """The kinds that must be routed before the service may start in ``mode``."""
    del mode  # every mode needs every active kind; lab ones may use lab backends
    return ACTIVE_KINDS
