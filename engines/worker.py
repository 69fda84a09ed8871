"""``engines worker``: commands from the Kafka command bus, checked as the HTTP API checks
a request, carried out by the domain's handler, answered on the results topic.

For each command (:class:`CommandWorker`):

1. the message is read (not JSON, fields missing or wrong: refused, 400/422, where a
   command id can be found; else logged and skipped);
2. its token is verified and the tenant, mode and user it states are checked against it
   (:class:`~engines.auth.TokenVerifier`, :func:`~engines.auth.check_claimed`: 401/403,
   audited through :class:`~engines.audit.RefusalAudit`, as HTTP's gate does);
3. its type is looked up by wire name (:func:`engines.client.wire_names`), and refused
   unless its domain lets the bus take it (``Domain.bus``, an :class:`~engines.domain.OnBus`
   per command type); its payload is validated;
4. the role its HTTP path needs is checked (``OnBus.role``: 403, audited); its scope is
   resolved (:func:`~engines.auth.resolve_scope`, audited) where its message and payload
   place it (``OnBus.place``: a blackboard key's project, as HTTP's URL names it);
5. its HTTP path's checks before dispatch run (``OnBus.admit``: a route's option, a body
   model, a required precondition; the server's time); the domain's handler runs
   (``Runtime.dispatch``); a repeated command id is answered with its original result
   only once that result is found to be the caller's (same tenant, mode and user as its
   events; else 403, audited) and the same request (``OnBus.same_request``); a result
   its HTTP path answers as an error is refused the same way (``OnBus.answer``: a debit
   over the limit, recorded, is refused with 402).

**What the bus takes.** What each domain declares, with the very functions its HTTP
path calls, so no check is weaker than HTTP's: notes, session memory, budgets, the
blackboard, strategy locks, SEO config, flows, graphs and overlays. Telemetry is refused
(``NotOnBus``, 422): its HTTP path checks and answers what a command cannot carry (see
README, "Kafka: the command bus").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from commands.envelope import Command, CommandResult
from engines.audit import Refusal, RefusalAudit, request_summary
from engines.auth import Principal, check_claimed, resolve_scope
from engines.client import wire_names
from engines.domain import Domain, OnBus
from engines.http.access import check_role
from engines.http.errors import status_for
from engines.http.jsonbody import strict_loads
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from routing.backends.kafka.bus import (
    Accepted,
    CommandMessage,
    KafkaCommandBus,
    Refused,
    serve_commands,
)
from spine.errors import EnginesError, IdentityError, InvalidInput, RoutingError, ScopeMismatch
from spine.events import Scope

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class MalformedCommand(InvalidInput):
    """The record is not a command message (not JSON, a field missing or wrong)."""


class InvalidPayload(InvalidInput):
    """The payload does not validate against its command's model (422, as HTTP answers
    a body that does not)."""


class UnknownCommandType(InvalidInput):
    """The message's type names no domain's command."""


class NotOnBus(InvalidInput):
    """A known command the bus does not take (its HTTP path checks more than the bus
    can): send it over HTTP."""


def bus_commands(domains: Sequence[Domain]) -> dict[type[BaseModel], OnBus]:
    """The command types the bus takes: what each domain declares (``Domain.bus``)."""
    return {t: on_bus for domain in domains for t, on_bus in domain.bus.items()}


#: Statuses of what a refusal answers where the HTTP table has no row of its own.
MALFORMED_STATUS: Final = 400


def refused(command_id: str, exc: EnginesError) -> Refused:
    status = MALFORMED_STATUS if isinstance(exc, MalformedCommand) else status_for(exc)
    return Refused(
        command_id=command_id, code=type(exc).__name__, http_status=status, message=str(exc)
    )


def _command_id(key: bytes | None, data: Any) -> str | None:
    """The command id a record carries: its message's, else its key."""
    given = data.get("command_id") if isinstance(data, dict) else None
    if isinstance(given, str) and 0 < len(given) <= 128 and given.isprintable():
        return given
    if key:
        text = key.decode("utf-8", "replace")
        if len(text) <= 128 and text.isprintable():
            return text
    return None


