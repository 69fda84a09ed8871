"""The view of the blackboard: each key's latest value and its version history, in
``blackboard_store``."""

from __future__ import annotations

from commands.blackboard import BLACKBOARD
from projections.entities import EntityProjector

BLACKBOARD_VIEW = EntityProjector(BLACKBOARD, name="blackboard", resource_kind="blackboard_store")
