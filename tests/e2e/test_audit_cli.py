"""``engines audit verify`` / ``audit anchor`` and ``spine read --verify`` on a lab spine
written by the real service (every domain's events, refusals too), then tampered with."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from engines.cli import main
from engines.runtime import Runtime
from tests.e2e.support import TENANT, AppClient, Mint, client_for

LAB_ROUTES = Path(__file__).resolve().parents[2] / "engines" / "lab.yaml"


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def write_every_kind(runtime: Runtime, client: AppClient, mint: Mint) -> str:
    """Notes, telemetry, a budget, a refusal; returns a note's stream id."""
    note = (await client.post("/notes", json={"title": "t", "content": "c"})).json()
    await client.put(f"/notes/{note['note_id']}", json={"title": "t2", "content": "c"})
    made = await client.post(
        "/events",
        json={"event_type": "rl.reward", "run_id": "r7", "step_id": "1", "payload": {"r": 1}},
    )
    assert made.status_code == 201, made.text
    async with client_for(runtime, mint(roles=["admin"])) as admin:
        limit = await admin.put("/budgets/gpu/limit", json={"amount": "10.00", "currency": "EUR"})
        assert limit.status_code in (200, 201), limit.text
    debit = await client.post("/budgets/gpu/debits", json={"amount_minor": 5, "reason": "x"})
    assert debit.status_code in (200, 201), debit.text
    async with client_for(runtime) as anonymous:
        assert (await anonymous.get("/notes")).status_code == 401
    await runtime.catch_up()
    return f"notes/{TENANT}/lab/{note['note_id']}"


def remove(data_dir: Path, stream: str, seq: int) -> None:
    conn = sqlite3.connect(data_dir / "engines.db")
    with conn:  # behind the service's back
        conn.execute("DROP TRIGGER spine_events_no_delete")
        conn.execute("DELETE FROM spine_events WHERE stream_id = ? AND seq = ?", (stream, seq))
    conn.close()


