"""What a domain is (DESIGN §5): one plug-in the runtime, the HTTP API and the CLI loop
over. The list of domains is :mod:`engines.domains`; nothing else names a domain."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from commands.envelope import Command, CommandResult
from commands.handler import AppendOnly, Decider
from projections.projector import Projector

CliGroup = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
"""Adds the domain's ``engines <domain> ...`` sub-commands to the CLI's parser."""


@dataclass(frozen=True)
class OnBus:
    """How the Kafka command bus takes one command type, mirroring its HTTP path (see
    :mod:`engines.worker`): whether the scope must name a surface (a new record), and
    the check that a repeated command is the same request."""

    require_surface: bool = False
    same_request: Callable[[Command[Any], CommandResult], None] | None = None


@dataclass(frozen=True)
class Domain:
    name: str
    """The first segment of the domain's stream ids (telemetry's are its families':
    ``rl/...``, ``safety/...``)."""
    decider: Decider[Any, Any] | AppendOnly[Any]
    """Pure fold and decide over one stream (``commands/<domain>.py``); or, for a domain
    that only records, what it appends."""
    commands: tuple[type[BaseModel], ...]
    """The command payload types the decider handles; each is registered on the bus."""
    projectors: tuple[Projector, ...]
    """Its projectors (``projections/<domain>.py``)."""
    reads: str
    """The projector whose view answers the domain's reads; writes wait for it."""
    router: APIRouter
    """Its HTTP routes (``engines/http/<domain>.py``)."""
    cli: CliGroup | None = None
    """Its CLI group (``engines/cli/<domain>.py``)."""
    bus: Mapping[type[BaseModel], OnBus] = field(default_factory=dict)
    """The commands other services may send on the command bus (``engines worker``),
    each with how it is taken; any other is refused there. Only a command whose HTTP
    path checks nothing the bus cannot check the same way belongs here."""

    def __post_init__(self) -> None:
        names = {p.name for p in self.projectors}
        if self.reads not in names:
            raise ValueError(f"domain {self.name!r} reads {self.reads!r}, not one of {names}")
