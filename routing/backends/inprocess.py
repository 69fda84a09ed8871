"""The in-process command bus backend: commands are handled in the calling process."""

from __future__ import annotations

from pathlib import Path

from commands.bus import InProcessCommandBus
from routing.config import Connections, Route


class InProcessBackend:
    async def command_bus(self, route: Route) -> InProcessCommandBus:
        del route
        return InProcessCommandBus()

    async def aclose(self) -> None:
        return None


async def open_backend(
    connections: Connections, data_dir: Path, *, create: bool = True
) -> InProcessBackend:
    del connections, data_dir, create
    return InProcessBackend()
