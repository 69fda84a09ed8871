"""``engines audit verify`` / ``audit anchor`` and ``spine read --verify`` on a lab spine
written by the real service (every domain's events, refusals too), then tampered with."""

from __future__ import annotations

import asyncio
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
    out = capsys.readouterr().out
    anchored = orjson.loads(out[: out.index("]") + 1])
    # the caller's tenant, and the tenant of refusals whose caller is unknown
    assert f"anchor/{TENANT}/lab/heads" in [a["anchor_stream"] for a in anchored]
    remove(tmp_path, note, 2)

    assert await cli(["audit", "verify", *data_dir, "--format", "jsonl"]) == 4
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["stream"] == note
    assert lines[0]["first_bad_seq"] == 2
    assert lines[0]["problem"].startswith("removed tail")
    assert lines[1]["broken"] == 1

    assert await cli(["audit", "verify", *data_dir, "--stream", note]) == 4
    assert await cli(["spine", "read", note, "--verify", *data_dir]) == 4
    assert "removed tail" in capsys.readouterr().err
    assert await cli(["audit", "anchor", *data_dir]) == 4  # the broken stream is named


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
