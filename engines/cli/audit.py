"""``engines audit verify`` and ``engines audit anchor``: the spine's integrity.

``verify`` walks every stream in scope from the genesis (seq contiguity, hash chain,
identity) and against the anchors, and lists each broken stream with its first bad
event; exit 4 if any. ``anchor`` records the stream heads that moved since the previous
anchor, per tenant and mode (:mod:`spine.anchors`); run it periodically: what was
appended since the last anchor is protected by its chain only.

``--witness FILE``: ``anchor`` appends each anchor stream's head after the run to FILE
(one JSON line each, :class:`~spine.anchors.WitnessLine`; created 0600, fsynced), and
``verify`` requires every anchor stream to still hold its latest witnessed head. Keep
the file off the stores' machines: what can delete events can delete anchors too.

With ``--format json`` stdout is one document, ``{"summary": {...}, "broken": [...]}``
(``anchor``: ``"anchored"``); with ``jsonl`` the rows, then one ``{"summary": {...}}``
line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from commands.spine_audit import (
    AnchorReport,
    VerifyReport,
    anchor_spine,
    verify_spine,
    verify_stream,
)
from engines.cli.common import add_common, data_dir_of, err, label_lab, settings_of
from engines.cli.output import add_format, emit, format_of, json_bytes, progress, summary
from engines.settings import read_anchor_key
from routing.registry import Registry
from spine.anchors import WitnessLine, latest_witnessed
from spine.errors import ConcurrencyError, InvalidInput, StreamNotFound
from spine.streams import parse_stream_id, scan_scope

BROKEN_COLUMNS = ("stream", "first_bad_seq", "event_id", "problem")
ANCHORED_COLUMNS = ("anchor_stream", "heads", "seqs", "keyed")

VERIFY_EPILOG = """\
exit status: 0 every stream verifies; 4 a stream is broken (each listed with its first
bad event), or an anchor stream lacks its witnessed head (anchors removed or rolled
back); 3 no such stream (--stream), or a witness file that cannot be read; 2 the routes
file or the anchor key cannot serve; 1 a store does not answer.
Events appended since the last `engines audit anchor` are protected by their hash
chain only: a removed tail or stream shows only against an anchor, and removed anchors
only against a witness file kept elsewhere (--witness).
"""

ANCHOR_EPILOG = """\
exit status: 0 anchored; 4 some streams do not verify (listed; not anchored, the others
are); 3 a witness file that cannot be appended to (nothing anchored); 2 the routes file
or the anchor key cannot serve; 1 a store does not answer, or another anchor run kept
appending (run it again).
"""

#: The longest line a witness file may hold (one is about 400 bytes).
WITNESS_LINE_BYTES = 4096


def _open_regular(path: Path, flags: int, what: str) -> int:
    """``path`` opened with ``flags``, refused (:class:`InvalidInput`) unless it is a
    regular file: never blocks on a FIFO nor reads a device."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InvalidInput(f"{what} {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInput(f"{what} {path}: not a regular file")
    return fd


def read_witness(path: Path) -> dict[str, WitnessLine]:
    """Each anchor stream's latest head in the witness file ``path``; a line that is not
    a witness line is refused (:class:`InvalidInput`, naming it)."""
    lines = []
    with os.fdopen(_open_regular(path, os.O_RDONLY, "witness file"), "rb") as file:
        number = 0
        while raw := file.readline(WITNESS_LINE_BYTES + 1):
            number += 1
            if len(raw) > WITNESS_LINE_BYTES:
                raise InvalidInput(
                    f"witness file {path} line {number}: over {WITNESS_LINE_BYTES} bytes"
                )
            if not raw.strip():
                continue
            try:
                lines.append(WitnessLine.model_validate_json(raw))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise InvalidInput(
                    f"witness file {path} line {number}: not a witness line "
                    f"({where + ': ' if where else ''}{first['msg']})"
                ) from None
    return latest_witnessed(lines)


def open_witness(path: Path) -> int:
    """The witness file, opened to append (created 0600), before anything is anchored."""
    return _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "witness file")


