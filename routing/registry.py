"""The registry: the one place that decides which backend serves a resource kind.

:func:`check_routes` validates a routes file as a whole (every problem at once);
:class:`Registry` opens backends lazily, once each, and hands out the stores a route
names. A kind without a route fails hard, at start-up and on first use.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from commands.bus import CommandBus
from projections.parking import ParkingStore
from projections.views import ViewStore
from routing.catalog import BACKENDS, BackendSpec
from routing.config import Connections, Route, RoutesFile
from routing.kinds import ACTIVE_KINDS, RESERVED_KINDS, option_problems, required_kinds
from spine.errors import (
    BackendUnavailable,
    EnginesError,
    MissingRoutes,
    ReservedKind,
    RouteNotAllowed,
    RoutingError,
)
from spine.feed import CheckpointStore, Feed
from spine.store import EventStore


@dataclass(frozen=True)
class ResolvedRoute:
    kind: str
    route: Route
    spec: BackendSpec

    @property
    def is_lab(self) -> bool:
        return self.spec.lab_only

    def describe(self) -> str:
        label = "  [LAB: embedded, not for production]" if self.is_lab else ""
        return f"{self.kind:<24} -> {self.route.backend}:{self.route.name}{label}"


#: What a backend's ``connections`` block must give at least, for the message naming a
#: block that is missing.
CONNECTION_HINTS: Final[dict[str, str]] = {
    "dynamodb": "its `region`, and `endpoint_url` for a local server",
    "cosmos": "its `endpoint` and `key` (or `key_file`)",
    "firestore": "at least its `project`, and `emulator_host` for a local emulator",
    "kafka": "its `bootstrap_servers`",
}


def check_routes(
    config: RoutesFile,
    kinds: Iterable[str] | None = None,
    *,
    connections: bool = True,
    also: Sequence[str] = (),
) -> list[ResolvedRoute]:
    """Validate ``config``; return its routes resolved, sorted by kind.

    Every problem is reported at once, in one error: :class:`MissingRoutes` if any
    required kind lacks a route (``kinds`` narrows what is required), else
    :class:`ReservedKind` if a reserved kind is routed, else :class:`RouteNotAllowed`
    (:class:`RoutingError` where only ``also`` has any); the message lists the other
    problems found too. ``connections``: also refuse a
    backend routed to without its ``connections`` block (off only where the blocks were
    refused already, so as not to name them twice). ``also``: problems the caller found
    outside the routes (the signing key), reported in the same error.
    """
    problems: list[str] = []
    reserved: list[str] = []
    resolved: list[ResolvedRoute] = []
    for kind, route in sorted(config.routes.items()):
        if kind in RESERVED_KINDS:
            reserved.append(kind)
            continue
        if kind not in ACTIVE_KINDS:
            problems.append(f"unknown resource kind {kind!r}")
            continue
        spec = BACKENDS.get(route.backend)
        if spec is None:
            problems.append(
                f"{kind}: unknown backend {route.backend!r} (known: {', '.join(sorted(BACKENDS))})"
            )
            continue
        if kind not in spec.kinds:
            problems.append(f"{kind}: backend {route.backend!r} cannot serve this kind")
            continue
        if spec.lab_only and config.mode != "lab":
            problems.append(
                f"{kind}: backend {route.backend!r} is lab-only and the mode is {config.mode!r}"
            )
            continue
        if spec.lab_only and not route.lab:
            problems.append(
                f"{kind}: backend {route.backend!r} is lab-only; the route must say `lab: true`"
            )
            continue
        if route.lab and not spec.lab_only:
            problems.append(f"{kind}: `lab: true` on a route to non-lab backend {route.backend!r}")
            continue
        set_options = [name for name, value in route.options if value is not None]
        refused_options = option_problems(kind, set_options)
        if refused_options:
            problems += refused_options
            continue
        resolved.append(ResolvedRoute(kind, route, spec))
    needed = required_kinds(config.mode) if kinds is None else frozenset(kinds)
    missing = sorted(needed - config.routes.keys())
    problems += _shared_names(resolved)
    if connections:
        problems += _connection_problems(config, resolved)
    problems += also
    reserved_problems = [f"resource kind {k!r} is reserved, not active" for k in reserved]
    if missing:
        raise MissingRoutes(missing, config.mode, also=reserved_problems + problems)
    if reserved:
        raise ReservedKind(reserved[0], also=reserved_problems[1:] + problems)
    listed = "\n  ".join(problems)
    if len(problems) > len(also):
        raise RouteNotAllowed(f"routes refused:\n  {listed}")
    if problems:  # the routes are fine; what the caller found is not
        raise RoutingError(f"configuration refused:\n  {listed}")
    return resolved


def _connection_problems(config: RoutesFile, resolved: list[ResolvedRoute]) -> list[str]:
    """A backend routed to needs its ``connections`` block (one problem per backend,
    naming its routes); a Cosmos DB block needs exactly one of ``key`` and ``key_file``."""
    routed: dict[str, list[str]] = {}
    for r in resolved:
        routed.setdefault(r.spec.name, []).append(r.kind)
    problems = []
    for backend, hint in CONNECTION_HINTS.items():
        if backend in routed and getattr(config.connections, backend) is None:
            problems.append(
                f"backend {backend!r} has no `connections.{backend}` block (routes "
                f"{', '.join(routed[backend])}): add one with {hint}"
            )
    cosmos = config.connections.cosmos
    if (
        "cosmos" in routed
        and cosmos is not None
        and (cosmos.key is None) == (cosmos.key_file is None)
    ):
        problems.append("connections.cosmos needs exactly one of `key` and `key_file`")
    return problems


def _shared_names(resolved: list[ResolvedRoute]) -> list[str]:
    """Two kinds may not share one physical name on one backend: their records would mix
    (a name a route uses beside its own, as the command bus's answers topic, counts)."""
    owners: dict[tuple[str, str], list[str]] = {}
    for r in resolved:
        owners.setdefault((r.route.backend, r.route.name), []).append(r.kind)
        for suffix in r.spec.derived.get(r.kind, ()):
            owners.setdefault((r.route.backend, r.route.name + suffix), []).append(
                f"{r.kind} (its {r.route.name + suffix})"
            )
    return [
        f"{', '.join(kinds)}: share {backend}:{name}; each needs its own"
        for (backend, name), kinds in sorted(owners.items())
        if len(kinds) > 1
    ]


@dataclass(frozen=True)
class Readiness:
    """What :meth:`Registry.readiness` found: per backend and per route (by kind),
    ``None`` where it answers, else why not."""

    backends: dict[str, str | None]
    routes: dict[str, str | None]
    resolved: list[ResolvedRoute]

    @property
    def down(self) -> list[str]:
        """One line per backend that does not answer, naming its routes (kind, then
        backend and physical name) and why."""
        lines = []
        for name, why in self.backends.items():
            if why is not None:
                routes = ", ".join(
                    f"{r.kind} ({name}:{r.route.name})"
                    for r in self.resolved
                    if r.spec.name == name
                )
                lines.append(f"backend {name!r} down, routes {routes}: {why}")
        return lines


class BackendModule(Protocol):
    """What a module under ``routing/backends/`` exposes. ``create``: the backend may
    create what it stores into (files, tables); without it, it opens only what exists
    and changes no layout (tools that read or repair a running deployment's data)."""

    async def open_backend(
        self, connections: Connections, data_dir: Path, *, create: bool
    ) -> Any:  # pragma: no cover - protocol
        ...


class Registry:
    """Hands out the store behind each route; opens each backend once; closes them all.
    ``create=False`` opens existing stores only (see :class:`BackendModule`)."""

    def __init__(self, config: RoutesFile, data_dir: Path, *, create: bool = True) -> None:
        self.config = config
        self.mode = config.mode
        self.data_dir = data_dir
        self.create = create
        self._routes = {r.kind: r for r in check_routes(config, kinds=())}
        self._backends: dict[str, Any] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    def check_required(self) -> list[ResolvedRoute]:
        """The start-up check: every required kind routed, every route allowed."""
        return check_routes(self.config)

    def resolve(self, kind: str) -> ResolvedRoute:
        """The route for ``kind``; a missing route fails hard, never falls back."""
        if kind in RESERVED_KINDS:
            raise ReservedKind(kind)
        try:
            return self._routes[kind]
        except KeyError:
            if kind not in ACTIVE_KINDS:
                raise RoutingError(f"unknown resource kind {kind!r}") from None
            raise MissingRoutes([kind], self.mode) from None

    @functools.cached_property
    def lab_routes(self) -> list[ResolvedRoute]:
        """The routes to lab backends (fixed for the registry's life; read per request)."""
        return [r for r in self._routes.values() if r.is_lab]

    async def backend(self, kind: str) -> tuple[ResolvedRoute, Any]:
        """The opened backend serving ``kind`` and its route."""
        resolved = self.resolve(kind)
        name = resolved.spec.name
        async with self._opening.setdefault(name, asyncio.Lock()):  # open each one once
            if name not in self._backends:
                await self._open(resolved)
        return resolved, self._backends[name]

    async def _open(self, resolved: ResolvedRoute) -> None:
        name = resolved.spec.name
        if resolved.spec.module is None:
            raise BackendUnavailable(
                resolved.kind, name, "this backend is not implemented in this build yet"
            )
        try:
            module: BackendModule = importlib.import_module(resolved.spec.module)
        except ImportError as exc:
            raise BackendUnavailable(
                resolved.kind,
                name,
                f"its SDK is not installed ({exc.name}): pip install 'engines[{name}]'",
            ) from exc
        self._backends[name] = await module.open_backend(
            self.config.connections, self.data_dir, create=self.create
        )

    async def event_store(self) -> EventStore:
        resolved, backend = await self.backend("event_spine")
        store: EventStore = await backend.event_store(resolved.route)
        return store

    async def feed(self) -> Feed:
        """The ``spine_feed``: delivery of the spine's committed events, by partition."""
        spine = await self.event_store()
        resolved, backend = await self.backend("spine_feed")
        checkpoints = await self.checkpoint_store()  # where a relay keeps its position
        feed: Feed = await backend.feed(resolved.route, spine, checkpoints=checkpoints)
        return feed

    async def view_store(self, kind: str) -> ViewStore:
        resolved, backend = await self.backend(kind)
        store: ViewStore = await backend.view_store(resolved.route)
        return store

    async def view_store_named(self, kind: str, name: str) -> ViewStore:
        """The view store of ``kind`` under the physical ``name`` instead of its route's,
        on the backend its route names (a rebuild's new view, a sandbox). A name another
        route of that backend uses (or derives) is refused: their records would mix."""
        resolved, backend = await self.backend(kind)
        route = resolved.route.model_copy(update={"name": name})
        Route.model_validate(route.model_dump())  # a valid physical name
        taken = [
            r.kind
            for r in self._routes.values()
            if r.route.backend == route.backend
            and r.kind != kind
            and (
                r.route.name == name
                or any(r.route.name + s == name for s in r.spec.derived.get(r.kind, ()))
            )
        ]
        if taken:
            raise RouteNotAllowed(
                f"{route.backend}:{name} is taken by route {', '.join(taken)}; choose another name"
            )
        store: ViewStore = await backend.view_store(route)
        return store

    async def checkpoint_store(self) -> CheckpointStore:
        resolved, backend = await self.backend("projection_checkpoints")
        store: CheckpointStore = await backend.checkpoint_store(resolved.route)
        return store

    async def parking_store(self) -> ParkingStore:
        """Where projectors park what they cannot apply: beside their checkpoints."""
        resolved, backend = await self.backend("projection_checkpoints")
        store: ParkingStore = await backend.checkpoint_store(resolved.route)
        return store

    async def command_bus(self) -> CommandBus:
        resolved, backend = await self.backend("command_bus")
        bus: CommandBus = await backend.command_bus(resolved.route)
        return bus

    async def ready(self, timeout: float = 2.0) -> dict[str, str | None]:
        """Ask every routed backend whether it answers, within ``timeout`` seconds each:
        per backend, ``None`` if it does, else why not. Backends not opened yet are
        opened (that is part of answering)."""
        return (await self.readiness(timeout)).backends

    async def readiness(self, timeout: float = 2.0) -> Readiness:
        """:meth:`ready`, and what it means for each route."""
        answers: dict[str, str | None] = {}
        for kind in sorted(self._routes):
            name = self._routes[kind].spec.name
            if name in answers:
                continue
            try:
                async with asyncio.timeout(timeout):
                    _, backend = await self.backend(kind)
                    ping = getattr(backend, "ping", None)
                    if ping is not None:
                        await ping()
            except EnginesError as exc:
                answers[name] = str(exc)
            except TimeoutError:
                answers[name] = f"did not answer within {timeout:g} s"
            else:
                answers[name] = None
        routes = {kind: answers[r.spec.name] for kind, r in sorted(self._routes.items())}
        return Readiness(answers, routes, [self._routes[k] for k in routes])

    async def aclose(self) -> None:
        """Close every backend opened, the last opened first: a transport (a feed's
        relay) is opened after the stores it reads and may still need them to close."""
        backends, self._backends = self._backends, {}
        for backend in reversed(backends.values()):
            await backend.aclose()
