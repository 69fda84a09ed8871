"""What a domain is (DESIGN §5): one plug-in the runtime, the HTTP API and the CLI loop
over. The list of domains is :mod:`engines.domains`; nothing else names a domain."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel

from commands.envelope import Command, CommandResult
from commands.handler import AppendOnly, Decider
from engines.auth import Principal, Role
from projections.projector import Projector
from spine.errors import EnginesError

if TYPE_CHECKING:
    from routing.registry import Registry

CliGroup = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
"""Adds the domain's ``engines <domain> ...`` sub-commands to the CLI's parser."""


Place = Callable[[Any, Principal, str | None, str | None], tuple[str | None, str | None]]
"""``place(payload, principal, surface_id, project_id)``: the surface and project a
command's scope is resolved in, from what its message states (``surface_id``,
``project_id``) and what its payload names (as HTTP's URL path does: a blackboard key's
project); a contradiction is refused (:class:`~spine.errors.ScopeMismatch`)."""

Admit = Callable[[Principal, Command[Any], "Registry"], Command[Any]]
"""``admit(principal, command, registry)``: the command to dispatch, once the checks its
HTTP path runs before dispatch hold (a route option, a body model, a precondition), else
their refusal; it may settle fields as HTTP does (the server's time, a route's
default)."""

Answer = Callable[[Command[Any], CommandResult], EnginesError | None]
"""``answer(command, result)``: the refusal a carried-out command answers with, where its HTTP
path answers a recorded result as an error (a debit over the limit: 402)."""


@dataclass(frozen=True)
class OnBus:
    """How the Kafka command bus takes one command type, mirroring its HTTP path (see
    :mod:`engines.worker`, which applies these in this order): the ``role`` the token
    must grant (403, audited); where the scope is resolved (``place``) and whether it
    must name a surface (a new record); the checks before dispatch (``admit``); the
    check that a repeated command is the same request (``same_request``); and what a
    result answers (``answer``). Each hook is the function the HTTP path calls too."""

    require_surface: bool | Callable[[Any], bool] = False
    """Or whether a given payload's scope must (a put that may create)."""
    role: Role | None = None
    place: Place | None = None
    admit: Admit | None = None
    same_request: Callable[[Command[Any], CommandResult], None] | None = None
    answer: Answer | None = None


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