async def test_verify_and_anchor_pass_over_every_domain_and_name_a_removed_tail(
    client: AppClient,
    runtime: Runtime,
    mint: Mint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    note = await write_every_kind(runtime, client, mint)
    data_dir = ["--data-dir", str(tmp_path)]
    assert await cli(["audit", "verify", *data_dir]) == 0
    assert await cli(["audit", "anchor", *data_dir, "--format", "json"]) == 0
    document = orjson.loads(capsys.readouterr().out)  # rows and figures: one document
    anchored = document["anchored"]
    # the caller's tenant, and the tenant of refusals whose caller is unknown
    assert f"anchor/{TENANT}/lab/heads" in [a["anchor_stream"] for a in anchored]
    assert document["summary"]["heads_anchored"] == sum(a["heads"] for a in anchored)
    assert document["summary"]["left_out"] == []
    remove(tmp_path, note, 2)

    assert await cli(["audit", "verify", *data_dir, "--format", "jsonl"]) == 4
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["stream"] == note
    assert lines[0]["first_bad_seq"] == 2
    assert lines[0]["problem"].startswith("removed tail")
    assert lines[1]["summary"]["broken"] == 1
    assert lines[1]["summary"]["warnings"] == []
    assert len(lines) == 2

    assert await cli(["audit", "verify", *data_dir, "--format", "json"]) == 4
    document = orjson.loads(capsys.readouterr().out)
    assert [b["stream"] for b in document["broken"]] == [note]
    assert document["summary"]["broken"] == 1
    assert document["summary"]["streams"] >= 4

    assert await cli(["audit", "verify", *data_dir, "--stream", note]) == 4
    assert await cli(["spine", "read", note, "--verify", *data_dir]) == 4
    assert "removed tail" in capsys.readouterr().err
    capsys.readouterr()
    assert await cli(["audit", "anchor", *data_dir, "--format", "json"]) == 4  # named
    left_out = orjson.loads(capsys.readouterr().out)["summary"]["left_out"]
    assert [(b["stream"], b["first_bad_seq"]) for b in left_out] == [(note, 2)]


async def test_a_keyed_verify_needs_a_key_file_that_can_serve(
    client: AppClient,
    runtime: Runtime,
    mint: Mint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await write_every_kind(runtime, client, mint)
    routes = tmp_path / "routes.yaml"
    routes.write_text(LAB_ROUTES.read_text() + "\naudit:\n  anchor_key_file: anchor.key\n")
    argv = ["--data-dir", str(tmp_path), "--routes", str(routes)]
    assert await cli(["audit", "verify", *argv]) == 2
    assert "audit.anchor_key_file" in capsys.readouterr().err
    (tmp_path / "anchor.key").write_bytes(b"short")
    assert await cli(["audit", "anchor", *argv]) == 2
    assert "at least 32" in capsys.readouterr().err
    (tmp_path / "anchor.key").write_bytes(b"k" * 32)
    assert await cli(["audit", "anchor", *argv]) == 0
    assert await cli(["audit", "verify", *argv]) == 0
    capsys.readouterr()
    assert await cli(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "not checked" in capsys.readouterr().err


def execute(data_dir: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(data_dir / "engines.db")
    with conn:  # behind the service's back
        conn.execute("DROP TRIGGER IF EXISTS spine_events_no_delete")
        conn.execute("DROP TRIGGER IF EXISTS spine_events_no_update")
        conn.execute(sql, args)
    conn.close()


def keyed_routes(tmp_path: Path, key_file: str = "anchor.key") -> list[str]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(LAB_ROUTES.read_text() + f"\naudit:\n  anchor_key_file: {key_file}\n")
    return ["--data-dir", str(tmp_path), "--routes", str(routes)]


async def test_a_witness_file_catches_anchors_rolled_back_behind_the_stores_back(
    client: AppClient,
    runtime: Runtime,
    mint: Mint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    note = await write_every_kind(runtime, client, mint)
    (tmp_path / "anchor.key").write_bytes(b"k" * 32)
    argv = keyed_routes(tmp_path)
    assert await cli(["audit", "verify", *argv]) == 0
    assert f"warning: {TENANT}/lab: not anchored" in capsys.readouterr().err

    witness = tmp_path / "elsewhere" / "witness.jsonl"
    witness.parent.mkdir()
    assert await cli(["audit", "anchor", *argv, "--witness", str(witness)]) == 0
    await client.put(f"/notes/{note.rsplit('/', 1)[1]}", json={"title": "t3", "content": "c"})
    capsys.readouterr()
    assert await cli(["audit", "anchor", *argv, "--witness", str(witness), "--format", "json"]) == 0
    figures = orjson.loads(capsys.readouterr().out)["summary"]
    assert witness.stat().st_mode & 0o777 == 0o600
    lines = [orjson.loads(line) for line in witness.read_bytes().splitlines()]
    assert figures["witnessed"] == len({line["anchor_stream"] for line in lines})
    ours = [line for line in lines if line["tenant_id"] == TENANT]
    assert [(line["anchor_stream"], line["seq"]) for line in ours] == [
        (f"anchor/{TENANT}/lab/heads", 1),
        (f"anchor/{TENANT}/lab/heads", 2),
    ]
    assert all(len(line["mac"]) == 64 and line["at"] for line in ours)
    assert await cli(["audit", "verify", *argv, "--witness", str(witness)]) == 0
    assert "warning" not in capsys.readouterr().err

    # the newest anchor deleted: a rollback the stores cannot show
    execute(
        tmp_path,
        "DELETE FROM spine_events WHERE stream_id = ? AND seq = 2",
        (f"anchor/{TENANT}/lab/heads",),
    )
    assert await cli(["audit", "verify", *argv]) == 0
    capsys.readouterr()
    assert await cli(["audit", "verify", *argv, "--witness", str(witness), "--format", "json"]) == 4
    (found,) = orjson.loads(capsys.readouterr().out)["broken"]
    assert (found["stream"], found["first_bad_seq"]) == (f"anchor/{TENANT}/lab/heads", 2)
    assert found["problem"].startswith("anchors removed or rolled back")
    stream = ["--stream", note, "--witness", str(witness)]
    assert await cli(["audit", "verify", *argv, *stream]) == 4

    # a witness file that cannot serve: exit 3, named
    assert await cli(["audit", "verify", *argv, "--witness", str(tmp_path / "none")]) == 3
    with witness.open("ab") as file:
        file.write(b'{"not": "a witness line"}\n')
    assert await cli(["audit", "verify", *argv, "--witness", str(witness)]) == 3
    assert f"line {len(lines) + 1}: not a witness line" in capsys.readouterr().err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert await cli(["audit", "verify", *argv, "--witness", str(fifo)]) == 3
    assert await cli(["audit", "anchor", *argv, "--witness", str(fifo)]) == 3
    assert "not a regular file" in capsys.readouterr().err


async def test_a_key_file_that_is_not_a_regular_file_is_refused_at_once(
    client: AppClient,
    runtime: Runtime,
    mint: Mint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await write_every_kind(runtime, client, mint)
    (tmp_path / "zero.key").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.key")
    (tmp_path / "big.key").write_bytes(b"k" * 5000)
    for name, said in [
        ("zero.key", "not a regular file"),
        ("fifo.key", "not a regular file"),
        ("big.key", "over 4096 bytes"),
    ]:
        assert await cli(["audit", "verify", *keyed_routes(tmp_path, name)]) == 2
        assert said in capsys.readouterr().err


async def test_verify_names_odd_stored_seqs_and_a_missing_stream(
    client: AppClient,
    runtime: Runtime,
    mint: Mint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    note = await write_every_kind(runtime, client, mint)
    await client.put(f"/notes/{note.rsplit('/', 1)[1]}", json={"title": "t3", "content": "c"})
    data_dir = ["--data-dir", str(tmp_path)]
    assert await cli(["audit", "verify", *data_dir, "--stream", note[:-1] + "0"]) == 3
    assert "no stream" in capsys.readouterr().err

    async def problem() -> str:
        capsys.readouterr()
        assert await cli(["audit", "verify", *data_dir, "--format", "json"]) == 4
        (found,) = orjson.loads(capsys.readouterr().out)["broken"]
        assert found["stream"] == note
        text: str = found["problem"]
        return text

    copy = (
        "INSERT INTO spine_events (stream_id, seq, command_id, hash, body) SELECT stream_id, "
        "?, command_id || 'z', hash, body FROM spine_events WHERE stream_id = ? AND seq = 1"
    )
    execute(tmp_path, copy, (0, note))
    assert await problem() == "a row is stored at seq 0, not a seq (seqs are whole numbers from 1)"
    execute(tmp_path, "DELETE FROM spine_events WHERE stream_id = ? AND seq = 0", (note,))
    odd = "not a seq (seqs are whole numbers from 1)"
    relabel = "UPDATE spine_events SET seq = ? WHERE stream_id = ? AND seq = ?"
    execute(tmp_path, relabel, ("2x", note, 2))  # stored after the integers
    assert await problem() == (
        f"seq 2 is missing (the next stored is seq 3); and a row is stored at seq '2x', {odd}"
    )
    execute(tmp_path, relabel, ("3x", note, 3))
    assert await problem() == f"a row is stored at seq '2x', {odd}"


async def test_spine_read_prints_json_lines_a_json_array_or_a_table(
    client: AppClient,
    runtime: Runtime,
    mint: Mint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    note = await write_every_kind(runtime, client, mint)
    read = ["spine", "read", note, "--data-dir", str(tmp_path)]
    assert await cli(read) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2]
    assert await cli([*read, "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == lines
    assert await cli([*read, "--format", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "seq",
        "event_type",
        "event_id",
        "recorded_at",
        "source",
        "user_id",
        "payload",
    ]
    assert [row.split()[:2] for row in table[1:]] == [["1", "note.created"], ["2", "note.updated"]]
