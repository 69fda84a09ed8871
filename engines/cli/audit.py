"""``engines audit verify`` and ``engines audit anchor``: the spine's integrity.

``verify`` walks every stream in scope from the genesis (seq contiguity, hash chain,
identity) and against the anchors, and lists each broken stream with its first bad
event; exit 4 if any. ``anchor`` records the stream heads that moved since the previous
anchor, per tenant and mode (:mod:`spine.anchors`); run it periodically: what was
appended since the last anchor is protected by its chain only.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import Any

from commands.spine_audit import (
    AnchorReport,
    VerifyReport,
    anchor_spine,
    verify_spine,
    verify_stream,
)
from engines.cli.common import add_common, data_dir_of, err, label_lab, settings_of
from engines.cli.output import add_format, emit, progress, summary
from engines.settings import read_anchor_key
from routing.registry import Registry
from spine.errors import ConcurrencyError
from spine.streams import parse_stream_id, scan_scope

BROKEN_COLUMNS = ("stream", "first_bad_seq", "event_id", "problem")
ANCHORED_COLUMNS = ("anchor_stream", "heads", "seqs", "keyed")

VERIFY_EPILOG = """\
exit status: 0 every stream verifies; 4 a stream is broken (each listed with its first
bad event); 2 the routes file or the anchor key cannot serve; 1 a store does not answer.
Events appended since the last `engines audit anchor` are protected by their hash
chain only: a removed tail or stream shows only against an anchor.
"""

ANCHOR_EPILOG = """\
exit status: 0 anchored; 4 some streams do not verify (listed; not anchored, the others
are); 2 the routes file or the anchor key cannot serve; 1 a store does not answer, or
another anchor run kept appending (run it again).
"""


def _time(value: datetime | None) -> str:
    return "never" if value is None else value.isoformat(timespec="seconds")


def _key_state(report: VerifyReport, key: bytes | None) -> str:
    if not report.anchors:
        return "-"
    if key is not None:
        return "checked"
    return "not checked (no anchor key)" if report.warnings else "none"


async def _open(args: argparse.Namespace) -> tuple[Registry, bytes | None]:
    settings = settings_of(args)
    data_dir = data_dir_of(args, settings)
    key = read_anchor_key(settings.audit, data_dir)  # a bad key: refused before any read
    registry = Registry(settings, data_dir, create=False)
    label_lab(registry)
    return registry, key


def cmd_verify(args: argparse.Namespace) -> int:
    if args.stream is not None:
        parse_stream_id(args.stream)
    scan_scope(tenant_id=args.tenant)

    async def main() -> int:
        registry, key = await _open(args)
        try:
            store = await registry.event_store()
            if args.stream is not None:
                report = await verify_stream(store, args.stream, key=key)
            else:
                with progress(args, None, "verifying the spine") as bar:
                    report = await verify_spine(
                        store, tenant_id=args.tenant, key=key, progress=bar.advance
                    )
        finally:
            await registry.aclose()
        for warning in report.warnings:
            err(f"warning: {warning}")
        rows: list[dict[str, Any]] = [
            {
                "stream": b.stream_id,
                "first_bad_seq": b.seq,
                "event_id": b.event_id,
                "problem": b.problem,
            }
            for b in report.breaks
        ]
        if rows or args.format != "table":
            emit(args, rows, columns=BROKEN_COLUMNS, title="broken streams")
        summary(
            args,
            {
                "streams": report.streams,
                "events": report.events,
                "broken": len(report.breaks),
                "anchors_checked": report.anchors,
                "last_anchor": _time(report.last_anchor),
                "anchor_macs": _key_state(report, key),
                "seconds": round(report.seconds, 3),
            },
        )
        return 4 if report.breaks else 0

    return asyncio.run(main())


def cmd_anchor(args: argparse.Namespace) -> int:
    scan_scope(tenant_id=args.tenant)

    async def main() -> int:
        registry, key = await _open(args)
        try:
            store = await registry.event_store()
            with progress(args, None, "reading stream heads") as bar:
                report: AnchorReport = await anchor_spine(
                    store, tenant_id=args.tenant, key=key, progress=bar.advance
                )
        except ConcurrencyError as exc:
            err(
                f"another anchor run kept appending to {exc.stream_id}: nothing more was "
                "anchored there; run `engines audit anchor` again"
            )
            return 1
        finally:
            await registry.aclose()
        rows = [
            {
                "anchor_stream": a.anchor_stream,
                "heads": a.heads,
                "seqs": "-" if a.first_seq is None else f"{a.first_seq}..{a.last_seq}",
                "keyed": a.keyed,
            }
            for a in report.anchored
        ]
        emit(args, rows, columns=ANCHORED_COLUMNS, title="anchored")
        for b in report.broken:
            err(f"not anchored, does not verify: {b}")
        summary(
            args,
            {
                "streams": report.streams,
                "events": report.events,
                "heads_anchored": sum(a.heads for a in report.anchored),
                "broken": len(report.broken),
                "seconds": round(report.seconds, 3),
            },
        )
        return 4 if report.broken else 0

    return asyncio.run(main())


def register(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``verify`` and ``anchor`` under ``engines audit`` (made by :mod:`.telemetry`)."""
    v = asub.add_parser(
        "verify",
        help="verify every stream's chain from the genesis, and against the anchors",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(v)
    v.add_argument("--tenant", help="only this tenant's streams")
    v.add_argument("--stream", help="only this stream (and its anchored head)")
    add_format(v)
    v.set_defaults(func=cmd_verify)
    a = asub.add_parser(
        "anchor",
        help="record the stream heads that moved since the last anchor (run it periodically)",
        epilog=ANCHOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(a)
    a.add_argument("--tenant", help="only this tenant's streams")
    add_format(a)
    a.set_defaults(func=cmd_anchor)
