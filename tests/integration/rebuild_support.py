"""What the rebuild tests share: a deployment on disk (routes file and data directory),
notes and budgets written through the command bus, the CLI run in-process, and a
view's count and checksum."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.budget import DebitBudget, SetLimit
from commands.envelope import Command
from commands.notes import CreateNote, DeleteNote, UpdateNote
from engines.cli import main
from engines.runtime import bootstrap
from engines.settings import Settings, load_settings
from projections.rebuild import Tally, tally
from routing.registry import Registry
from spine.events import Scope

KINDS = ("notes_store", "budget_store")


@dataclass
class Deployment:
    routes: Path
    data_dir: Path

    @property
    def settings(self) -> Settings:
        return load_settings(self.routes)[0]

    def cli(self, *argv: str) -> list[str]:
        return ["--routes", str(self.routes), "--data-dir", str(self.data_dir), *argv]


def write_routes(path: Path, settings: Settings) -> Path:
    text = yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), sort_keys=False)
    path.write_text("# the rebuild test's routes: this comment must survive a switch\n" + text)
    return path


def scope(tenant: str, user: str = "u1") -> Scope:
    return Scope(tenant_id=tenant, mode="lab", user_id=user, surface_id="s1")


async def write_some(
    settings: Settings, data_dir: Path, *, notes: int = 6, tag: str = "n", budgets: int = 2
) -> None:
    """Notes in two tenants (some updated, one deleted) and budgets with debits, every
    projector caught up."""
    async with bootstrap(settings, data_dir, run_projectors=False) as rt:
        for i in range(notes):
            s = scope("t1" if i % 2 else "t2")
            nid = f"{tag}{i}"
            await rt.dispatch(
                Command[CreateNote](scope=s, payload=CreateNote(note_id=nid, title=f"note {i}"))
            )
            if i % 3 == 0:
                payload = UpdateNote(note_id=nid, title=f"note {i} again", tags=["x"])
                await rt.dispatch(Command[UpdateNote](scope=s, payload=payload))
            if i == 1:
                await rt.dispatch(Command[DeleteNote](scope=s, payload=DeleteNote(note_id=nid)))
        for b in range(budgets):
            s = scope("t1")
            bid = f"{tag}b{b}"
            await rt.dispatch(
                Command[SetLimit](
                    scope=s, payload=SetLimit(budget_id=bid, amount_minor=10_000, currency="EUR")
                )
            )
            for d in range(3):
                payload = DebitBudget(budget_id=bid, amount_minor=100 + d, reason="a run")
                await rt.dispatch(Command[DebitBudget](scope=s, payload=payload))
        await rt.catch_up()


async def view_tally(settings: Settings, data_dir: Path, kind: str, name: str) -> Tally:
    registry = Registry(settings, data_dir, create=False)
    try:
        return await tally(await registry.view_store_named(kind, name))
    finally:
        await registry.aclose()


def run_cli(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, list[dict[str, Any]], str]:
    """``engines *argv`` in-process: exit code, the JSON objects on stdout, stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    objects = []
    decoder = json.JSONDecoder()
    text = out.out.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    return code, objects, out.err


def live_names(settings: Settings) -> dict[str, str]:
    return {kind: settings.routes[kind].name for kind in KINDS}


def run(coro: Any) -> Any:
    return asyncio.run(coro)
