"""``engines notes``: what the notes view holds, as a table for an operator."""

from __future__ import annotations

import argparse

from engines.cli.common import (
    add_common,
    err,
    positive_int,
    shown,
    with_runtime,
)
from engines.runtime import Runtime
from projections.views import ViewQuery


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
        print(f"{'note_id':<38} {'version':>7} {'user':<12} {'surface':<10} title")
        for r in page.items:
            d = r.data
            print(
                f"{shown(d['note_id']):<38} {r.version:>7} {shown(d.get('user_id')):<12} "
                f"{shown(d.get('surface_id')):<10} {shown(d.get('title', ''))[:60]}"
            )
        if page.next_cursor:
            err(f"(more than {args.limit}; raise --limit)")
        return 0

    return with_runtime(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nt = sub.add_parser("notes", help="the notes view")
    nsub = nt.add_subparsers(dest="notes_command", required=True)
    nl = nsub.add_parser("list", help="a tenant's notes, most recently updated first")
    add_common(nl)
    nl.add_argument("--tenant", required=True)
    nl.add_argument("--user", default=None, help="only this user's notes")
    nl.add_argument("--limit", type=positive_int, default=50)
    nl.set_defaults(func=cmd_list)
