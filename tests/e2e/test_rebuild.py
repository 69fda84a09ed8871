"""``engines projections rebuild`` as an operator runs it, a process of its own beside a
running service: a writer appending all along and the switch losing nothing of it; a
rebuild killed with SIGKILL half-way and resumed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from commands.envelope import Command
from commands.notes import CreateNote
from engines.runtime import bootstrap
from engines.settings import load_settings
from tests.integration.rebuild_support import (
    Deployment,
    scope,
    view_tally,
    write_routes,
    write_some,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def lab(tmp_path: Path) -> Deployment:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = load_settings(None)[0]
    fast = lab.connections.model_copy(
        update={"sqlite": lab.connections.sqlite.model_copy(update={"synchronous": "NORMAL"})}
    )
    settings = lab.model_copy(update={"connections": fast})
    return Deployment(write_routes(tmp_path / "routes.yaml", settings), data_dir)


async def engines(*argv: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engines.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def finished(process: asyncio.subprocess.Process) -> tuple[int, dict[str, object], str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    code = process.returncode
    assert code is not None
    return code, json.loads(out) if code in (0, 4) and out.strip() else {}, err.decode()


async def test_what_is_written_during_a_rebuild_reaches_the_new_view_after_the_switch(
    lab: Deployment,
) -> None:
    await write_some(lab.settings, lab.data_dir, notes=200, budgets=0)
    written: list[str] = []
    stop = asyncio.Event()
    async with bootstrap(lab.settings, lab.data_dir) as service:  # projectors running

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                nid = f"w{n}"
                payload = CreateNote(note_id=nid, title=f"written meanwhile {n}")
                await service.dispatch(Command[CreateNote](scope=scope("t1"), payload=payload))
                written.append(nid)
                n += 1
                await asyncio.sleep(0.02)

        task = asyncio.create_task(writer())
        rebuild = await engines(
            "projections",
            "rebuild",
            "notes",
            *lab.cli("--switch", "--batch-size", "10"),
            "--format",
            "json",
        )
        code, row, err = await finished(rebuild)
        during = len(written)
        await asyncio.sleep(0.3)  # the live projector applies these to the old view only
        stop.set()
        await task
        await service.catch_up()
        old = await view_tally(service.settings, lab.data_dir, "notes_store", "notes")
    assert code == 0, err
    assert row["switched"] is True
    assert row["verified"] is True
    assert during > 0
    assert len(written) > during
    switched = lab.settings
    new_name = switched.routes["notes_store"].name
    assert new_name == row["into"]
    # the service restarts on the new routes and catches the new view up
    async with bootstrap(switched, lab.data_dir, run_projectors=False) as service:
        await service.catch_up()
        views = service.view_of("notes")
        found = await views.get_many([f"notes/t1/lab/{nid}" for nid in written])
        assert len(found) == len(written)
    assert await view_tally(switched, lab.data_dir, "notes_store", new_name) == old
    assert old.records == 200 + len(written)


def scan_read(db: Path, consumer: str) -> int:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT token FROM projection_checkpoints WHERE consumer = ? AND partition = 'scan'",
            (consumer,),
        ).fetchone()
    except sqlite3.OperationalError:  # locked a moment: ask again
        return 0
    finally:
        conn.close()
    return int(row[0].split(".")[1]) if row else 0


async def test_a_rebuild_killed_half_way_resumes_from_its_checkpoint(lab: Deployment) -> None:
    await write_some(lab.settings, lab.data_dir, notes=600, budgets=0)
    live = await view_tally(lab.settings, lab.data_dir, "notes_store", "notes")
    argv = ["projections", "rebuild", "notes", *lab.cli("--into", "notes_k", "--format", "json")]
    slow = ["--batch-size", "2", "--save-seconds", "0"]
    process = await engines(*argv, *slow)
    db = lab.data_dir / "engines.db"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (read := scan_read(db, "rebuild:notes_store:notes_k:scan")) < 150:
        assert process.returncode is None, "the rebuild ended before it could be killed"
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    killed_at = scan_read(db, "rebuild:notes_store:notes_k:scan")
    assert 150 <= killed_at < 800  # half-way: 600 notes, 801 events
    part = await view_tally(lab.settings, lab.data_dir, "notes_store", "notes_k")
    assert 0 < part.records < live.records

    code, _, err = await finished(await engines(*argv))
    assert code == 3, "a name holding records is refused without --resume"
    assert "--resume" in err
    code, row, err = await finished(await engines(*argv, "--resume"))
    assert code == 0, err
    assert row["resumed"] is True
    assert row["verified"] is True
    assert (row["records"], row["checksum"]) == (live.records, live.hex)
    assert await view_tally(lab.settings, lab.data_dir, "notes_store", "notes_k") == live
    assert read > 0
