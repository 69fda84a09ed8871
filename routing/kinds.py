"""Resource kinds (the seed's gap matrix), which are required, and which are reserved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
        "telemetry_store",  # every telemetry, audit, budget and strategy-lock event, indexed
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


#: Kinds that keep every record they are given: nothing in them ever expires.
APPEND_ONLY_KINDS: Final[frozenset[str]] = frozenset(
    {"event_spine", "budget_store", "strategy_lock_store", "audit_store", "telemetry_store"}
)

#: The route options (``routing.config.RouteOptions``) each kind honours. An option on a
#: route to any other kind is a routes-file error, never silently ignored.
KIND_OPTIONS: Final[Mapping[str, frozenset[str]]] = {
    "memory_store": frozenset({"ttl_seconds"}),  # session memory: keys may expire
    "blackboard_store": frozenset({"max_value_bytes"}),  # the per-key size limit
}


def option_problems(kind: str, options: Iterable[str]) -> list[str]:
    """Why each of ``options`` (the ones a route sets) does not apply to ``kind``."""
    problems = []
    for option in sorted(options):
        if option in KIND_OPTIONS.get(kind, frozenset()):
            continue
        if option == "ttl_seconds" and kind in APPEND_ONLY_KINDS:
            why = "this kind is append-only: its records never expire"
        else:
            honoured_by = sorted(k for k, names in KIND_OPTIONS.items() if option in names)
            why = f"only {', '.join(honoured_by) or 'no kind'} honours it"
        problems.append(f"{kind}: option {option} does not apply ({why})")
    return problems


def required_kinds(mode: str) -> frozenset[str]:
    """The kinds that must be routed before the service may start in ``mode``."""
    del mode  # every mode needs every active kind; lab ones may use lab backends
    return ACTIVE_KINDS
