"""``engines audit query``: the audit view (audit, safety, budget and strategy-lock
events) for an operator or auditor, as a table or as JSON lines for other tools.

A query names one tenant (no view query ever mixes tenants); ``--user``, ``--run``,
``--type``, ``--since`` and ``--until`` narrow it. Oldest first; ``--limit`` caps the
lines (the table says when there were more).
"""

from __future__ import annotations

import argparse

import orjson

from commands.times import utc_text
from engines.cli import audit
from engines.cli.common import add_common, err, positive_int, shown, with_runtime
from engines.http.telemetry import AUDIT_VIEW, event_out
from engines.runtime import Runtime
from projections.telemetry import AUDITED_FAMILIES, ORDER, index_query
from spine.events import Scope

PAGE = 1000


def _time(text: str) -> str:
    try:
        return utc_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text[:64]!r} {exc}") from None


def _summary(payload: dict[str, object], width: int = 60) -> str:
    text = orjson.dumps(payload).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_query(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        # checked before any output: a bad tenant or user is refused, not half a table
        scope = Scope(tenant_id=args.tenant, mode=rt.settings.mode, user_id=args.user)
        view = rt.view_of(AUDIT_VIEW)
        cursor: str | None = None
        left = args.limit
        if args.format == "table":
            print(
                f"{'recorded_at':<28} {'event_type':<30} {'user':<16} {'run':<16} "
                f"{'step':<12} payload"
            )
        while left > 0:
            page = await view.query(
                index_query(
                    scope,
                    user_id=scope.user_id,
                    grants=None,
                    equal={"run_id": args.run, "event_type": args.type, "family": args.family},
                    since=args.since,
                    until=args.until,
                    limit=min(left, PAGE),
                    cursor=cursor,
                )
            )
            for r in page.items:
                d = r.data
                if args.format == "jsonl":
                    print(orjson.dumps(event_out(r)).decode())
                else:
                    print(
                        f"{d[ORDER]:<28} {shown(d['event_type']):<30} "
                        f"{shown(d.get('user_id')):<16} {shown(d.get('run_id')):<16} "
                        f"{shown(d.get('step_id')):<12} {shown(_summary(d['payload']))}"
                    )
            left -= len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return 0
        if args.format == "table":
            err(f"(more than {args.limit}; raise --limit)")
        return 0

    return with_runtime(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    au = sub.add_parser("audit", help="the audit view")
    asub = au.add_subparsers(dest="audit_command", required=True)
    q = asub.add_parser(
        "query", help="a tenant's audit, safety, budget and strategy-lock events, oldest first"
    )
    add_common(q)
    q.add_argument("--tenant", required=True, help="the tenant (a query never mixes tenants)")
    q.add_argument("--user", help="only this user's events")
    q.add_argument("--run", help="only this run's events")
    q.add_argument("--type", help="only this event type, e.g. safety.decision")
    q.add_argument("--family", choices=sorted(AUDITED_FAMILIES), help="only this family")
    q.add_argument("--since", type=_time, help="recorded at or after this time (ISO 8601)")
    q.add_argument("--until", type=_time, help="recorded before this time (ISO 8601)")
    q.add_argument("--format", choices=("table", "jsonl"), default="table")
    q.add_argument("--limit", type=positive_int, default=1000)
    q.set_defaults(func=cmd_query)
    audit.register(asub)
