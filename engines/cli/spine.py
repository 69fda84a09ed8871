"""``engines spine``: read a stream (and verify its chain), follow new events."""

from __future__ import annotations

import argparse
import asyncio

from commands.spine_audit import verify_stream
from engines.cli.common import (
    add_common,
    data_dir_of,
    err,
    event_line,
    positive_int,
    settings_of,
    with_registry,
)
from engines.settings import read_anchor_key
from routing.registry import Registry
from spine.errors import IntegrityError, StreamNotFound
from spine.feed import MemoryCheckpoints, Unreadable
from spine.streams import parse_stream_id

TAIL = "engines-spine-tail"


def cmd_read(args: argparse.Namespace) -> int:
    parse_stream_id(args.stream_id)

    async def body(registry: Registry) -> int:
        spine = await registry.event_store()
        events = await spine.read_stream(args.stream_id, args.from_seq, args.to_seq)
        for event in events:
            print(event_line(event))
        if args.verify:
            # the whole stream, from the genesis (whatever range was printed), and
            # against its tenant's anchors: the verifier of `engines audit verify`
            settings = settings_of(args)
            key = read_anchor_key(settings.audit, data_dir_of(args, settings))
            report = await verify_stream(spine, args.stream_id, key=key)
            if report.breaks:
                raise IntegrityError("; ".join(str(b) for b in report.breaks))
            anchored = f", {report.anchors} anchors" if report.anchors else ""
            err(f"hash chain verified: {report.events} events from the genesis{anchored}")
        if not events:
            if args.from_seq <= 1:
                raise StreamNotFound(args.stream_id)
            err(f"stream {args.stream_id!r} has no events in that range")
        return 0

    return asyncio.run(with_registry(args, body))


def cmd_tail(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        feed = await registry.feed()
        # Positions held in memory: a tail starts where it is told, never where it left off.
        positions = MemoryCheckpoints()
        if not args.from_start:
            positions.positions[TAIL] = await feed.heads()
        subscription = feed.subscribe(TAIL, positions)
        err("following " + ("every event" if args.from_start else "new events") + " (Ctrl-C stops)")
        shown = 0
        try:
            while args.limit is None or shown < args.limit:
                batch = await subscription.next_batch(0.5)
                if batch is None:
                    continue
                for event in batch.events:
                    if isinstance(event, Unreadable):
                        err(f"unreadable: {event.stream_id} seq {event.seq}: {event.error}")
                    else:
                        print(f"{batch.partition}\t{event_line(event)}", flush=True)
                    shown += 1
                    if args.limit is not None and shown >= args.limit:
                        return 0
                await subscription.commit(batch)
        finally:
            await subscription.aclose()
        return 0

    try:
        return asyncio.run(with_registry(args, body))
    except KeyboardInterrupt:
        return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("spine", help="read the event spine")
    ssub = sp.add_subparsers(dest="spine_command", required=True)
    sr = ssub.add_parser("read", help="print a stream's events, one JSON line each")
    add_common(sr)
    sr.add_argument("stream_id")
    sr.add_argument("--from", dest="from_seq", type=int, default=1)
    sr.add_argument("--to", dest="to_seq", type=int, default=None)
    sr.add_argument(
        "--verify",
        action="store_true",
        help="verify the hash chain",
    )
    sr.set_defaults(func=cmd_read)
    st = ssub.add_parser("tail", help="follow new events (partition TAB event)")
    add_common(st)
    st.add_argument(
        "--from-start", action="store_true", help="from the first event (default: new ones)"
    )
    st.add_argument("--limit", type=positive_int, default=None, help="stop after this many events")
    st.set_defaults(func=cmd_tail)
