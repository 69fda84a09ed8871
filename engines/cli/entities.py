"""``engines <domain> list|show|history``: what a versioned-entity view holds, as
tables for an operator. One function serves every domain built on
:mod:`commands.entities`; a domain's CLI group is one call of :func:`entity_group`."""

from __future__ import annotations

import argparse

import orjson

from engines.cli.common import (
    add_common,
    err,
    positive_int,
    settings_of,
    shown,
    with_runtime,
)
from engines.runtime import Runtime
from projections.entities import LATEST, VERSION, latest_key
from projections.views import Filter, ViewQuery, ViewRecord
from spine.entities import EntityKind
from spine.errors import NotFound

SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _summary(record: ViewRecord, body_fields: tuple[str, ...], width: int = 60) -> str:
    body = {name: record.data.get(name) for name in body_fields if name in record.data}
    return shown(orjson.dumps(body).decode())[:width]


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
    columns = "  ".join(f"{name:<24}" for name in path)

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

    def row(record: ViewRecord, version: int) -> str:
        ids = "  ".join(f"{shown(record.data.get(name)):<24}" for name in path)
        return (
            f"{ids}  {version:>7}  {shown(record.scope.user_id):<12} "
            f"{shown(record.scope.surface_id):<10} {_summary(record, body_fields)}"
        )

    def cmd_list(args: argparse.Namespace) -> int:
        async def work(rt: Runtime) -> int:
            where = (Filter(field="entry", value=LATEST),)
            page = await rt.view_of(view).query(query(args, where, "updated_at", True))
            print(f"{columns}  {'version':>7}  {'user':<12} {'surface':<10} body")
            for r in page.items:
                print(row(r, r.version))
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
            print(orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
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
            print(f"{columns}  {'version':>7}  {'user':<12} {'surface':<10} body")
            for r in page.items:
                mark = " (deleted)" if r.data.get("deleted") else ""
                print(row(r, int(r.data["seq"])) + mark)
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
