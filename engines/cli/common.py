"""What every CLI group shares: options, the lab notice, the error → exit-code table.

Exit codes of every ``engines`` command (:data:`EXIT_CODES`, printed by ``engines
--help``):

====  =====================================================================
code  meaning
====  =====================================================================
0     ok: did what was asked
1     any other error (a backend that does not answer, named with its route)
2     routing or configuration (a routes file that cannot work), or usage
3     invalid input (a malformed id or option, an unknown run, no such data)
4     integrity problem found (a chain that does not verify, a conflicting import)
130   interrupted (Ctrl-C): stopped, no traceback
====  =====================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from engines.auth import uses_lab_secret
from engines.console import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from routing.registry import Registry
from spine.errors import (
    EnginesError,
    ImportConflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    RoutingError,
)
from spine.events import EventEnvelope

DEFAULT_DATA_DIR = Path(".engines")
LAB_NOTICE = "[LAB] embedded SQLite backend in use: lab mode only, not for production"

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_ROUTING = 2
EXIT_INVALID = 3
EXIT_INTEGRITY = 4

#: Every exit code and what it means (the module docstring's table, for ``--help``).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "ok"),
    (EXIT_OTHER, "other error (a backend that does not answer, ...)"),
    (EXIT_ROUTING, "routing or configuration error, or a usage error"),
    (EXIT_INVALID, "invalid input (a malformed id or option, nothing found)"),
    (EXIT_INTEGRITY, "integrity problem found (verification failed, conflicting import)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

#: One table from our errors to exit codes; the first matching class wins.
EXIT_BY_ERROR: tuple[tuple[type[EnginesError], int], ...] = (
    (RoutingError, EXIT_ROUTING),
    (InvalidInput, EXIT_INVALID),
    (NotFound, EXIT_INVALID),  # nothing found for what was named: a stream, a note, a key
    (IntegrityError, EXIT_INTEGRITY),
    (ImportConflict, EXIT_INTEGRITY),
    (EnginesError, EXIT_OTHER),
)


def exit_code_for(exc: EnginesError) -> int:
    for cls, code in EXIT_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return EXIT_OTHER


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(value: object) -> str:
    """A stored value as a table cell: control and bidirectional-override characters
    escaped, so what a client wrote cannot drive the operator's terminal."""
    text = "-" if value is None else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def add_common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--routes", help="configuration/routes file (default: packaged lab)")
    sp.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help=(
            "data directory (./.engines): the lab database and signing secret, a relative "
            "key_file; a routes file on cloud stores with its own keys needs none"
        ),
    )


def data_dir_needs(settings: Settings) -> list[str]:
    """What of ``settings`` is kept in the data directory: a lab SQLite file, the lab
    signing secret, a relative Cosmos DB ``key_file``. None for a routes file on cloud
    stores with its own keys."""
    needs = []
    routed = {route.backend for route in settings.routes.values()}
    sqlite = settings.connections.sqlite.path
    if "sqlite" in routed and not Path(sqlite).is_absolute():
        needs.append(f"the lab database ({sqlite})")
    if uses_lab_secret(settings.auth, settings.mode):
        needs.append("the lab signing secret")
    cosmos = settings.connections.cosmos
    if (
        "cosmos" in routed
        and cosmos
        and cosmos.key_file
        and not Path(cosmos.key_file).is_absolute()
    ):
        needs.append(f"the Cosmos DB key file ({cosmos.key_file})")
    return needs


def data_dir_of(args: argparse.Namespace, settings: Settings) -> Path:
    """The data directory a command that reads (or mints for) existing data names; one
    that does not exist is refused rather than created empty (only ``engines serve``
    creates one) where ``settings`` keep anything there (:func:`data_dir_needs`).
    A routes file that keeps nothing there needs none."""
    path = Path(args.data_dir)
    needs = data_dir_needs(settings)
    if needs and not path.is_dir():
        raise InvalidInput(
            f"data directory {path} does not exist, and this routes file keeps "
            f"{' and '.join(needs)} there: pass the --data-dir that `engines serve` uses "
            "(it creates the directory on first start)"
        )
    return path


def settings_of(args: argparse.Namespace) -> Settings:
    settings, _ = load_settings(Path(args.routes) if args.routes else None)
    return settings


def label_lab(registry: Registry) -> None:
    if registry.lab_routes:
        err(LAB_NOTICE)


def event_line(event: EventEnvelope) -> str:
    return orjson.dumps(event.model_dump(mode="json")).decode()


async def with_registry(
    args: argparse.Namespace, body: Callable[[Registry], Awaitable[int]]
) -> int:
    settings = settings_of(args)
    registry = Registry(settings, data_dir_of(args, settings), create=False)
    label_lab(registry)
    try:
        return await body(registry)
    finally:
        await registry.aclose()


def with_runtime(args: argparse.Namespace, body: Callable[[Runtime], Awaitable[int]]) -> int:
    """Run ``body`` on the runtime over ``args``' data directory and routes: existing
    stores only, projectors off (a tool beside a running service), lab routes labelled."""

    async def main() -> int:
        settings = settings_of(args)
        async with bootstrap(
            settings, data_dir_of(args, settings), run_projectors=False, create=False
        ) as rt:
            if rt.lab_routes:
                err(LAB_NOTICE)
            return await body(rt)

    return asyncio.run(main())


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port to listen on: 1 to 65535 (0, "any free port", would leave the port
    unknown to whoever is told to connect)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value
