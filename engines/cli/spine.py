"""``engines spine``: read a stream (and verify its chain), follow new events, export
events to a file and import them (the file: :mod:`engines.cli.spine_file`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import IO, Any

from commands.spine_audit import verify_stream
from engines.cli import spine_file
from engines.cli.common import (
    EXIT_INTEGRITY,
    EXIT_OK,
    add_common,
    data_dir_of,
    err,
    event_line,
    positive_int,
    settings_of,
    shown,
    with_registry,
)
from engines.cli.output import add_format, clip, emit, is_table, progress, summary
from engines.settings import read_anchor_key
from routing.registry import Registry
from spine.errors import ImportConflict, IntegrityError, InvalidInput, StreamNotFound
from spine.events import EventEnvelope
from spine.feed import MemoryCheckpoints, Unreadable
from spine.importing import ImportResult
from spine.store import EventStore
from spine.streams import parse_stream_id, scan_scope

TAIL = "engines-spine-tail"
#: How many streams an import writes at once (each stream's parts one after another).
IMPORTS_AT_ONCE = 32
#: How many refused streams a json summary lists (all are named on stderr).
LISTED_REFUSALS = 100


def cmd_read(args: argparse.Namespace) -> int:
    parse_stream_id(args.stream_id)

    async def body(registry: Registry) -> int:
        spine = await registry.event_store()
        events = await spine.read_stream(args.stream_id, args.from_seq, args.to_seq)
        if events or args.format != "json":
            _print_events(args, events)
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
            if args.format == "json":
                _print_events(args, events)
        return 0

    return asyncio.run(with_registry(args, body))


READ_COLUMNS = ("seq", "event_type", "event_id", "recorded_at", "source", "user_id", "payload")


def _print_events(args: argparse.Namespace, events: list[EventEnvelope]) -> None:
    """A stream's events: whole, as JSON lines (the default) or one JSON array; or a
    table of their main fields, the payload cut."""
    if is_table(args):
        rows = [
            {**e.model_dump(include=set(READ_COLUMNS)), "payload": clip(e.payload)} for e in events
        ]
        emit(args, rows, columns=READ_COLUMNS, title=f"stream {shown(args.stream_id)}")
    else:
        emit(args, (e.model_dump(mode="json") for e in events))


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

    return asyncio.run(with_registry(args, body))  # Ctrl-C: 130, as every command


def cmd_export(args: argparse.Namespace) -> int:
    scope = scan_scope(args.domain, args.tenant, args.mode)

    async def body(registry: Registry) -> int:
        spine = await registry.event_store()
        source = registry.resolve("event_spine").route.backend
        out: IO[bytes]
        partial: Path | None = None
        if args.output in (None, "-"):
            out = sys.stdout.buffer
        else:
            out, partial = spine_file.open_for_export(Path(args.output))
        began = time.monotonic()
        events = streams = 0
        last_stream = ""
        try:
            out.write(spine_file.header(scope._asdict(), source) + b"\n")
            scanned = spine.scan(domain=scope.domain, tenant_id=scope.tenant_id, mode=scope.mode)
            with progress(args, None, "exporting") as bar:
                async for event in scanned:
                    out.write(spine_file.event_line(event) + b"\n")
                    events += 1
                    if event.stream_id != last_stream:  # a stream's events come together
                        streams += 1
                        last_stream = event.stream_id
                    if not events % 1000:
                        bar.advance(1000)
            out.write(spine_file.trailer(events) + b"\n")
            out.flush()
            if partial is not None:
                os.fsync(out.fileno())
                out.close()
                os.replace(partial, args.output)
                partial = None
        finally:
            if partial is not None:  # an export cut short leaves no file that looks whole
                out.close()
                partial.unlink(missing_ok=True)
        seconds = time.monotonic() - began
        summary(args, {"events": events, "streams": streams, "seconds": round(seconds, 2)})
        return EXIT_OK

    return asyncio.run(with_registry(args, body))


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInput(f"{args.file}: no such file (an import reads a file twice: not stdin)")

    async def body(registry: Registry) -> int:
        spine = await registry.event_store()
        began = time.monotonic()
        with progress(args, None, "checking") as bar:
            checked = spine_file.check_file(path, bar.advance)
        tally = _Tally(dry_run=args.dry_run)
        with progress(args, checked.events, "importing") as bar:
            running: dict[str, asyncio.Task[None]] = {}
            slots = asyncio.Semaphore(IMPORTS_AT_ONCE)
            for stream_id, part in spine_file.parts(path, checked.streams):
                await slots.acquire()
                before = running.get(stream_id)
                job = tally.run(spine, stream_id, part, before, slots.release, bar.advance)
                running[stream_id] = asyncio.create_task(job)
                _forget_done(running)
            await asyncio.gather(*running.values())
        for stream_id, refusal in tally.refused.items():
            err(f"refused: {shown(stream_id)} seq {refusal.seq}: {shown(refusal.detail)}")
        row = tally.row(path.name, len(checked.streams), time.monotonic() - began)
        emit(args, [row], columns=[k for k in row if k != "refused_streams"], title="spine import")
        return EXIT_INTEGRITY if tally.refused else EXIT_OK

    return asyncio.run(with_registry(args, body))


def _forget_done(running: dict[str, asyncio.Task[None]]) -> None:
    """Drop finished imports (raising the first failure), so the table stays small."""
    if len(running) < 4 * IMPORTS_AT_ONCE:
        return
    for stream_id, task in list(running.items()):
        if task.done():
            task.result()
            del running[stream_id]


class _Tally:
    """What an import did, stream by stream."""

    def __init__(self, *, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.written: dict[str, int] = {}
        self.already = 0
        self.refused: dict[str, ImportConflict] = {}

    async def run(
        self,
        spine: EventStore,
        stream_id: str,
        part: list[EventEnvelope],
        before: Awaitable[None] | None,
        release: Any,
        advance: Any,
    ) -> None:
        """Import one part of a stream, after its part ``before``; a stream refused once
        takes no more parts."""
        try:
            if before is not None:
                await before
            if stream_id in self.refused:
                return
            try:
                result: ImportResult = await spine.import_events(
                    stream_id, part, dry_run=self.dry_run
                )
            except ImportConflict as exc:
                self.refused[stream_id] = exc
                return
            self.written[stream_id] = self.written.get(stream_id, 0) + result.written
            self.already += result.already
        finally:
            release()
            advance(len(part))

    def row(self, file: str, streams: int, seconds: float) -> dict[str, Any]:
        imported = sum(1 for s, n in self.written.items() if n and s not in self.refused)
        return {
            "file": file,
            "streams": streams,
            "imported": imported,
            "unchanged": streams - imported - len(self.refused),
            "refused": len(self.refused),
            "events_written": sum(self.written.values()),
            "events_already": self.already,
            "dry_run": self.dry_run,
            "seconds": round(seconds, 2),
            "refused_streams": [
                {"stream_id": s, "seq": e.seq, "reason": e.detail}
                for s, e in list(self.refused.items())[:LISTED_REFUSALS]
            ],
        }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("spine", help="read the event spine")
    ssub = sp.add_subparsers(dest="spine_command", required=True)
    sr = ssub.add_parser(
        "read",
        help="print a stream's events (default: one JSON line each)",
        description=(
            "Print a stream's events: whole, one JSON object a line (--format jsonl, the "
            "default) or one JSON array (json); or a table of seq, type, id, time, source, "
            "user and payload (cut). --verify checks the whole chain from the genesis; "
            "its verdict goes to stderr."
        ),
    )
    add_common(sr)
    add_format(sr, default="jsonl")
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
    se = ssub.add_parser(
        "export",
        help="every event of a scope as JSON lines, read raw (header first, trailer last)",
    )
    add_common(se)
    se.add_argument("--tenant", help="only this tenant's streams")
    se.add_argument("--domain", help="only this domain's streams (notes, budget, ...)")
    se.add_argument("--mode", help="only this mode's streams (lab, saas, enterprise, system)")
    se.add_argument("-o", "--output", help="write to this file (default: stdout)")
    se.set_defaults(func=cmd_export)
    si = ssub.add_parser(
        "import",
        help="write an export's events into this spine (idempotent by event id)",
        description=(
            "Checks the whole file first (a malformed line: exit 3, a chain that does not "
            "verify: exit 4; nothing written), then imports stream by stream: events the "
            "stream holds already are skipped, a stream holding another event at one of "
            "the seqs is refused (exit 4) and the others go on."
        ),
    )
    add_common(si)
    add_format(si)
    si.add_argument("file", help="a file `engines spine export` wrote")
    si.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    si.set_defaults(func=cmd_import)
