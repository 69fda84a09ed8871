"""``engines audit query``: the audit view (audit, safety, budget and strategy-lock
events) for an operator or auditor, as a table, or for other tools as JSON
(``--format json``: one array; ``jsonl``: one event per line, as ``GET /audit`` answers).

A query names one tenant (no view query ever mixes tenants); ``--user``, ``--run``,
``--type``, ``--since`` and ``--until`` narrow it. Oldest first; ``--limit`` caps the
lines (the table says when there were more).
"""

from __future__ import annotations

import argparse
from typing import Any

from commands.times import utc_text
from engines.cli import audit
from engines.cli.common import add_common, err, positive_int, with_runtime
from engines.cli.output import add_format, clip, emit, format_of, is_table
from engines.http.telemetry import AUDIT_VIEW, event_out
from engines.runtime import Runtime
from projections.telemetry import AUDITED_FAMILIES, ORDER, index_query
from projections.views import ViewRecord
from spine.events import Scope

PAGE = 1000


def _time(text: str) -> str:
    try:
        return utc_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text[:64]!r} {exc}") from None


COLUMNS = ("recorded_at", "event_type", "user", "run", "step", "payload")


def _row(args: argparse.Namespace, r: ViewRecord) -> dict[str, Any]:
    if not is_table(args):
        return event_out(r)  # as GET /audit answers it
    d = r.data
    return {
        "recorded_at": d[ORDER],
        "event_type": d["event_type"],
        "user": d.get("user_id"),
        "run": d.get("run_id"),
        "step": d.get("step_id"),
        "payload": clip(d["payload"]),
    }


def cmd_query(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        # checked before any output: a bad tenant or user is refused, not half a table
        scope = Scope(tenant_id=args.tenant, mode=rt.settings.mode, user_id=args.user)
        view = rt.view_of(AUDIT_VIEW)
        streamed = format_of(args) == "jsonl"  # each page as it comes; else one table
        kept: list[ViewRecord] = []
        cursor: str | None = None
        left = args.limit
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
            if streamed:
                emit(args, (_row(args, r) for r in page.items))
            else:
                kept.extend(page.items)
            left -= len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        if not streamed:
            emit(args, (_row(args, r) for r in kept), columns=COLUMNS)
        if cursor is not None:
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
    add_format(q)
    q.add_argument("--limit", type=positive_int, default=1000)
    q.set_defaults(func=cmd_query)
    audit.register(asub)