class CommandWorker:
    """Answers the commands of ``bus`` with ``runtime``'s handlers (see the module's
    docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        bus: KafkaCommandBus,
        *,
        domains: Sequence[Domain] | None = None,
        refusals: RefusalAudit | None = None,
    ) -> None:
        self.runtime = runtime
        self.bus = bus
        self.mode = runtime.settings.mode
        domains = runtime.domains if domains is None else domains
        self.types = wire_names(domains)
        self.on_bus = bus_commands(domains)
        self.refusals = refusals or RefusalAudit(runtime.spine, self.mode, runtime.settings.audit)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; open refusal intervals are closed on the way out."""
        self.refusals.start()
        try:
            await serve_commands(self.bus, self.answer, stop)
        finally:
            await self.refusals.aclose()

    async def answer(self, key: bytes | None, value: bytes | None) -> Accepted | Refused | None:
        """The answer to one record; never raises: a bad record must not stop the worker
        nor block its partition. A store that is down is answered 503 (nothing was
        written; the sender may send the same command id again)."""
        data: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(value or b"")
        command_id = _command_id(key, data)
        try:
            if not isinstance(data, dict):
                raise MalformedCommand("the record is not a JSON object")
            try:  # as the HTTP API parses a body: no repeated keys, exact numbers
                strict_loads(value or b"")
            except json.JSONDecodeError as exc:
                raise MalformedCommand(f"the record is not strict JSON: {exc.msg}") from None
            try:
                message = CommandMessage.model_validate(data)
            except ValidationError as exc:
                raise MalformedCommand(_fields_wrong(exc)) from None
            return await self._carry(message)
        except EnginesError as exc:
            if command_id is None:
                log.warning("skipped a record with no command id: %s", exc)
                return None
            log.info("command %r refused: %s", command_id, exc)
            return refused(command_id, exc)
        except Exception:
            log.exception("command %r failed", command_id)
            if command_id is None:
                return None
            return Refused(
                command_id=command_id,
                code="InternalError",
                http_status=500,
                message="the command failed; the worker logged why",
            )

    async def _carry(self, message: CommandMessage) -> Accepted:
        principal = await self._authenticate(message)
        payload_type = self.types.get(message.type)
        if payload_type is None:
            raise UnknownCommandType(f"no command is named {message.type!r}")
        on_bus = self.on_bus.get(payload_type)
        if on_bus is None:
            raise NotOnBus(
                f"{message.type} is not taken on the command bus (its HTTP path checks more "
                "than the bus can): send it to the HTTP API"
            )
        try:
            payload = payload_type.model_validate(message.payload)
        except ValidationError as exc:
            raise InvalidPayload(_fields_wrong(exc, "payload")) from None
        if on_bus.role is not None:
            await self._checked(message, principal, check_role, principal, on_bus.role)
        scope = await self._scope(principal, message, payload, on_bus)
        command = Command[Any](
            command_id=message.command_id,
            scope=scope,
            expected_version=message.expected_version,
            source=principal.source,
            provenance=message.provenance,
            grants=principal.grants,
            payload=payload,
        )
        if on_bus.admit is not None:
            try:
                command = on_bus.admit(principal, command, self.runtime.registry)
            except ValidationError as exc:
                raise InvalidPayload(_fields_wrong(exc, "payload")) from None
        result = await self.runtime.dispatch(command)
        if result.deduplicated:
            await self._owned(principal, message, result)
            if on_bus.same_request is not None:
                on_bus.same_request(command, result)
        refusal = on_bus.answer(command, result) if on_bus.answer is not None else None
        if refusal is not None:
            raise refusal
        seqs = [e.seq for e in result.events]
        return Accepted(
            command_id=message.command_id,
            stream_id=result.stream_id,
            version=result.version,
            first_seq=min(seqs) if seqs else None,
            last_seq=max(seqs) if seqs else None,
            deduplicated=result.deduplicated,
        )

    async def _authenticate(self, message: CommandMessage) -> Principal:
        principal: Principal | None = None
        try:
            principal = self.runtime.verifier.verify(message.token)
            check_claimed(principal, self.mode, _claimed(message))
        except IdentityError as exc:
            known = principal or getattr(exc, "principal", None)
            await self._deny(message, exc, known if isinstance(known, Principal) else None)
            raise
        return principal

    async def _scope(
        self, principal: Principal, message: CommandMessage, payload: BaseModel, on_bus: OnBus
    ) -> Scope:
        """The command's scope: where its message and payload place it (``OnBus.place``),
        resolved against the token; refusals audited."""

        def resolve() -> Scope:
            surface_id, project_id = message.surface_id, message.project_id
            if on_bus.place is not None:
                surface_id, project_id = on_bus.place(payload, principal, surface_id, project_id)
            return resolve_scope(
                principal,
                self.mode,
                claimed=_claimed(message),
                surface_id=surface_id,
                project_id=project_id,
                require_surface=(
                    on_bus.require_surface(payload)
                    if callable(on_bus.require_surface)
                    else on_bus.require_surface
                ),
            )

        return await self._checked(message, principal, resolve)

    async def _checked(
        self,
        message: CommandMessage,
        principal: Principal,
        check: Callable[..., _T],
        *args: Any,
    ) -> _T:
        """``check(*args)``, its refusal of identity (403) audited."""
        try:
            return check(*args)
        except IdentityError as exc:
            await self._deny(message, exc, principal)
            raise

    async def _owned(
        self, principal: Principal, message: CommandMessage, result: CommandResult
    ) -> None:
        """A repeated command's original events must be the caller's."""
        caller = (principal.tenant_id, self.mode, principal.user_id)
        if all((e.tenant_id, e.mode, e.user_id) == caller for e in result.events):
            return
        exc = ScopeMismatch(f"command_id {message.command_id!r} was sent by another caller")
        await self._deny(message, exc, principal)
        raise exc

    async def _deny(
        self, message: CommandMessage, exc: IdentityError, principal: Principal | None
    ) -> None:
        await self.refusals.refused(
            Refusal(
                status=status_for(exc),
                reason_code=type(exc).__name__,
                reason=str(exc),
                request=request_summary(
                    method="COMMAND",
                    path=f"{self.bus.topic}/{message.type}",
                    client=None,
                    claimed={k: list(v) for k, v in _claimed(message).items()},
                ),
                tenant_id=principal.tenant_id if principal else None,
                user_id=principal.user_id if principal else None,
                caller=principal.user_id if principal else f"bus:{self.bus.topic}",
                source=principal.source if principal else "ui",
            )
        )


