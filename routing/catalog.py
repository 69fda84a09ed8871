"""The backends routing knows: which kinds each can serve, whether it is lab-only, and
where its code lives. Modules are imported lazily, so an unused SDK is never imported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from routing.kinds import VIEW_KINDS


@dataclass(frozen=True)
class BackendSpec:
    name: str
    kinds: frozenset[str]
    lab_only: bool
    module: str | None
    """Import path of the implementation; ``None`` while it is not built yet."""
    derived: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per kind, the suffixes of the other physical names a route of it uses beside
    its own (the command bus's answers topic), which no other route may take."""


_STORE_KINDS: Final = VIEW_KINDS | {"event_spine", "projection_checkpoints"}

#: The suffix of the Kafka command bus's answers topic (``<topic>.results``).
KAFKA_RESULTS_SUFFIX: Final = ".results"

BACKENDS: Final[dict[str, BackendSpec]] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "sqlite",
            _STORE_KINDS | {"spine_feed"},
            lab_only=True,
            module="routing.backends.sqlite",
        ),
        BackendSpec(
            "inprocess",
            frozenset({"command_bus"}),
            lab_only=False,
            module="routing.backends.inprocess",
        ),
        BackendSpec(
            "direct",
            frozenset({"spine_feed"}),
            lab_only=False,
            module="routing.backends.direct",
        ),
        BackendSpec(
            "kafka",
            frozenset({"command_bus", "spine_feed"}),
            lab_only=False,
            module="routing.backends.kafka",
            derived={"command_bus": (KAFKA_RESULTS_SUFFIX,)},
        ),
        BackendSpec("cosmos", _STORE_KINDS, lab_only=False, module="routing.backends.cosmos"),
        BackendSpec("firestore", _STORE_KINDS, lab_only=False, module="routing.backends.firestore"),
        BackendSpec("dynamodb", _STORE_KINDS, lab_only=False, module="routing.backends.dynamodb"),
    )
}
