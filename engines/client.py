"""The command bus's producer client, for services that send commands to ``engines
worker`` (the routes file's ``command_bus: kafka``).

::

    async with open_client(Path("routes.yaml")) as client:
        answer = await client.send_and_wait(
            message_for(CreateNote(note_id="n1", title="hi"), token=jwt, command_id="c-1"),
            timeout=5,
        )

A command's type travels as its wire name, ``<domain>.<PayloadClass>`` (e.g.
``notes.CreateNote``), from the domain registry (:func:`wire_names`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engines.domain import Domain
from engines.settings import Settings, load_settings
from routing.backends.kafka.bus import (
    Accepted,
    CommandClient,
    CommandMessage,
    CommandTimeout,
    Refused,
)
from routing.backends.kafka.client import KafkaClients
from spine.errors import RoutingError

__all__ = [
    "Accepted",
    "CommandClient",
    "CommandMessage",
    "CommandTimeout",
    "Refused",
    "client_for",
    "message_for",
    "open_client",
    "wire_name",
    "wire_names",
]


def wire_names(domains: Sequence[Domain] | None = None) -> dict[str, type[BaseModel]]:
    """Every command payload type by its wire name, ``<domain>.<PayloadClass>``."""
    if domains is None:
        from engines.domains import DOMAINS

        domains = DOMAINS
    names: dict[str, type[BaseModel]] = {}
    for domain in domains:
        for payload_type in domain.commands:
            name = f"{domain.name}.{payload_type.__name__}"
            if name in names:
                raise ValueError(f"two command types are named {name!r} on the wire")
            names[name] = payload_type
    return names


def wire_name(payload_type: type[BaseModel], domains: Sequence[Domain] | None = None) -> str:
    for name, known in wire_names(domains).items():
        if known is payload_type:
            return name
    raise LookupError(f"{payload_type.__name__} is no domain's command")


def message_for(
    payload: BaseModel, *, token: str, command_id: str, **fields: Any
) -> CommandMessage:
    """The message carrying ``payload`` for the caller whose JWT is ``token``;
    ``fields``: ``expected_version``, ``surface_id``, ``project_id``, ``provenance``, and
    the tenant, mode and user the sender states (checked against the token)."""
    return CommandMessage(
        command_id=command_id,
        type=wire_name(type(payload)),
        token=token,
        payload=payload.model_dump(mode="json"),
        **fields,
    )


def client_for(settings: Settings, data_dir: Path, *, create: bool = False) -> CommandClient:
    """The client of ``settings``' command bus, which must be routed to kafka."""
    route = settings.routes.get("command_bus")
    if route is None or route.backend != "kafka":
        where = "no route" if route is None else f"backend {route.backend!r}"
        raise RoutingError(f"command_bus has {where}: the bus client needs `command_bus: kafka`")
    conn = settings.connections.kafka
    if conn is None:
        raise RoutingError("command_bus: kafka needs a `connections.kafka` block")
    return CommandClient(KafkaClients(conn, data_dir), route.name, create=create)


@contextlib.asynccontextmanager
async def open_client(
    routes: Path, data_dir: Path = Path("."), *, create: bool = False
) -> AsyncIterator[CommandClient]:
    """The started client of the routes file ``routes`` (closed on exit)."""
    settings, _ = load_settings(routes)
    async with client_for(settings, data_dir, create=create) as client:
        yield client
