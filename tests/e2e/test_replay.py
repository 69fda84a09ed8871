"""``engines replay``: a run written through the HTTP API (notes and the blackboard,
steps linked by parent_event_id) printed in causal order, applied to a sandbox set of
views apart from the live ones, and hostile links that must not hang or crash it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest
import yaml

from engines.cli import main
from engines.runtime import Runtime
from engines.settings import Settings
from tests.e2e.support import PROJECT, TENANT, AppClient, note_stream_id

RUN = "run-7"
BOARD = f"/blackboard/{PROJECT}/{RUN}"


async def cli(argv: list[str]) -> int:
    """The CLI beside the running service, as an operator runs it."""
    return await asyncio.to_thread(main, argv)


def routes_file(settings: Settings, tmp_path: Path) -> list[str]:
    """``--routes`` and ``--data-dir`` naming this test's settings and data directory."""
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    return ["--routes", str(path), "--data-dir", str(tmp_path)]


async def last_event_id(runtime: Runtime, stream_id: str) -> str:
    return (await runtime.spine.read_stream(stream_id))[-1].event_id


async def write_run(client: AppClient, runtime: Runtime) -> dict[str, str]:
    """A run of four steps over two domains, and one write outside it:

    s1 note created ─┬─ s2 blackboard "plan" created ── s3 note updated
                     └─ s4 blackboard "todo" created
    (then, outside the run, the note is updated again)

    Returns each step's event id (and the note's stream)."""

    def step(name: str, parent: str | None = None) -> dict[str, str]:
        headers = {"X-Run-Id": RUN, "X-Step-Id": name}
        return headers | ({"X-Parent-Event-Id": parent} if parent else {})

    note = await client.post("/notes", json={"title": "plan it"}, headers=step("s1"))
    assert note.status_code == 201, note.text
    stream = note_stream_id(note.json()["note_id"])
    s1 = await last_event_id(runtime, stream)
    board = {"If-None-Match": "*"} | step("s2", s1)
    assert (await client.put(f"{BOARD}/plan", json={"value": 1}, headers=board)).is_success
    s2 = await last_event_id(runtime, f"blackboard/{TENANT}/lab/{PROJECT}/{RUN}/plan")
    update = {"title": "planned"}
    url = f"/notes/{note.json()['note_id']}"
    assert (await client.put(url, json=update, headers=step("s3", s2))).is_success
    s3 = await last_event_id(runtime, stream)
    board = {"If-None-Match": "*"} | step("s4", s1)
    assert (await client.put(f"{BOARD}/todo", json={"value": 2}, headers=board)).is_success
    s4 = await last_event_id(runtime, f"blackboard/{TENANT}/lab/{PROJECT}/{RUN}/todo")
    assert (await client.put(url, json={"title": "after the run"})).is_success
    await runtime.catch_up()
    return {"s1": s1, "s2": s2, "s3": s3, "s4": s4, "stream": stream}


