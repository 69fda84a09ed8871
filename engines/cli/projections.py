"""``engines projections``: run projectors, see where each stands and what it parked.

``run`` runs projectors as a long-lived process of their own (beside ``engines serve
--no-projectors``; with ``spine_feed: kafka`` each is a consumer group member, so
several such processes split the work); ``status`` shows each projector's checkpoint
and lag per feed partition and how many streams it holds back; ``failures`` lists the
parked events; ``retry`` releases a parked stream and applies it from the spine;
``skip`` passes over the parked event first; ``rebuild`` (:mod:`engines.cli.rebuild`)
rebuilds a view from the spine.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from engines.cli import rebuild
from engines.cli.common import LAB_NOTICE, add_common, data_dir_of, err, with_runtime
from engines.cli.output import add_format, emit, format_of
from engines.runtime import Runtime, bootstrap, check_settings, supervise
from engines.settings import Settings
from spine.errors import InvalidInput


def _named(rt: Runtime, name: str | None) -> list[str]:
    if name is None:
        return list(rt.runners)
    if name not in rt.runners:
        raise InvalidInput(f"no projector {name!r} (known: {', '.join(sorted(rt.runners))})")
    return [name]


def cmd_run(args: argparse.Namespace) -> int:
    from engines.cli.common import settings_of

    settings = settings_of(args)
    data_dir = data_dir_of(args, settings)
    check_settings(settings, data_dir)  # every problem of the file, before anything opens
    return asyncio.run(_run(settings, data_dir, args.names))


async def _run(settings: Settings, data_dir: Path, names: list[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with bootstrap(settings, data_dir, run_projectors=False) as rt:
            chosen = [n for name in names for n in _named(rt, name)] if names else list(rt.loops)
            rt.tasks = [asyncio.create_task(supervise(rt.loops[n])) for n in chosen]
            if rt.lab_routes:
                err(LAB_NOTICE)
            feed = rt.settings.routes["spine_feed"]
            err(
                f"engines: running {len(chosen)} projector(s) on spine_feed "
                f"{feed.backend}:{feed.name}: {', '.join(chosen)}"
            )
            await stop.wait()
            err("engines: stopping; what was applied and not checkpointed is applied again")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        names = _named(rt, args.name)
        rows = []
        for name in names:
            status = await rt.status(name)
            for p in status.partitions:
                rows.append(
                    {
                        "projector": status.name,
                        "partition": p.partition,
                        "checkpoint": p.checkpoint,
                        "lag": p.lag,
                        "parked": status.parked,
                    }
                )
        columns = ("projector", "partition", "checkpoint", "lag", "parked")
        emit(args, rows, columns=columns)
        return 0

    return with_runtime(args, body)


def cmd_failures(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        names = _named(rt, args.name)
        parked = [p for p in await rt.parking.parked() if p.projector in names]
        rows = [
            {
                "projector": p.projector,
                "stream": p.stream_id,
                "seq": p.seq,
                "event_type": p.event_type,
                "attempts": p.attempts,
                "parked_at": p.parked_at,
                "error": p.error[:100] if format_of(args) == "table" else p.error,
            }
            for p in parked
        ]
        emit(args, rows, columns=(*rows[0],) if rows else _FAILURE_COLUMNS)
        err(f"{len(parked)} parked stream(s)")
        return 0

    return with_runtime(args, body)


_FAILURE_COLUMNS = ("projector", "stream", "seq", "event_type", "attempts", "parked_at", "error")


def _release(args: argparse.Namespace, *, skip: bool) -> int:
    async def body(rt: Runtime) -> int:
        (name,) = _named(rt, args.name)
        runner = rt.runners[name]
        parked = await rt.parking.parked(name)
        streams = [p.stream_id for p in parked] if args.all else [args.stream_id]
        if not args.all and args.stream_id not in {p.stream_id for p in parked}:
            raise InvalidInput(f"{args.stream_id!r} is not parked for projector {name!r}")
        failed = 0
        for stream_id in streams:
            again = await (runner.skip(stream_id) if skip else runner.retry(stream_id))
            if again is None:
                done = (await runner.applied([stream_id])).get(stream_id, 0)
                print(f"{stream_id}: applied through seq {done}")
            else:
                failed += 1
                print(f"{stream_id}: parked again at seq {again.seq}: {again.error}")
        return 1 if failed else 0

    return with_runtime(args, body)


def cmd_retry(args: argparse.Namespace) -> int:
    return _release(args, skip=False)


def cmd_skip(args: argparse.Namespace) -> int:
    return _release(args, skip=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pj = sub.add_parser("projections", help="projector checkpoints, lag and parked events")
    psub = pj.add_subparsers(dest="projections_command", required=True)
    pn = psub.add_parser(
        "run",
        help="run projectors until Ctrl-C or SIGTERM (beside `serve --no-projectors`)",
    )
    add_common(pn)
    pn.add_argument("names", nargs="*", metavar="NAME", help="projectors to run (default: all)")
    pn.set_defaults(func=cmd_run)
    ps = psub.add_parser("status", help="checkpoint and lag per projector and partition")
    add_common(ps)
    add_format(ps)
    ps.add_argument("name", nargs="?", help="one projector (default: all)")
    ps.set_defaults(func=cmd_status)
    pf = psub.add_parser("failures", help="parked events: stream, seq, error")
    add_common(pf)
    add_format(pf)
    pf.add_argument("name", nargs="?", help="one projector (default: all)")
    pf.set_defaults(func=cmd_failures)
    rebuild.register(psub, add_common)
    for verb, func, what in (
        ("retry", cmd_retry, "release a parked stream and apply it from the spine"),
        ("skip", cmd_skip, "pass over the parked event, then apply the rest of its stream"),
    ):
        pr = psub.add_parser(verb, help=what)
        add_common(pr)
        pr.add_argument("name", help="the projector")
        which = pr.add_mutually_exclusive_group(required=True)
        which.add_argument("stream_id", nargs="?", help="the parked stream")
        which.add_argument("--all", action="store_true", help="every parked stream")
        pr.set_defaults(func=func)
