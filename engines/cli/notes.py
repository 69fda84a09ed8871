"""``engines notes``: what the notes view holds, as a table for an operator (or JSON for
a script: ``--format json|jsonl`` prints each note whole)."""

from __future__ import annotations

import argparse
from typing import Any

from engines.cli.common import add_common, err, positive_int, with_runtime
from engines.cli.output import add_format, clip, emit, is_table
from engines.runtime import Runtime
from projections.views import ViewQuery, ViewRecord

COLUMNS = ("note_id", "version", "user", "surface", "title")


def _row(args: argparse.Namespace, r: ViewRecord) -> dict[str, Any]:
    d = r.data
    if not is_table(args):
        return {**d, "version": r.version}
    return {
        "note_id": d["note_id"],
        "version": r.version,
        "user": d.get("user_id"),
        "surface": d.get("surface_id"),
        "title": clip(d.get("title", "")),
    }


def cmd_list(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        page = await rt.view_of("notes").query(
            ViewQuery(
                tenant_id=args.tenant,
                mode=rt.settings.mode,
                user_id=args.user,
                order_by="updated_at",
                limit=args.limit,
            )
        )
        emit(args, (_row(args, r) for r in page.items), columns=COLUMNS)
        if page.next_cursor:
            err(f"(more than {args.limit}; raise --limit)")
        return 0

    return with_runtime(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nt = sub.add_parser("notes", help="the notes view")
    nsub = nt.add_subparsers(dest="notes_command", required=True)
    nl = nsub.add_parser("list", help="a tenant's notes, most recently updated first")
    add_common(nl)
    add_format(nl)
    nl.add_argument("--tenant", required=True)
    nl.add_argument("--user", default=None, help="only this user's notes")
    nl.add_argument("--limit", type=positive_int, default=50)
    nl.set_defaults(func=cmd_list)
