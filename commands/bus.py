"""The in-process command bus: one handler per command payload type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel

from commands.envelope import Command, CommandResult

Handler = Callable[[Any], Awaitable[CommandResult]]


class CommandBus(Protocol):
    """Carries a command to the one handler registered for its payload type."""

    def register(self, payload_type: type[BaseModel], handler: Handler) -> None: ...

    async def dispatch(self, command: Command[Any]) -> CommandResult: ...


class InProcessCommandBus:
    def __init__(self) -> None:
        self._handlers: dict[type[BaseModel], Handler] = {}

    def register(self, payload_type: type[BaseModel], handler: Handler) -> None:
        if payload_type in self._handlers:
            raise ValueError(f"a handler for {payload_type.__name__} is registered already")
        self._handlers[payload_type] = handler

    async def dispatch(self, command: Command[Any]) -> CommandResult:
        handler = self._handlers.get(type(command.payload))
        if handler is None:
            raise LookupError(f"no handler for {type(command.payload).__name__}")
        return await handler(command)
