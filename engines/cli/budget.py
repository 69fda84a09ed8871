"""``engines budgets``: what the budget view holds, as tables for an operator.

``list`` a tenant's budgets, ``show`` one budget's totals, ``ledger`` its lines (oldest
first). Amounts are shown in major units at each budget's scale.
"""

from __future__ import annotations

import argparse

from commands.budget import budget_stream, format_minor
from engines.cli.common import (
    add_common,
    err,
    positive_int,
    shown,
    with_runtime,
)
from engines.runtime import Runtime
from projections.views import Filter, ViewQuery, ViewRecord
from spine.errors import NotFound
from spine.events import Scope

VIEW = "budgets"


def _money(record: ViewRecord, field: str) -> str:
    return format_minor(record.data[field], record.data["scale"])


TOTALS_HEAD = f"{'budget_id':<24} {'limit':>16} {'spent':>16} {'remaining':>16} {'cur':<4} version"


def _totals_row(r: ViewRecord) -> str:
    d = r.data
    remaining = format_minor(d["limit_minor"] - d["spent_minor"], d["scale"])
    return (
        f"{shown(d['budget_id']):<24} {_money(r, 'limit_minor'):>16} "
        f"{_money(r, 'spent_minor'):>16} {remaining:>16} {shown(d['currency']):<4} {r.version}"
    )


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
        print(TOTALS_HEAD)
        for r in page.items:
            print(_totals_row(r))
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
        print(TOTALS_HEAD)
        print(_totals_row(record))
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
        print(
            f"{'seq':>6} {'kind':<14} {'amount':>16} {'spent after':>16} {'user':<12} "
            f"{'recorded_at':<28} reason"
        )
        for r in page.items:
            d = r.data
            print(
                f"{d['seq']:>6} {d['kind']:<14} {_money(r, 'amount_minor'):>16} "
                f"{_money(r, 'spent_minor'):>16} {shown(d.get('user_id')):<12} "
                f"{d['recorded_at']:<28} {shown(d.get('reason'))[:60]}"
            )
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
        p.add_argument("--tenant", required=True)
    for p in (bs, bg):
        p.add_argument("budget_id")
    for p in (bl, bg):
        p.add_argument("--limit", type=positive_int, default=50)
    bl.set_defaults(func=cmd_list)
    bs.set_defaults(func=cmd_show)
    bg.set_defaults(func=cmd_ledger)
