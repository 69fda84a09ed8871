"""The ``engines`` command: serve, token, routes check, spine read/tail, projections status.

Thin: parse, build from the composition root, call, print; errors map to exit codes in
one table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

from engines.auth import mint_lab_token
from engines.runtime import bootstrap
from engines.settings import Settings, load_settings
from routing.registry import Registry, check_routes
from spine.codec import verify_chain
from spine.errors import EnginesError, IntegrityError, InvalidInput, RoutingError
from spine.events import EventEnvelope
from spine.streams import parse_stream_id

DEFAULT_DATA_DIR = Path(".engines")
LAB_NOTICE = "[LAB] embedded SQLite backend in use: lab mode only, not for production"

#: One table from our errors to exit codes; the first matching class wins.
EXIT_BY_ERROR: tuple[tuple[type[EnginesError], int], ...] = (
    (RoutingError, 2),
    (InvalidInput, 3),
    (IntegrityError, 4),
    (EnginesError, 1),
)


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _settings(args: argparse.Namespace) -> Settings:
    settings, _ = load_settings(Path(args.routes) if args.routes else None)
    return settings


def _label_lab(registry: Registry) -> None:
    if registry.lab_routes:
        _err(LAB_NOTICE)


def _event_line(event: EventEnvelope) -> str:
    return orjson.dumps(event.model_dump(mode="json")).decode()


# -- commands -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engines.api import create_app

    settings = _settings(args)
    resolved = check_routes(settings)  # refuse to start, naming every missing kind
    data_dir = Path(args.data_dir)
    _err(f"engines: serving on http://{args.host}:{args.port} mode={settings.mode}")
    if any(r.is_lab for r in resolved):
        _err(LAB_NOTICE, f"[LAB] data directory: {data_dir.resolve()}")
    uvicorn.run(
        create_app(settings, data_dir), host=args.host, port=args.port, log_level=args.log_level
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.mode != "lab":
        raise RoutingError(
            f"engines token mints lab tokens only; the routes file is {settings.mode!r}"
        )
    token = mint_lab_token(
        Path(args.data_dir),
        tenant_id=args.tenant,
        user_id=args.user,
        surfaces=args.surface or [],
        projects=args.project or [],
        ttl_seconds=args.ttl,
        settings=settings.auth,
    )
    print(token)
    return 0


def cmd_routes_check(args: argparse.Namespace) -> int:
    settings, label = load_settings(Path(args.file))
    try:
        resolved = check_routes(settings)
    except RoutingError as exc:
        _err(f"{label}: {exc}")
        return 2
    print(f"# {label}: mode {settings.mode}, {len(resolved)} routes, all required kinds present")
    for route in resolved:
        print(route.describe())
    return 0


async def _with_registry(
    args: argparse.Namespace, body: Callable[[Registry], Awaitable[int]]
) -> int:
    registry = Registry(_settings(args), Path(args.data_dir))
    _label_lab(registry)
    try:
        return await body(registry)
    finally:
        await registry.aclose()


def cmd_spine_read(args: argparse.Namespace) -> int:
    parse_stream_id(args.stream_id)

    async def body(registry: Registry) -> int:
        spine = await registry.event_store()
        events = await spine.read_stream(args.stream_id, args.from_seq, args.to_seq)
        for event in events:
            print(_event_line(event))
        if args.verify and events:
            # from seq 1 the chain starts at the genesis hash; later, at the first read
            checked = verify_chain(events, prev_hash=events[0].prev_hash)
            _err(f"hash chain verified: {checked} events from seq {events[0].seq}")
        if not events:
            _err(f"stream {args.stream_id!r} has no events in that range")
        return 0

    return asyncio.run(_with_registry(args, body))


def cmd_spine_tail(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        feed = await registry.global_feed()
        position = args.from_position
        if position < 0:
            position = await feed.head_position()
        shown = 0
        while args.limit is None or shown < args.limit:
            batch = await feed.read_all(position, 1000)
            for position, event in batch:
                print(f"{position}\t{_event_line(event)}", flush=True)
                shown += 1
                if args.limit is not None and shown >= args.limit:
                    return 0
            if not batch:
                await feed.wait_for_commit(position, 0.5)
        return 0

    try:
        return asyncio.run(_with_registry(args, body))
    except KeyboardInterrupt:
        return 0


def cmd_projections_status(args: argparse.Namespace) -> int:
    async def body() -> int:
        settings = _settings(args)
        async with bootstrap(settings, Path(args.data_dir), run_projectors=False) as rt:
            if rt.lab_routes:
                _err(LAB_NOTICE)
            print(f"{'projector':<16} {'checkpoint':>12} {'head':>12} {'lag':>10}")
            for runner in rt.runners.values():
                s = await runner.status()
                print(f"{s.name:<16} {s.checkpoint:>12} {s.head:>12} {s.lag:>10}")
        return 0

    return asyncio.run(body())


# -- parsing ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engines", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--routes", help="configuration/routes file (default: packaged lab)")
        sp.add_argument(
            "--data-dir", default=str(DEFAULT_DATA_DIR), help="lab data directory (./.engines)"
        )

    s = sub.add_parser("serve", help="run the HTTP service")
    common(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("token", help="mint a lab token (lab mode only); prints just the token")
    common(t)
    t.add_argument("--tenant", required=True)
    t.add_argument("--user", required=True)
    t.add_argument("--surface", action="append", help="a surface the user may use (repeatable)")
    t.add_argument("--project", action="append", help="a project the user may use (repeatable)")
    t.add_argument("--ttl", type=_positive_int, default=3600, help="seconds (default 3600)")
    t.set_defaults(func=cmd_token)

    r = sub.add_parser("routes", help="inspect routes files")
    rsub = r.add_subparsers(dest="routes_command", required=True)
    rc = rsub.add_parser("check", help="validate a routes file; list kind -> backend:name")
    rc.add_argument("file")
    rc.set_defaults(func=cmd_routes_check)

    sp = sub.add_parser("spine", help="read the event spine")
    ssub = sp.add_subparsers(dest="spine_command", required=True)
    sr = ssub.add_parser("read", help="print a stream's events, one JSON line each")
    common(sr)
    sr.add_argument("stream_id")
    sr.add_argument("--from", dest="from_seq", type=int, default=1)
    sr.add_argument("--to", dest="to_seq", type=int, default=None)
    sr.add_argument("--verify", action="store_true", help="verify the hash chain")
    sr.set_defaults(func=cmd_spine_read)
    st = ssub.add_parser("tail", help="follow new events (position TAB event)")
    common(st)
    st.add_argument("--from-position", type=int, default=-1, help="default: the current head")
    st.add_argument("--limit", type=int, default=None, help="stop after this many events")
    st.set_defaults(func=cmd_spine_tail)

    pj = sub.add_parser("projections", help="projector checkpoints and lag")
    psub = pj.add_subparsers(dest="projections_command", required=True)
    ps = psub.add_parser("status")
    common(ps)
    ps.set_defaults(func=cmd_projections_status)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except EnginesError as exc:
        _err(f"engines: {exc}")
        for cls, exit_code in EXIT_BY_ERROR:
            if isinstance(exc, cls):
                return exit_code
        return 1
    return code


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover - `python -m engines.cli`
    entry()
