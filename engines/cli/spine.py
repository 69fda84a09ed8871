"""``engines spine``: read a stream (and verify its chain), follow new events."""

from __future__ import annotations

import argparse
import asyncio

from engines.cli.common import add_common, err, event_line, with_registry
from routing.registry import Registry
from spine.codec import verify_chain
from spine.streams import parse_stream_id


def cmd_read(args: argparse.Namespace) -> int:
    parse_stream_id(args.stream_id)

    async def body(registry: Registry) -> int:
        spine = await registry.event_store()
        events = await spine.read_stream(args.stream_id, args.from_seq, args.to_seq)
        for event in events:
            print(event_line(event))
        if args.verify and events:
            # from seq 1 the chain starts at the genesis hash; later, at the first read
            checked = verify_chain(events, prev_hash=events[0].prev_hash)
            err(f"hash chain verified: {checked} events from seq {events[0].seq}")
        if not events:
            err(f"stream {args.stream_id!r} has no events in that range")
        return 0

    return asyncio.run(with_registry(args, body))


def cmd_tail(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        feed = await registry.global_feed()
        position = args.from_position
        if position < 0:
            position = await feed.head_position()
        shown = 0
        while args.limit is None or shown < args.limit:
            batch = await feed.read_all(position, 1000)
            for position, event in batch:
                print(f"{position}\t{event_line(event)}", flush=True)
                shown += 1
                if args.limit is not None and shown >= args.limit:
                    return 0
            if not batch:
                await feed.wait_for_commit(position, 0.5)
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
    sr.add_argument("--verify", action="store_true", help="verify the hash chain")
    sr.set_defaults(func=cmd_read)
    st = ssub.add_parser("tail", help="follow new events (position TAB event)")
    add_common(st)
    st.add_argument("--from-position", type=int, default=-1, help="default: the current head")
    st.add_argument("--limit", type=int, default=None, help="stop after this many events")
    st.set_defaults(func=cmd_tail)
