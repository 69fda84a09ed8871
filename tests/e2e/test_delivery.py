"""Delivery as a deployment meets it: two processes on one lab database, a store that
holds a poison event, readiness, and the operator's projection commands."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engines.cli import main
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings
from spine.codec import encode
from spine.errors import BackendUnavailable
from tests.conftest import make_event
from tests.e2e.support import Mint, client_for, note_stream_id


def plant(data_dir: Path, stream_id: str, seq: int, body: bytes) -> None:
    """Store ``body`` as an event behind the service's back (a corrupted row)."""
    conn = sqlite3.connect(data_dir / "engines.db")
    try:
        with conn:
            conn.execute(
                "INSERT INTO spine_events (stream_id, seq, command_id, hash, body)"
                " VALUES (?, ?, 'planted', 'x', ?)",
                (stream_id, seq, body),
            )
    finally:
        conn.close()


async def test_a_write_answers_201_when_another_process_applies_it(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    """Read-your-writes across processes: this server runs no projector; the other one
    applies the event, and the wait asks the view store, not a local wake-up."""
    async with (
        bootstrap(settings, tmp_path, run_projectors=False) as writer,
        bootstrap(settings, tmp_path) as _projecting,
        client_for(writer, mint()) as client,
    ):
        created = await client.post("/notes", json={"title": "applied elsewhere"})
        updated = await client.put(
            f"/notes/{created.json()['note_id']}", json={"title": "and again"}
        )

    assert created.status_code == 201, created.text
    assert (updated.status_code, updated.json()["version"]) == (200, 2)


async def test_one_undecodable_event_does_not_stop_other_tenants_views(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    async with bootstrap(settings, tmp_path, run_projectors=False) as rt:
        plant(tmp_path, note_stream_id("poisoned", tenant_id="t9"), 1, b"{not json")
        async with client_for(rt, mint()) as client:
            note = (await client.post("/notes", json={"title": "still served"})).json()
            await rt.catch_up()
            fetched = await client.get(f"/notes/{note['note_id']}")
        (parked,) = await rt.parking.parked("notes")
        status = await rt.status("notes")

    assert fetched.status_code == 200
    assert (parked.stream_id, parked.seq) == (note_stream_id("poisoned", tenant_id="t9"), 1)
    assert (status.lag, status.parked) == (0, 1)


async def test_an_event_changed_behind_the_spine_is_parked_not_served(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    """A row planted with the right shape but a payload the view cannot serve (and a hash
    that does not match) is parked, so the note and the tenant's list keep answering."""
    async with bootstrap(settings, tmp_path, run_projectors=False) as rt:
        async with client_for(rt, mint()) as client:
            note = (await client.post("/notes", json={"title": "kept"})).json()
            other = (await client.post("/notes", json={"title": "other"})).json()
            await rt.catch_up()
            sid = note_stream_id(note["note_id"])
            (stored,) = await rt.spine.read_stream(sid)
            forged = orjson.loads(encode(stored))
            forged.update(event_type="note.updated", payload={"title": 12345, "tags": "abc"})
            plant(tmp_path, sid, 2, orjson.dumps(forged))
            await rt.catch_up()
            fetched = await client.get(f"/notes/{note['note_id']}")
            listed = await client.get("/notes")
        (parked,) = await rt.parking.parked("notes")

    assert fetched.status_code == 200
    assert fetched.json()["title"] == "kept"
    assert listed.status_code == 200
    assert {n["note_id"] for n in listed.json()["items"]} == {note["note_id"], other["note_id"]}
    assert (parked.stream_id, parked.seq) == (sid, 2)
    assert "does not match its hash" in parked.error


async def test_a_skip_beside_a_running_server_holds_for_the_next_write(
    settings: Settings, tmp_path: Path, mint: Mint
) -> None:
    """An operator skips a parked event with the CLI while the server runs; the server's
    runner had the stream's progress cached from before, and must not park the skipped
    event again when the next write arrives."""
    async with bootstrap(settings, tmp_path, run_projectors=False) as rt:
        async with client_for(rt, mint()) as client:
            note = (await client.post("/notes", json={"title": "one"})).json()
            await rt.catch_up()
            sid = note_stream_id(note["note_id"])
            (stored,) = await rt.spine.read_stream(sid)
            forged = orjson.loads(encode(stored))
            forged.update(event_type="note.updated", payload={"title": "forged"})
            plant(tmp_path, sid, 2, orjson.dumps(forged))
            await rt.catch_up()
            assert [p.seq for p in await rt.parking.parked("notes")] == [2]

            args = ["projections", "skip", "notes", sid, "--data-dir", str(tmp_path)]
            assert await asyncio.to_thread(main, args) == 0  # as another process would

            updated = await client.put(f"/notes/{note['note_id']}", json={"title": "three"})
            await rt.catch_up()
            fetched = await client.get(f"/notes/{note['note_id']}")
        parked = await rt.parking.parked("notes")

    assert updated.status_code in (200, 202), updated.text
    assert parked == []
    assert (fetched.json()["title"], fetched.json()["version"]) == ("three", 3)


async def test_readyz_answers_200_when_every_backend_answers(
    anonymous: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = len([e async for e in runtime.spine.scan()])
    response = await anonymous.get("/readyz")  # a probe carries no token

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["backends"] == {"inprocess": "ok", "sqlite": "ok"}
    assert body["routes"]["event_spine"] == body["routes"]["command_bus"] == "ok"
    assert len([e async for e in runtime.spine.scan()]) == before  # no refusal recorded


async def test_readyz_answers_503_naming_a_backend_that_does_not(
    runtime: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sqlite = await runtime.registry.backend("event_spine")

    async def down() -> None:
        raise BackendUnavailable("event_spine", "sqlite", "disk unplugged")

    monkeypatch.setattr(sqlite, "ping", down)
    response = await client.get("/readyz")
    health = await client.get("/healthz")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "disk unplugged" in response.json()["detail"]
    assert "disk unplugged" in response.json()["backends"]["sqlite"]
    assert "event_spine (sqlite:spine_events)" in response.json()["detail"]  # names the route
    assert "disk unplugged" in response.json()["routes"]["notes_store"]
    assert response.json()["routes"]["command_bus"] == "ok"
    assert health.status_code == 200  # liveness asks no backend


# -- the operator's commands ------------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, tmp_path: Path, mint: Mint) -> Path:
    """A data directory as `engines serve` leaves it: one note, and one planted poison."""
    import asyncio

    no_wait = settings.model_copy(update={"write_wait_seconds": 0})

    async def setup() -> None:
        async with bootstrap(no_wait, tmp_path, run_projectors=False) as rt:
            async with client_for(rt, mint()) as client:
                await client.post("/notes", json={"title": "fine"})
            plant(tmp_path, note_stream_id("bad"), 1, b"{not json")
            await rt.catch_up()

    asyncio.run(setup())
    return tmp_path


def test_projections_failures_lists_the_parked_event(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "failures", "--data-dir", str(served)]) == 0
    out, err = capsys.readouterr()
    (header, row) = out.splitlines()
    assert header.split()[:4] == ["projector", "stream", "seq", "event_type"]
    assert row.split()[:3] == ["notes", note_stream_id("bad"), "1"]
    assert "decode" in row
    assert "1 parked stream(s)" in err


def test_projections_retry_of_an_event_that_still_fails_parks_it_again(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["projections", "retry", "notes", note_stream_id("bad"), "--data-dir", str(served)])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "parked again at seq 1" in out


def test_projections_skip_passes_over_the_event_and_releases_the_stream(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["projections", "skip", "notes", "--all", "--data-dir", str(served)])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert f"{note_stream_id('bad')}: applied through seq 1" in out
    assert main(["projections", "failures", "--data-dir", str(served)]) == 0
    assert "0 parked stream(s)" in capsys.readouterr().err


def test_retry_of_a_stream_that_is_not_parked_is_refused(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["projections", "retry", "notes", "notes/t1/lab/nope", "--data-dir", str(served)])
    assert code == 3
    assert "not parked" in capsys.readouterr().err


def test_projections_status_counts_the_parked_stream(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "status", "--data-dir", str(served)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["projector", "partition", "checkpoint", "lag", "parked"]
    (notes,) = [r.split() for r in rows[1:] if r.startswith("notes")]
    assert (notes[1], notes[3], notes[4]) == ("all", "0", "1")


def test_spine_read_of_a_corrupted_event_is_an_integrity_error_not_a_traceback(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["spine", "read", note_stream_id("bad"), "--verify", "--data-dir", str(served)])
    err = capsys.readouterr().err
    assert code == 4
    assert "cannot be decoded" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["spine", "read", "notes/t1/lab/x"],
        ["spine", "tail", "--limit", "1"],
        ["projections", "status"],
        ["projections", "failures"],
        ["notes", "list", "--tenant", "t1"],
        ["token", "--tenant", "t1", "--user", "u1"],
    ],
)
def test_a_command_given_a_data_directory_that_does_not_exist_refuses_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    missing = tmp_path / "mistyped"
    assert main([*command, "--data-dir", str(missing)]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


async def test_a_write_the_view_does_not_show_answers_202_even_if_its_progress_says_applied(
    runtime: Runtime, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    created = (await client.post("/notes", json={"title": "v1"})).json()
    stream = note_stream_id(created["note_id"])
    conn = sqlite3.connect(tmp_path / "engines.db")
    with conn:  # progress raised behind the service's back, past what the view holds
        conn.execute("UPDATE notes__applied SET seq = seq + 5 WHERE stream_id = ?", (stream,))
    conn.close()
    runtime.runners["notes"].invalidate()

    response = await client.put(f"/notes/{created['note_id']}", json={"title": "v2"})

    assert response.status_code == 202
    assert (response.json()["version"], response.headers["ETag"]) == (2, '"2"')


@pytest.mark.parametrize(
    "command",
    [
        ["spine", "read", "notes/t1/lab/x"],
        ["projections", "status"],
        ["projections", "failures"],
        ["notes", "list", "--tenant", "t1"],
        ["token", "--tenant", "t1", "--user", "u1"],
    ],
)
def test_a_command_given_a_data_directory_engines_serve_never_used_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    assert main([*command, "--data-dir", str(wrong)]) != 0
    assert "engines serve" in capsys.readouterr().err
    assert list(wrong.iterdir()) == []


@pytest.fixture
def write_locked(served: Path) -> Iterator[Path]:
    """Another process holds the lab database's write lock."""
    conn = sqlite3.connect(served / "engines.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield served
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_projections_status_reads_while_another_process_holds_the_write_lock(
    write_locked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "status", "--data-dir", str(write_locked)]) == 0
    assert "notes" in capsys.readouterr().out


async def test_readyz_answers_503_while_another_process_holds_the_write_lock_and_recovers(
    runtime: Runtime, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "engines.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        locked = await client.get("/readyz")
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    recovered = await client.get("/readyz")

    assert locked.status_code == 503
    assert "locked" in locked.json()["backends"]["sqlite"]
    assert "engines.db" in locked.text
    assert str(tmp_path) not in locked.text  # anyone may ask /readyz: no machine paths
    assert recovered.status_code == 200


def test_spine_read_of_a_stream_that_does_not_exist_says_so(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["spine", "read", "notes/t1/lab/never", "--data-dir", str(served)]) == 3
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_spine_tail_refuses_a_limit_that_is_not_positive(
    served: Path, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["spine", "tail", "--limit", limit, "--data-dir", str(served)])
    assert info.value.code == 2
    assert "--limit" in capsys.readouterr().err


def test_projections_status_of_an_unknown_projector_prints_no_table(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "status", "nope", "--data-dir", str(served)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert "no projector 'nope'" in err


async def test_a_reader_that_goes_away_ends_the_command_quietly(
    runtime: Runtime, tmp_path: Path
) -> None:
    import asyncio
    import subprocess
    import sys

    stream = note_stream_id("long")
    for seq in range(400):  # well over a pipe's buffer
        await runtime.spine.append(
            stream, [make_event("note.updated", tenant_id="t1", payload={"n": seq})], seq
        )

    def read_one_line_and_go() -> tuple[int, bytes]:
        reader = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engines.cli",
                "spine",
                "read",
                stream,
                "--data-dir",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert reader.stdout is not None
        reader.stdout.readline()
        reader.stdout.close()  # like `| head -1`
        try:
            _, err = reader.communicate(timeout=20)
        finally:
            reader.kill()
        return reader.returncode, err

    code, err = await asyncio.to_thread(read_one_line_and_go)
    assert b"Traceback" not in err
    assert b"BrokenPipe" not in err
    assert code == 0
