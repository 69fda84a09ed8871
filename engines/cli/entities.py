"""``engines <domain> list|show|history``: what a versioned-entity view holds, as
tables for an operator, or with ``--format json|jsonl`` the view's records whole. One
function serves every domain built on :mod:`commands.entities`; a domain's CLI group is
one call of :func:`entity_group`."""

from __future__ import annotations

import argparse
from typing import Any

from engines.cli.common import add_common, err, positive_int, settings_of, with_runtime
from engines.cli.output import add_format, clip, emit, emit_record, is_table
from engines.runtime import Runtime
from projections.entities import LATEST, VERSION, latest_key
from projections.views import Filter, ViewQuery, ViewRecord
from spine.entities import EntityKind
from spine.errors import NotFound

SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _summary(record: ViewRecord, body_fields: tuple[str, ...]) -> str:
    return clip({name: record.data.get(name) for name in body_fields if name in record.data})


def _fields(record: ViewRecord) -> dict[str, Any]:
    """One record for ``show``: its scope, version and key, then every data field."""
    head = {
        "key": record.key,
        "version": record.version,
        "user": record.scope.user_id,
        "surface": record.scope.surface_id,
        "project": record.scope.project_id,
    }
    return {**head, **{f"data.{k}": v for k, v in record.data.items()}}


def entity_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    command: str,
    kind: EntityKind,
    view: str,
    body_fields: tuple[str, ...],
) -> None:
    """Add ``engines <command> list|show|history`` over ``view``."""
    path = kind.path
    columns = (*path, "version", "user", "surface", "body")

    def query(
        args: argparse.Namespace, where: tuple[Filter, ...], order: str, desc: bool
    ) -> ViewQuery:
        return ViewQuery(
            tenant_id=args.tenant,
            mode=settings_of(args).mode,
            user_id=args.user,
            where=where,
            order_by=order,
            descending=desc,
            limit=args.limit,
        )

    def row(args: argparse.Namespace, record: ViewRecord, version: int) -> dict[str, Any]:
        if not is_table(args):
            return record.model_dump(mode="json")
        return {
            **{name: record.data.get(name) for name in path},
            "version": version,
            "user": record.scope.user_id,
            "surface": record.scope.surface_id,
            "deleted": "deleted" if record.data.get("deleted") else None,
            "body": _summary(record, body_fields),
        }

    def cmd_list(args: argparse.Namespace) -> int:
        async def work(rt: Runtime) -> int:
            where = (Filter(field="entry", value=LATEST),)
            page = await rt.view_of(view).query(query(args, where, "updated_at", True))
            emit(args, (row(args, r, r.version) for r in page.items), columns=columns)
            if page.next_cursor:
                err(f"(more than {args.limit}; raise --limit)")
            return 0

        return with_runtime(args, work)

    def path_of(args: argparse.Namespace) -> list[str]:
        return [getattr(args, f"path_{name}") for name in path]

    def stream_of(args: argparse.Namespace) -> str:
        from spine.events import Scope

        scope = Scope(tenant_id=args.tenant, mode=settings_of(args).mode)
        return kind.stream_id(scope, path_of(args))

    def cmd_show(args: argparse.Namespace) -> int:
        async def work(rt: Runtime) -> int:
            record = await rt.view_of(view).get(latest_key(stream_of(args)))
            if record is None:
                raise NotFound(f"{kind.entity} {'/'.join(path_of(args))!r} not found")
            if is_table(args):
                emit_record(args, _fields(record))
            else:
                emit_record(args, record.model_dump(mode="json"))
            return 0

        return with_runtime(args, work)

    def cmd_history(args: argparse.Namespace) -> int:
        async def work(rt: Runtime) -> int:
            where = (
                Filter(field="entry", value=VERSION),
                Filter(field="stream_id", value=stream_of(args)),
            )
            page = await rt.view_of(view).query(query(args, where, "seq", False))
            if not page.items:
                raise NotFound(f"{kind.entity} {'/'.join(path_of(args))!r} not found")
            history = (*path, "version", "user", "surface", "deleted", "body")
            rows = (row(args, r, int(r.data["seq"])) for r in page.items)
            emit(args, rows, columns=history)
            if page.next_cursor:
                err(f"(more than {args.limit}; raise --limit)")
            return 0

        return with_runtime(args, work)

    group = sub.add_parser(command, help=f"the {kind.entity} view")
    gsub = group.add_subparsers(dest=f"{command}_command", required=True)
    gl = gsub.add_parser("list", help=f"a tenant's {kind.entity}s, most recently updated first")
    gs = gsub.add_parser("show", help=f"one {kind.entity} as the view holds it")
    gh = gsub.add_parser("history", help=f"one {kind.entity}'s versions, oldest first")
    for sp in (gl, gs, gh):
        add_common(sp)
        add_format(sp)
        sp.add_argument("--tenant", required=True)
    for sp in (gs, gh):
        for name in path:  # one positional each: argparse cannot show a tuple metavar
            sp.add_argument(f"path_{name}", metavar=name.upper(), help=name)
    for sp in (gl, gh):
        sp.add_argument("--user", default=None, help="only this user's records")
        sp.add_argument("--limit", type=positive_int, default=50)
    gl.set_defaults(func=cmd_list)
    gs.set_defaults(func=cmd_show, user=None)
    gh.set_defaults(func=cmd_history)