def _claimed(message: CommandMessage) -> dict[str, list[str]]:
    """What the message states of tenant, mode and user (as HTTP's headers)."""
    stated = {"tenant_id": message.tenant_id, "mode": message.mode, "user_id": message.user_id}
    return {name: [value] for name, value in stated.items() if value is not None}


def _fields_wrong(exc: ValidationError, *under: str) -> str:
    """Which fields are wrong and why, never echoing the input."""
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in (*under, *err["loc"])) or "(message)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def kafka_bus(runtime: Runtime) -> KafkaCommandBus:
    """The runtime's command bus, which must be on Kafka (:class:`RoutingError` else)."""
    if not isinstance(runtime.bus, KafkaCommandBus):
        route = runtime.settings.routes.get("command_bus")
        backend = route.backend if route else "no route"
        raise RoutingError(
            f"engines worker consumes `command_bus: kafka`; this routes file has {backend}"
        )
    return runtime.bus


async def run_worker(
    settings: Settings,
    data_dir: Path,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Runtime, KafkaCommandBus], None] | None = None,
) -> None:
    """Run a worker until ``stop`` is set, or SIGINT or SIGTERM arrives; ``ready`` is
    called once the runtime is built, before the group is joined."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with bootstrap(settings, data_dir, run_projectors=False) as rt:
            bus = kafka_bus(rt)
            if ready is not None:
                ready(rt, bus)
            await CommandWorker(rt, bus).run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