def write_witness(fd: int, path: Path, lines: Sequence[WitnessLine]) -> None:
    """Append ``lines`` to the witness file open as ``fd``, fsynced (its directory too,
    so a new file survives a crash), and close it."""
    try:
        data = b"".join(line.model_dump_json().encode() + b"\n" for line in lines)
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    folder = os.open(path.parent if str(path.parent) else Path("."), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _document(
    args: argparse.Namespace,
    rows_key: str,
    rows: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Any],
) -> None:
    """json: one document ``{"summary": figures, rows_key: rows}``; jsonl: the rows,
    then one ``{"summary": figures}`` line. Both on stdout."""
    if format_of(args) == "json":
        text = json_bytes({"summary": dict(figures), rows_key: list(rows)}, indent=True)
    else:
        lines = [json_bytes(dict(row)) for row in rows] + [json_bytes({"summary": dict(figures)})]
        text = b"\n".join(lines)
    sys.stdout.write(text.decode() + "\n")
    sys.stdout.flush()


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
    witnessed = None if args.witness is None else read_witness(Path(args.witness))

    async def main() -> int:
        registry, key = await _open(args)
        try:
            store = await registry.event_store()
            if args.stream is not None:
                try:
                    report = await verify_stream(store, args.stream, key=key, witnessed=witnessed)
                except StreamNotFound:
                    raise InvalidInput(
                        f"no stream {args.stream!r}: it holds no event, and no anchor names it"
                    ) from None
            else:
                with progress(args, None, "verifying the spine") as bar:
                    report = await verify_spine(
                        store,
                        tenant_id=args.tenant,
                        key=key,
                        witnessed=witnessed,
                        progress=bar.advance,
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
        figures: dict[str, Any] = {
            "streams": report.streams,
            "events": report.events,
            "broken": len(report.breaks),
            "anchors_checked": report.anchors,
            "last_anchor": _time(report.last_anchor),
            "anchor_macs": _key_state(report, key),
        }
        if witnessed is not None:
            figures["witnessed"] = report.witnessed
        figures["seconds"] = round(report.seconds, 3)
        if format_of(args) != "table":
            _document(args, "broken", rows, {**figures, "warnings": report.warnings})
        else:
            if rows:
                emit(args, rows, columns=BROKEN_COLUMNS, title="broken streams")
            summary(args, figures)
        return 4 if report.breaks else 0

    return asyncio.run(main())


def cmd_anchor(args: argparse.Namespace) -> int:
    scan_scope(tenant_id=args.tenant)
    witness = None if args.witness is None else Path(args.witness)

    async def main() -> int:
        registry, key = await _open(args)
        try:
            witness_fd = None if witness is None else open_witness(witness)
            try:
                store = await registry.event_store()
                with progress(args, None, "reading stream heads") as bar:
                    report: AnchorReport = await anchor_spine(
                        store, tenant_id=args.tenant, key=key, progress=bar.advance
                    )
                lines = [a.witness for a in report.anchored if a.witness is not None]
                if witness is not None and witness_fd is not None:
                    fd, witness_fd = witness_fd, None
                    write_witness(fd, witness, lines)
            finally:
                if witness_fd is not None:
                    os.close(witness_fd)
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
        for b in report.broken:
            err(f"not anchored, does not verify: {b}")
        figures: dict[str, Any] = {
            "streams": report.streams,
            "events": report.events,
            "heads_anchored": sum(a.heads for a in report.anchored),
            "broken": len(report.broken),
        }
        if witness is not None:
            figures["witnessed"] = len(lines)
        figures["seconds"] = round(report.seconds, 3)
        if format_of(args) != "table":
            left_out = [
                {
                    "stream": b.stream_id,
                    "first_bad_seq": b.seq,
                    "event_id": b.event_id,
                    "problem": b.problem,
                }
                for b in report.broken
            ]
            _document(args, "anchored", rows, {**figures, "left_out": left_out})
        else:
            emit(args, rows, columns=ANCHORED_COLUMNS, title="anchored")
            summary(args, figures)
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
    v.add_argument(
        "--witness",
        metavar="FILE",
        help="a witness file `audit anchor --witness` writes: every anchor stream must "
        "still hold its latest witnessed head (else: anchors removed or rolled back, exit 4)",
    )
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
    a.add_argument(
        "--witness",
        metavar="FILE",
        help="append each anchor stream's head to FILE (JSON lines, 0600, fsynced); keep "
        "it off the stores' machines, and pass it to `audit verify --witness`",
    )
    add_format(a)
    a.set_defaults(func=cmd_anchor)
