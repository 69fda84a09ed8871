"""``engines projections``: checkpoints and lag per projector."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from engines.cli.common import LAB_NOTICE, add_common, err, settings_of
from engines.runtime import bootstrap


def cmd_status(args: argparse.Namespace) -> int:
    async def body() -> int:
        async with bootstrap(settings_of(args), Path(args.data_dir), run_projectors=False) as rt:
            if rt.lab_routes:
                err(LAB_NOTICE)
            print(f"{'projector':<16} {'checkpoint':>12} {'head':>12} {'lag':>10}")
            for runner in rt.runners.values():
                s = await runner.status()
                print(f"{s.name:<16} {s.checkpoint:>12} {s.head:>12} {s.lag:>10}")
        return 0

    return asyncio.run(body())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pj = sub.add_parser("projections", help="projector checkpoints and lag")
    psub = pj.add_subparsers(dest="projections_command", required=True)
    ps = psub.add_parser("status")
    add_common(ps)
    ps.set_defaults(func=cmd_status)
