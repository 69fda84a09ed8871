"""``engines budgets``: what the budget view holds, as tables for an operator.

``list`` a tenant's budgets, ``show`` one budget's totals, ``ledger`` its lines (oldest
first). Amounts are shown in major units at each budget's scale; ``--format json|jsonl``
prints the view's records as stored (amounts in minor units, with their scale).
"""

from __future__ import annotations

import argparse
from typing import Any

from commands.budget import budget_stream, format_minor
from engines.cli.common import add_common, err, positive_int, with_runtime
from engines.cli.output import add_format, clip, emit, is_table
from engines.runtime import Runtime
from projections.views import Filter, ViewQuery, ViewRecord
from spine.errors import NotFound
from spine.events import Scope

VIEW = "budgets"


def _money(record: ViewRecord, field: str) -> str:
    return format_minor(record.data[field], record.data["scale"])


TOTALS = ("budget_id", "limit", "spent", "remaining", "cur", "version")
LEDGER = ("seq", "kind", "amount", "spent_after", "user", "recorded_at", "reason")


def _totals_row(args: argparse.Namespace, r: ViewRecord) -> dict[str, Any]:
    """A budget's totals: amounts in major units for a table; for json the record's
    data as stored (minor units and scale) with ``remaining_minor`` and the version."""
    d = r.data
    remaining = d["limit_minor"] - d["spent_minor"]
    if not is_table(args):
        return {**d, "remaining_minor": remaining, "version": r.version}
    return {
        "budget_id": d["budget_id"],
        "limit": _money(r, "limit_minor"),
        "spent": _money(r, "spent_minor"),
        "remaining": format_minor(remaining, d["scale"]),
        "cur": d["currency"],
        "version": r.version,
    }


def _ledger_row(args: argparse.Namespace, r: ViewRecord) -> dict[str, Any]:
    d = r.data
    if not is_table(args):
        return dict(d)
    return {
        "seq": d["seq"],
        "kind": d["kind"],
        "amount": _money(r, "amount_minor"),
        "spent_after": _money(r, "spent_minor"),
        "user": d.get("user_id"),
        "recorded_at": d["recorded_at"],
        "reason": clip(d.get("reason")),
    }


def cmd_list(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        page = await rt.view_of(VIEW).query(
            ViewQuery(
                tenant_id=args.tenant,
                mode=rt.settings.mode,
                where=(Filter(field="entry", value="totals"),),
                order_by="budget_id",
                descending=False,
                limit=args.limit,
            )
        )
        emit(args, (_totals_row(args, r) for r in page.items), columns=TOTALS)
        if page.next_cursor:
            err(f"(more than {args.limit}; raise --limit)")
        return 0

    return with_runtime(args, body)


async def _budget(rt: Runtime, args: argparse.Namespace) -> ViewRecord:
    scope = Scope(tenant_id=args.tenant, mode=rt.settings.mode)
    record = await rt.view_of(VIEW).get(budget_stream(scope, args.budget_id))
    if record is None:
        raise NotFound(f"budget {args.budget_id!r} not found in tenant {args.tenant!r}")
    return record


def cmd_show(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        record = await _budget(rt, args)
        emit(args, [_totals_row(args, record)], columns=TOTALS)
        return 0

    return with_runtime(args, body)


def cmd_ledger(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        totals = await _budget(rt, args)
        page = await rt.view_of(VIEW).query(
            ViewQuery(
                tenant_id=args.tenant,
                mode=rt.settings.mode,
                where=(
                    Filter(field="entry", value="ledger"),
                    Filter(field="budget_id", value=totals.data["budget_id"]),
                ),
                order_by="seq",
                descending=False,
                limit=args.limit,
            )
        )
        emit(args, (_ledger_row(args, r) for r in page.items), columns=LEDGER)
        if page.next_cursor:
            err(f"(more than {args.limit}; raise --limit)")
        return 0

    return with_runtime(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bt = sub.add_parser("budgets", help="the budget view")
    bsub = bt.add_subparsers(dest="budgets_command", required=True)
    bl = bsub.add_parser("list", help="a tenant's budgets, by id")
    bs = bsub.add_parser("show", help="one budget's limit, spent and remaining")
    bg = bsub.add_parser("ledger", help="one budget's ledger, oldest first")
    for p in (bl, bs, bg):
        add_common(p)
        add_format(p)
        p.add_argument("--tenant", required=True)
    for p in (bs, bg):
        p.add_argument("budget_id")
    for p in (bl, bg):
        p.add_argument("--limit", type=positive_int, default=50)
    bl.set_defaults(func=cmd_list)
    bs.set_defaults(func=cmd_show)
    bg.set_defaults(func=cmd_ledger)
