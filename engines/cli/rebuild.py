"""``engines projections rebuild``: a view rebuilt from the spine (:mod:`projections.rebuild`).

Blue/green by default: into a new physical name on the live route's backend, verified
against a fold of the spine, then the routes-file change printed (or applied with
``--switch``). ``--in-place`` empties the live view and rebuilds it there."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from engines.cli.common import data_dir_of, err, label_lab, positive_int, settings_of
from engines.cli.output import Tracker, add_format, format_of, progress, summary
from engines.routes_edit import apply_change, route_change
from engines.runtime import check_settings
from engines.settings import Settings
from projections.projector import Projector
from projections.rebuild import SAVE_SECONDS, Rebuild, Verification, default_name, rebuild_consumer
from projections.views import ViewStore
from routing.config import Connections, Route, RoutesFile, SqliteConnection
from routing.registry import Registry
from spine.errors import IntegrityError, InvalidInput
from spine.upcasting import Upcasters


def _projectors() -> dict[str, Projector]:
    from engines.domains import DOMAINS

    return {p.name: p for d in DOMAINS for p in d.projectors}


def plan(names: list[str]) -> dict[str, tuple[list[Projector], list[str]]]:
    """Per view kind the named projectors write: every projector writing it (the unit
    of a rebuild), and the names added to those asked for."""
    known = _projectors()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(
            f"no projector {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"
        )
    kinds = sorted({known[n].resource_kind for n in names})
    out: dict[str, tuple[list[Projector], list[str]]] = {}
    for kind in kinds:
        every = [p for p in known.values() if p.resource_kind == kind]
        out[kind] = (every, [p.name for p in every if p.name not in names])
    return out


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _confirm(args: argparse.Namespace, kind: str, name: str) -> None:
    what = f"the live view {kind} ({name})" + (f" of tenant {args.tenant}" if args.tenant else "")
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(
            f"--in-place empties {what} while it serves; pass --yes to do so without a terminal"
        )
    answer = input(f"--in-place empties {what}; readers see it refill. Go on? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise InvalidInput("not confirmed: nothing done")


@contextlib.asynccontextmanager
async def scratch_views(kind: str) -> AsyncIterator[ViewStore]:
    """An empty view store for a verification fold: a lab SQLite file in a temporary
    directory, routed by a registry of its own and removed afterwards (never served)."""
    with tempfile.TemporaryDirectory(prefix="engines-rebuild-fold-") as tmp:
        config = RoutesFile(
            mode="lab",
            connections=Connections(sqlite=SqliteConnection(path="fold.db", synchronous="NORMAL")),
            routes={kind: Route(backend="sqlite", name="fold", lab=True)},
        )
        registry = Registry(config, Path(tmp))
        try:
            yield await registry.view_store(kind)
        finally:
            await registry.aclose()


def _tracker_feed(bars: dict[str, Tracker]) -> Callable[[str, int], None]:
    def tell(phase: str, done: int) -> None:
        bar = bars.get("verify" if phase == "fold" else "rebuild")
        if bar is not None and done > bar.completed:
            bar.advance(done - bar.completed)

    return tell


async def _one(
    args: argparse.Namespace,
    settings: Settings,
    data_dir: Path,
    kind: str,
    projectors: list[Projector],
    added: list[str],
) -> tuple[dict[str, Any], bool]:
    registry = Registry(settings, data_dir)
    label_lab(registry)
    try:
        resolved = registry.resolve(kind)
        live = resolved.route.name
        if args.in_place:
            target = live
        else:
            target = args.into or default_name(live)
            if target == live:
                raise InvalidInput(
                    f"{target} is the live name of {kind}: rebuild it with --in-place, or "
                    "name another with --into"
                )
        views = await (
            registry.view_store(kind) if args.in_place else registry.view_store_named(kind, target)
        )
        for projector in projectors:
            await views.declare(projector.shapes)
        spine = await registry.event_store()
        feed = await registry.feed()
        checkpoints = await registry.checkpoint_store()
        parking = await registry.parking_store()
        bars: dict[str, Tracker] = {}
        rebuild = Rebuild(
            projectors,
            spine=spine,
            views=views,
            parking=parking,
            feed=feed,
            checkpoints=checkpoints,
            consumer=rebuild_consumer(kind, target),
            tenant_id=args.tenant,
            upcasters=Upcasters(),
            batch_size=args.batch_size,
            progress=_tracker_feed(bars),
            save_seconds=args.save_seconds,
        )
        resuming = args.resume and await rebuild.has_checkpoint()
        if args.in_place:
            if not resuming:
                _confirm(args, kind, live)
                purged = await views.purge(tenant_id=args.tenant)
                err(f"{kind}: purged {purged} record(s) of {resolved.route.backend}:{live}")
        elif not args.resume:  # resumed, or applied again over (harmless: idempotent)
            async for _ in views.records(tenant_id=None, batch_size=1):
                raise InvalidInput(
                    f"{resolved.route.backend}:{target} holds records already: resume a "
                    "rebuild into it with --resume, or name another with --into"
                )
        with progress(args, None, f"rebuilding {kind}") as bar:
            bars["rebuild"] = bar
            report = await rebuild.run(resume=args.resume)
            del bars["rebuild"]
        verification: Verification | None = None
        if args.verify:
            with progress(args, None, f"verifying {kind}") as bar:
                bars["verify"] = bar
                async with scratch_views(kind) as scratch:
                    verification = await rebuild.verify(scratch)
        verified = verification is not None and verification.ok
        row: dict[str, Any] = {
            "projectors": [p.name for p in projectors],
            "added": added,
            "kind": kind,
            "backend": resolved.route.backend,
            "live": live,
            "into": target,
            "in_place": bool(args.in_place),
            "tenant": args.tenant,
            "resumed": report.resumed_from is not None,
            "events": report.events,
            "drained": report.drained,
            "streams": report.streams,
            "seconds": round(report.seconds, 3),
            "events_per_second": round(report.events / report.seconds) if report.seconds else 0,
            "peak_rss_mb": peak_rss_mb(),
            "verified": verified if verification is not None else None,
            "records": verification.view.records if verification else None,
            "checksum": verification.view.hex if verification else None,
            "fold_records": verification.fold.records if verification else None,
            "fold_checksum": verification.fold.hex if verification else None,
            "parked": [f"{p.projector} {p.stream_id} seq {p.seq}" for p in verification.parked]
            if verification
            else [],
            "switched": False,
            "routes_change": None,
        }
        if verification is not None and not verification.ok:
            for p in verification.not_parked_live:
                err(
                    f"{kind}: the rebuild parked {p.stream_id} seq {p.seq} ({p.projector}): "
                    f"{p.error}; the live projector has not"
                )
            return row, False
        await rebuild.forget()
        if not args.in_place:
            await _switch(args, row, rebuild, report.positions)
        return row, True
    finally:
        await registry.aclose()


async def _switch(
    args: argparse.Namespace, row: dict[str, Any], rebuild: Rebuild, positions: dict[str, str]
) -> None:
    kind, target = row["kind"], row["into"]
    if not args.routes:
        row["routes_change"] = f"routes.{kind}.name: {row['live']} -> {target}"
        return
    change = route_change(Path(args.routes), kind, target)
    row["routes_change"] = change.diff
    if not args.switch:
        return
    # left for the service that starts on the new name: if the file cannot be written,
    # no service ever starts on it, and the hand-over is never taken
    await rebuild.hand_over(positions, target)
    backup = apply_change(change)
    row["switched"] = True
    err(
        f"{kind}: routes file {args.routes} now names {target} (the old one is {backup.name}); "
        "restart the service to serve the new view"
    )


def cmd_rebuild(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    data_dir = data_dir_of(args, settings)
    check_settings(settings, data_dir)
    if args.switch and args.tenant:
        raise InvalidInput("--switch with --tenant would serve a view of one tenant only")
    if args.switch and not args.routes:
        raise InvalidInput("--switch edits the routes file: name it with --routes")
    if args.switch and args.in_place:
        raise InvalidInput("--in-place rebuilds the live name: there is nothing to switch")
    if args.switch and not args.verify:
        raise InvalidInput("--switch needs the verification (drop --no-verify)")
    kinds = plan(args.names)
    if args.into and len(kinds) > 1:
        raise InvalidInput(
            f"--into names one physical name, and these projectors write {len(kinds)} views"
            f" ({', '.join(kinds)}): rebuild them one at a time"
        )
    return asyncio.run(_main(args, settings, data_dir, kinds))


async def _main(
    args: argparse.Namespace,
    settings: Settings,
    data_dir: Path,
    kinds: dict[str, tuple[list[Projector], list[str]]],
) -> int:
    failed = False
    for kind, (projectors, added) in kinds.items():
        if added:
            err(f"{kind}: rebuilt together with {', '.join(added)} (they write this view too)")
        row, ok = await _one(args, settings, data_dir, kind, projectors, added)
        if format_of(args) == "table":
            _print_table(row)
        else:
            summary(args, row)
        failed |= not ok
    if failed:
        raise IntegrityError(
            "verification failed: the rebuilt view differs from a fold of the spine"
        )
    return 0


def _print_table(row: dict[str, Any]) -> None:
    shown = {k: v for k, v in row.items() if k != "routes_change"}
    summary(argparse.Namespace(format="table"), shown, title=f"rebuild of {row['kind']}")
    change = row["routes_change"]
    if row["switched"] or change is None:
        return
    if row["verified"] is False:
        return
    print(change, end="" if change.endswith("\n") else "\n")


def register(psub: argparse._SubParsersAction[argparse.ArgumentParser], add_common: Any) -> None:
    pr = psub.add_parser(
        "rebuild",
        help="rebuild a view from the spine: blue/green into a new name, or --in-place",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(pr)
    add_format(pr, choices=("table", "json"))
    pr.add_argument("names", nargs="+", metavar="NAME", help="projector(s); see `status`")
    pr.add_argument("--tenant", help="rebuild this tenant's streams only")
    where = pr.add_mutually_exclusive_group()
    where.add_argument("--into", metavar="PHYSICAL_NAME", help="the new physical name")
    where.add_argument("--in-place", action="store_true", help="empty the live view, rebuild it")
    pr.add_argument("--yes", action="store_true", help="--in-place without asking")
    pr.add_argument(
        "--resume", action="store_true", help="go on from a killed rebuild's checkpoint"
    )
    pr.add_argument("--switch", action="store_true", help="write the routes file to the new name")
    pr.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the fold and checksum"
    )
    pr.add_argument("--batch-size", type=positive_int, default=500, help=argparse.SUPPRESS)
    pr.add_argument("--save-seconds", type=float, default=SAVE_SECONDS, help=argparse.SUPPRESS)
    pr.set_defaults(func=cmd_rebuild)
