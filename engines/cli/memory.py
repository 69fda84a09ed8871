"""``engines memory``: what the session memory view holds, as tables for an operator.

``list`` shows keys (never values) of a tenant, optionally of one user and session;
``show`` one key's record and value (a ``field  value`` table, or one JSON object with
``--format json|jsonl``). Expired and deleted keys are absent, as over HTTP.
"""

from __future__ import annotations

import argparse
from typing import Any

from commands.memory import memory_stream
from engines.cli.common import add_common, err, positive_int, with_runtime
from engines.cli.output import add_format, emit, emit_record, is_table
from engines.runtime import Runtime
from projections.memory import record_key
from projections.views import Filter, ViewQuery, ViewRecord
from spine.codec import timestamp_text
from spine.errors import NotFound
from spine.events import Scope

VIEW = "memory"


def _expires(record: ViewRecord) -> str | None:
    """When the key expires (none: a table shows ``-``, JSON ``null``)."""
    return timestamp_text(record.expires_at) if record.expires_at else None


LIST = ("user", "session", "project", "key", "version", "expires_at", "updated_at")


def _listed(args: argparse.Namespace, r: ViewRecord) -> dict[str, Any]:
    """A key's record without its value (a listing never shows values)."""
    d = r.data
    if not is_table(args):
        return {
            **{k: v for k, v in d.items() if k != "value"},
            "version": r.version,
            "expires_at": _expires(r),
        }
    return {
        "user": d["user_id"],
        "session": d["session_id"],
        "project": d["project_id"],
        "key": d["key"],
        "version": r.version,
        "expires_at": _expires(r),
        "updated_at": d["updated_at"],
    }


def cmd_list(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        where = (Filter(field="session_id", value=args.session),) if args.session else ()
        page = await rt.view_of(VIEW).query(
            ViewQuery(
                tenant_id=args.tenant,
                mode=rt.settings.mode,
                user_id=args.user,
                project_id=args.project,
                where=where,
                order_by="updated_at",
                limit=args.limit,
            )
        )
        emit(args, (_listed(args, r) for r in page.items), columns=LIST)
        if page.next_cursor:
            err(f"(more than {args.limit}; raise --limit)")
        return 0

    return with_runtime(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    async def body(rt: Runtime) -> int:
        scope = Scope(
            tenant_id=args.tenant,
            mode=rt.settings.mode,
            user_id=args.user,
            project_id=args.project,
        )
        stream = memory_stream(scope, args.session)
        record = await rt.view_of(VIEW).get(record_key(stream, args.key))
        if record is None:
            raise NotFound(f"key {args.key!r} of {stream} not found (or expired, or deleted)")
        d = record.data
        emit_record(
            args,
            {
                "stream": stream,
                "key": d["key"],
                "version": record.version,
                "surface": d["surface_id"],
                "ttl_seconds": d["ttl_seconds"],
                "expires_at": _expires(record),
                "created_at": d["created_at"],
                "updated_at": d["updated_at"],
                "value": d["value"],  # a table shows it as compact JSON
            },
        )
        return 0

    return with_runtime(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mm = sub.add_parser("memory", help="the session memory view")
    msub = mm.add_subparsers(dest="memory_command", required=True)
    ml = msub.add_parser("list", help="a tenant's live keys, most recently updated first")
    add_common(ml)
    add_format(ml)
    ml.add_argument("--tenant", required=True)
    ml.add_argument("--user", default=None, help="only this user's keys")
    ml.add_argument("--session", default=None, help="only this session's keys")
    ml.add_argument("--project", default=None, help="only keys of this project")
    ml.add_argument("--limit", type=positive_int, default=50)
    ml.set_defaults(func=cmd_list)
    ms = msub.add_parser("show", help="one key of a session: its record and value")
    add_common(ms)
    add_format(ms)
    ms.add_argument("--tenant", required=True)
    ms.add_argument("--user", required=True)
    ms.add_argument("--session", required=True)
    ms.add_argument("--key", required=True)
    ms.add_argument("--project", default=None, help="the session's project, if it has one")
    ms.set_defaults(func=cmd_show)