async def test_replay_prints_the_run_as_a_tree_in_causal_order(
    client: AppClient,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await write_run(client, runtime)
    capsys.readouterr()

    assert await cli(["replay", RUN, "--tenant", TENANT, *routes_file(settings, tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()

    # children under their parent, siblings by seq: s2 (seq 1) before s4 (seq 1, later)
    assert [line.split()[0:2] for line in lines] == [
        ["s1", "note.created"],
        ["└─", "s2"],
        ["└─", "s3"],
        ["└─", "s4"],
    ]
    depth = [len(line) - len(line.lstrip()) for line in lines]
    assert depth == [0, 2, 4, 2]
    assert "blackboard.key_created" in lines[1]
    assert "note.updated" in lines[2]
    assert "/2" in lines[2]  # stream/seq: the note's second event; its third is not the run's
    assert len(lines) == 4


async def test_replay_as_jsonl_gives_each_event_with_its_depth_and_parent(
    client: AppClient,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await write_run(client, runtime)
    capsys.readouterr()

    args = ["replay", RUN, "--format", "jsonl", *routes_file(settings, tmp_path)]
    assert await cli(args) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [(r["event"]["step_id"], r["depth"], r["parent"]) for r in rows] == [
        ("s1", 0, None),
        ("s2", 1, ids["s1"]),
        ("s3", 2, ids["s2"]),
        ("s4", 1, ids["s1"]),
    ]
    assert [r["event"]["event_id"] for r in rows] == [ids[s] for s in ("s1", "s2", "s3", "s4")]
    assert {r["event"]["run_id"] for r in rows} == {RUN}


async def test_replay_of_an_unknown_run_exits_3(
    runtime: Runtime, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(["replay", "nobody-ran-this", *routes_file(settings, tmp_path)]) == 3
    captured = capsys.readouterr()
    assert "no events for run 'nobody-ran-this'" in captured.err
    assert captured.out == ""
    assert await cli(["replay", "bad run", *routes_file(settings, tmp_path)]) == 3
    capsys.readouterr()
    # an invalid sandbox name: 3 like an invalid run id, before anything opens
    assert await cli(["replay", RUN, "--into", "no/slash", *routes_file(settings, tmp_path)]) == 3
    assert "a sandbox name is" in capsys.readouterr().err


async def test_replay_into_a_sandbox_builds_views_of_the_run_apart_from_the_live_ones(
    client: AppClient,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await write_run(client, runtime)
    capsys.readouterr()
    args = ["replay", RUN, "--format", "jsonl", "--into", "sb1", *routes_file(settings, tmp_path)]

    assert await cli(args) == 0
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    again = await cli(args)
    out_again = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]

    views = {r["projector"]: r for r in out if "projector" in r}
    notes_route = settings.routes["notes_store"]
    assert views["notes"]["view"] == f"{notes_route.backend}:{notes_route.name}__sandbox_sb1"
    assert views["notes"]["events_applied"] == 2  # created and the run's update (s3)
    assert views["blackboard"]["records_written"] > 0
    assert again == 0
    # idempotent: nothing new the second time
    written_again = {r["projector"]: r["records_written"] for r in out_again if "projector" in r}
    assert written_again == dict.fromkeys(views, 0)
    sandbox = await runtime.registry.view_store_named(
        "notes_store", f"{notes_route.name}__sandbox_sb1"
    )
    note = await sandbox.get(ids["stream"])
    live = await runtime.view_of("notes").get(ids["stream"])
    assert note is not None
    assert live is not None
    assert (note.version, note.data["title"]) == (2, "planned")  # as the run left it
    assert (live.version, live.data["title"]) == (3, "after the run")  # live: untouched
    assert not [p for p in await runtime.parking.parked() if p.projector == "notes"]


async def test_hostile_parent_links_neither_hang_nor_crash_replay(
    client: AppClient,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await write_run(client, runtime)
    capsys.readouterr()
    # behind the spine's back: s1's parent becomes s3 (a cycle s1 <- s2 <- s3 <- s1), and
    # s4 its own parent
    db = sqlite3.connect(tmp_path / "engines.db")
    with db:
        db.execute("DROP TRIGGER spine_events_no_update")
        rows = db.execute("SELECT position, body FROM spine_events").fetchall()
        bodies = {orjson.loads(body)["event_id"]: (pos, body) for pos, body in rows}
        for event_id, parent in ((ids["s1"], ids["s3"]), (ids["s4"], ids["s4"])):
            position, body = bodies[event_id]
            changed = orjson.loads(body) | {"parent_event_id": parent}
            db.execute(
                "UPDATE spine_events SET body = ? WHERE position = ?",
                (orjson.dumps(changed), position),
            )
    db.close()

    args = ["replay", RUN, "--format", "jsonl", *routes_file(settings, tmp_path)]
    assert await asyncio.wait_for(cli(args), timeout=30) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert sorted(r["event"]["step_id"] for r in rows) == ["s1", "s2", "s3", "s4"]  # once each
    notes = {r["event"]["step_id"]: " ".join(r["notes"]) for r in rows}
    assert "its parent is itself" in notes["s4"]
    assert "parent cycle" in notes["s1"]
    # the roots first, then a cycle from its earliest event
    assert [r["event"]["step_id"] for r in rows if r["depth"] == 0] == ["s4", "s1"]
    assert "hash does not match" in notes["s1"]
    assert "hash does not match" in notes["s4"]
    assert "hash does not match" not in notes["s2"]
