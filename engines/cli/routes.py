"""``engines routes``: check a routes file; provision what it names.

``provision`` opens every route through the registry with ``create`` on, so each backend
makes what its stores need (databases, containers, tables, collections' indexes): the
event store, the checkpoint store, and each view store with the query shapes of the
projectors writing it declared (as ``engines serve`` does at start-up). It prints one
line per route, then what the backend created for it (its ``created`` lines) or
``exists`` (``ready`` from a backend that does not say what it creates). Running it
again creates nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from engines.cli.common import err
from engines.cli.output import add_format, emit
from engines.runtime import check_settings, open_view_store, view_projectors
from engines.settings import load_settings
from routing.kinds import VIEW_KINDS
from routing.registry import Registry
from spine.errors import RoutingError

CHECK_EPILOG = """\
prints one row per route (kind, backend, name, whether it is lab-only); the file's
mode and route count go to stderr beside a table.
exit status: 0 the file is usable; 2 it is not (every problem named).
"""

PROVISION_EPILOG = """\
exit status: 0 every route provisioned (or already there); 2 the routes file is invalid
or its signing key unusable (every problem named, before anything is made); 1 a
backend is unavailable or refused (the route and backend named; provisioning stops
there, and running it again goes on).
"""


def cmd_check(args: argparse.Namespace) -> int:
    settings, label = load_settings(Path(args.file))
    try:
        resolved = check_settings(settings, Path(args.data_dir) if args.data_dir else None)
    except RoutingError as exc:
        err(f"{label}: {exc}")
        return 2
    rows = (
        {
            "kind": route.kind,
            "backend": route.route.backend,
            "name": route.route.name,
            "lab": "LAB: embedded, not for production" if route.is_lab else None,
        }
        for route in resolved
    )
    title = (
        f"# {label}: mode {settings.mode}, {len(resolved)} routes, all required kinds "
        "present, connections and signing key usable"
    )
    emit(args, rows, columns=("kind", "backend", "name", "lab"), title=title)
    return 0


async def provision(registry: Registry) -> int:
    """Open every route's store with ``create``; print what was done. The exit status."""
    from engines.domains import DOMAINS

    projectors = view_projectors(DOMAINS)
    opens: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
        "event_spine": registry.event_store,
        "projection_checkpoints": registry.checkpoint_store,
    }
    for route in registry.check_required():
        kind = route.kind
        print(route.describe(), flush=True)
        _, backend = await registry.backend(kind)
        before = len(getattr(backend, "created", []))
        store: Coroutine[Any, Any, object]
        if kind in VIEW_KINDS:
            store = open_view_store(registry, kind, projectors.get(kind, []))
        elif kind in opens:
            store = opens[kind]()
        elif hasattr(backend, "provision"):  # transport with something to make (topics)
            store = backend.provision(route.route, kind)
        else:  # transport (spine_feed, command_bus) in process: opening it was all
            print("    nothing to create", flush=True)
            continue
        await store
        if not hasattr(backend, "created"):  # a backend that does not say what it makes
            print("    ready", flush=True)
            continue
        created: list[str] = backend.created
        for line in created[before:] or ["exists"]:
            print(f"    {line}", flush=True)
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    settings, label = load_settings(Path(args.file))
    # every problem at once (routes, connections, signing key), before anything is made
    resolved = check_settings(settings, Path(args.data_dir))
    print(f"# {label}: mode {settings.mode}, {len(resolved)} routes", flush=True)

    async def main() -> int:
        registry = Registry(settings, Path(args.data_dir), create=True)
        try:
            return await provision(registry)
        finally:
            await registry.aclose()

    return asyncio.run(main())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("routes", help="check a routes file; provision what it names")
    rsub = r.add_subparsers(dest="routes_command", required=True)
    rc = rsub.add_parser(
        "check",
        help="validate a routes file; list kind -> backend:name",
        description=(
            "Check a routes file as `engines serve` does before it starts, naming every "
            "problem at once: its routes, a `connections` block for every cloud backend "
            "routed to, and its signing key (a secret file readable and long enough)."
        ),
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rc.add_argument("file")
    add_format(rc)
    rc.add_argument(
        "--data-dir",
        help="in lab mode, check the lab signing secret there too (made on first start)",
    )
    rc.set_defaults(func=cmd_check)
    rp = rsub.add_parser(
        "provision",
        help="create the tables, containers and indexes a routes file names (idempotent)",
        description=__doc__,
        epilog=PROVISION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("file")
    rp.add_argument(
        "--data-dir",
        default=".engines",
        help="data directory: a key_file or lab file is relative to it (./.engines)",
    )
    rp.set_defaults(func=cmd_provision)
