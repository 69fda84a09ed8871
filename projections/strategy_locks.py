"""The strategy locks view (``strategy_lock_store``): each strategy's latest snapshot,
and every snapshot in its history."""

from __future__ import annotations

from commands.strategy_locks import STRATEGY_LOCKS
from projections.entities import EntityProjector

STRATEGY_LOCKS_VIEW = EntityProjector(
    STRATEGY_LOCKS, name="strategy_locks", resource_kind="strategy_lock_store"
)
