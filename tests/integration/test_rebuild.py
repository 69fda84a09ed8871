"""``engines projections rebuild`` on the lab backend: blue/green with verification and
the switch, in place, and what it refuses."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engines.runtime import bootstrap
from engines.settings import load_settings
from projections.parking import Parked
from routing.registry import Registry
from tests.integration.rebuild_support import (
    Deployment,
    live_names,
    run,
    run_cli,
    view_tally,
    write_routes,
    write_some,
)

JSON_KEYS = {
    "projectors",
    "kind",
    "backend",
    "into",
    "events",
    "streams",
    "seconds",
    "events_per_second",
    "peak_rss_mb",
    "verified",
    "records",
    "checksum",
    "switched",
}


@pytest.fixture
def lab(tmp_path: Path) -> Deployment:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    routes = write_routes(tmp_path / "routes.yaml", load_settings(None)[0])
    deployment = Deployment(routes, data_dir)
    run(write_some(deployment.settings, data_dir))
    return deployment


def test_a_blue_green_rebuild_equals_the_live_view_and_switches_the_routes_file(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    before = lab.settings
    live = {k: run(view_tally(before, lab.data_dir, k, n)) for k, n in live_names(before).items()}
    code, rows, err = run_cli(
        capsys,
        "projections",
        "rebuild",
        "notes",
        "budgets",
        *lab.cli("--switch", "--format", "json"),
    )
    assert code == 0, err
    assert [r["kind"] for r in rows] == ["budget_store", "notes_store"]
    after = lab.settings
    for row in rows:
        assert row.keys() >= JSON_KEYS
        assert row["verified"] is True
        assert row["aligned"] == 0  # nothing written meanwhile
        assert row["switched"] is True
        assert row["records"] == row["fold_records"] == live[row["kind"]].records
        assert row["checksum"] == row["fold_checksum"] == live[row["kind"]].hex
        assert after.routes[row["kind"]].name == row["into"] != before.routes[row["kind"]].name
    assert rows[0]["events"] == 8
    assert rows[0]["streams"] == 2
    assert lab.routes.read_text().startswith("# the rebuild test's routes")
    backups = sorted(lab.routes.parent.glob("routes.yaml.bak-*"), key=lambda p: p.stat().st_mtime)
    assert len(backups) == 2  # one per view switched, the first the file as it was
    assert load_settings(backups[0])[0] == before
    assert "restart the service" in err


def test_without_switch_the_routes_change_is_printed_and_nothing_is_written(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    text = lab.routes.read_text()
    code, rows, err = run_cli(
        capsys,
        "projections",
        "rebuild",
        "notes",
        *lab.cli("--into", "notes_green", "--format", "json"),
    )
    assert code == 0, err
    (row,) = rows
    assert row["switched"] is False
    assert row["verified"] is True
    assert "-  notes_store:" in row["routes_change"] or "name: notes_green" in row["routes_change"]
    assert lab.routes.read_text() == text
    assert run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes_green")).records == 6


def test_an_in_place_rebuild_restores_a_damaged_view(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    good = run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes"))
    db = sqlite3.connect(lab.data_dir / "engines.db")
    with db:
        db.execute("UPDATE notes SET data = '{}' WHERE key LIKE 'notes/t1/%'")
        db.execute("DELETE FROM notes WHERE key LIKE 'notes/t2/%'")
    db.close()
    assert run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes")) != good
    code, _, err = run_cli(capsys, "projections", "rebuild", "notes", *lab.cli("--in-place"))
    assert code == 3
    assert "--yes" in err
    code, rows, err = run_cli(
        capsys,
        "projections",
        "rebuild",
        "notes",
        *lab.cli("--in-place", "--yes", "--format", "json"),
    )
    assert code == 0, err
    assert rows[0]["verified"] is True
    assert rows[0]["into"] == "notes"
    assert run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes")) == good


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["nope"], "known: "),
        (["notes", "--into", "notes"], "live name"),
        (["notes", "--into", "Notes"], "live name"),  # SQLite: the same table
        (["notes", "--into", "notes__applied"], "no `__`"),
        (["notes", "--into", "x__sandbox_r1"], "no `__`"),
        (["notes", "--into", "budgets_scope"], "endings"),
        (["notes", "--into", "spine_events_no_update"], "endings"),
        (["notes", "--into", "SQLITE_master"], "sqlite_"),
        (["notes", "--into", "a.b"], "letters, digits"),
        (["notes", "--into", "n" * 64], "at most 63"),
        (["notes", "--switch", "--tenant", "t1"], "one tenant"),
        (["notes", "budgets", "--into", "x1"], "one at a time"),
    ],
)
def test_what_a_rebuild_refuses_exits_3_and_writes_nothing(
    lab: Deployment, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    text = lab.routes.read_text()
    code, _, err = run_cli(capsys, "projections", "rebuild", *argv, *lab.cli())
    assert code == 3
    assert says in err
    assert lab.routes.read_text() == text


def test_in_place_with_stdin_closed_asks_for_yes(
    lab: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``<&-``: Python starts with ``sys.stdin`` None."""
    monkeypatch.setattr("sys.stdin", None)
    good = run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes"))
    code, _, err = run_cli(capsys, "projections", "rebuild", "notes", *lab.cli("--in-place"))
    assert code == 3, err
    assert "pass --yes" in err
    assert "Traceback" not in err
    assert run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes")) == good


def test_a_name_holding_records_is_refused_unless_resumed(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["projections", "rebuild", "notes", *lab.cli("--into", "notes_b", "--format", "json")]
    assert run_cli(capsys, *argv)[0] == 0
    code, _, err = run_cli(capsys, *argv)
    assert code == 3
    assert "--resume" in err
    code, rows, err = run_cli(capsys, *argv, "--resume")
    assert code == 0, err
    assert rows[0]["verified"] is True


@pytest.mark.parametrize(
    ("into", "route"),
    [
        ("budgets", "budget_store"),
        ("BUDGETS", "budget_store"),  # SQLite table names know no letter case
        ("Spine_Events", "event_spine"),
        ("PROJECTION_checkpoints", "projection_checkpoints"),
    ],
)
def test_a_name_another_route_uses_is_refused(
    lab: Deployment, capsys: pytest.CaptureFixture[str], into: str, route: str
) -> None:
    code, _, err = run_cli(capsys, "projections", "rebuild", "notes", *lab.cli("--into", into))
    assert code == 2
    assert f"taken by route {route}" in err
    db = sqlite3.connect(lab.data_dir / "engines.db")
    try:
        (count,) = db.execute("SELECT count(*) FROM budgets WHERE key LIKE 'notes/%'").fetchone()
    finally:
        db.close()
    assert count == 0


def test_a_tampered_event_the_live_view_took_fails_verification_and_switches_nothing(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite3.connect(lab.data_dir / "engines.db")
    with db:  # behind the spine's back: the stored event no longer matches its hash
        db.execute("DROP TRIGGER spine_events_no_update")
        (body,) = db.execute(
            "SELECT body FROM spine_events WHERE stream_id = 'notes/t1/lab/n3'"
        ).fetchone()
        assert b"note 3" in body
        db.execute(
            "UPDATE spine_events SET body = ? WHERE stream_id = 'notes/t1/lab/n3'",
            (body.replace(b"note 3", b"note X"),),
        )
    db.close()
    text = lab.routes.read_text()
    code, rows, err = run_cli(
        capsys, "projections", "rebuild", "notes", *lab.cli("--switch", "--format", "json")
    )
    assert code == 4, err
    assert rows[0]["verified"] is False
    assert rows[0]["switched"] is False
    assert "notes/t1/lab/n3" in err
    assert "live projector has not" in err
    assert lab.routes.read_text() == text


async def _consumers(lab: Deployment) -> set[str]:
    registry = Registry(lab.settings, lab.data_dir, create=False)
    try:
        return set(await (await registry.checkpoint_store()).all())
    finally:
        await registry.aclose()


def test_a_failed_rebuild_keeps_its_checkpoint_until_resumed_or_abandoned(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rebuild that does not finish leaves its consumer (which on ``spine_feed:
    direct`` keeps outbox markers waiting); ``--abandon`` forgets it."""
    db = sqlite3.connect(lab.data_dir / "engines.db")
    with db:
        db.execute("DROP TRIGGER spine_events_no_update")
        db.execute(
            "UPDATE spine_events SET body = replace(body, 'note 3', 'note X')"
            " WHERE stream_id = 'notes/t1/lab/n3'"
        )
    db.close()
    argv = ["projections", "rebuild", "notes", *lab.cli("--into", "notes_c")]
    assert run_cli(capsys, *argv)[0] == 4
    assert any(c.startswith("rebuild:notes_store:notes_c") for c in run(_consumers(lab)))
    code, _, err = run_cli(capsys, *argv, "--abandon", "--resume")
    assert code == 3, err
    code, _, err = run_cli(capsys, *argv, "--abandon")
    assert code == 0, err
    assert "forgotten" in err
    assert not any(c.startswith("rebuild:") for c in run(_consumers(lab)))
    code, _, err = run_cli(capsys, *argv, "--abandon")
    assert (code, "nothing to forget" in err) == (0, True)


def test_a_resume_goes_on_with_the_same_rebuild_only(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scan position counts events of one scan (one tenant's, or all): a resume of
    another tenant's rebuild would skip that many events of its own."""
    db = sqlite3.connect(lab.data_dir / "engines.db")
    with db:  # a failed verification keeps the rebuild's checkpoint, as a kill does
        db.execute("DROP TRIGGER spine_events_no_update")
        db.execute(
            "UPDATE spine_events SET body = replace(body, 'note 3', 'note X')"
            " WHERE stream_id = 'notes/t1/lab/n3'"
        )
    db.close()
    argv = ["projections", "rebuild", "notes", *lab.cli("--into", "notes_t", "--format", "json")]
    assert run_cli(capsys, *argv, "--tenant", "t1")[0] == 4
    for other in ([], ["--tenant", "t2"]):
        code, _, err = run_cli(capsys, *argv, "--resume", *other)
        assert code == 3, err
        assert "tenant=t1" in err
        assert "same --tenant" in err
    code, rows, err = run_cli(capsys, *argv, "--resume", "--tenant", "t1")
    assert code == 4, err  # resumed (and the tampered event still fails it)
    assert rows[0]["resumed"] is True
    assert rows[0]["aligned"] == 0


def test_without_switch_a_service_started_on_the_new_name_by_hand_takes_up_what_came_after(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """The routes change applied by hand, not by ``--switch``: events the live projector
    applied to the old view after the drain reach the new view all the same."""
    code, _, err = run_cli(
        capsys, "projections", "rebuild", "notes", *lab.cli("--into", "notes_h", "--format", "json")
    )
    assert code == 0, err
    run(write_some(lab.settings, lab.data_dir, notes=4, tag="after", budgets=0))
    assert run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes_h")).records == 6
    text = lab.routes.read_text()
    lab.routes.write_text(text.replace("name: notes\n", "name: notes_h\n", 1))
    assert lab.settings.routes["notes_store"].name == "notes_h"
    run(_serve_and_catch_up(lab))
    after = run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes_h"))
    assert after == run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes"))
    assert after.records == 10
    assert not any(c.startswith("handover:") for c in run(_consumers(lab)))


def test_abandon_forgets_a_hand_over_never_taken(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["projections", "rebuild", "notes", *lab.cli("--into", "notes_x", "--format", "json")]
    assert run_cli(capsys, *argv)[0] == 0
    assert "handover:notes:notes_x" in run(_consumers(lab))
    code, _, err = run_cli(capsys, *argv, "--abandon")
    assert code == 0, err
    assert "hand-over" in err
    assert not any(c.startswith(("handover:", "rebuild:")) for c in run(_consumers(lab)))


async def _serve_and_catch_up(lab: Deployment) -> None:
    async with bootstrap(lab.settings, lab.data_dir, run_projectors=False) as service:
        await service.catch_up()


def _break_body(lab: Deployment, stream_id: str) -> None:
    """A stored body that is not JSON at all (behind the spine's back)."""
    db = sqlite3.connect(lab.data_dir / "engines.db")
    with db:
        db.execute("DROP TRIGGER spine_events_no_update")
        db.execute(
            "UPDATE spine_events SET body = ? WHERE stream_id = ? AND seq = 1",
            (b'{"not json', stream_id),
        )
    db.close()


async def _park_live(lab: Deployment, stream_id: str) -> None:
    registry = Registry(lab.settings, lab.data_dir, create=False)
    try:
        parking = await registry.parking_store()
        await parking.park(
            Parked(
                projector="notes",
                stream_id=stream_id,
                seq=1,
                error="stored event cannot be decoded",
                attempts=1,
                parked_at=datetime.now(UTC),
            )
        )
    finally:
        await registry.aclose()


@pytest.mark.parametrize("live_parked", [False, True])
def test_an_undecodable_body_is_parked_for_its_stream_and_the_rest_rebuilt(
    lab: Deployment, capsys: pytest.CaptureFixture[str], live_parked: bool
) -> None:
    """Verification passes only if the live projector parked that stream too."""
    bad = "notes/t1/lab/n3"
    _break_body(lab, bad)
    if live_parked:
        run(_park_live(lab, bad))
    argv = ["projections", "rebuild", "notes", *lab.cli("--into", "notes_u", "--format", "json")]
    code, rows, err = run_cli(capsys, *argv)
    assert code == (0 if live_parked else 4), err
    (row,) = rows
    assert row["verified"] is live_parked
    assert row["parked"] == [f"notes {bad} seq 1"]
    assert (bad in err and "live projector has not" in err) is not live_parked
    assert row["records"] == row["fold_records"] == 5  # every note but the unreadable one
    assert run(view_tally(lab.settings, lab.data_dir, "notes_store", "notes_u")).records == 5


def test_switch_through_a_symlink_edits_the_file_it_points_at(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    real = lab.routes.parent / "conf" / "real.yaml"
    real.parent.mkdir()
    lab.routes.rename(real)
    lab.routes.symlink_to(real)
    code, rows, err = run_cli(
        capsys, "projections", "rebuild", "notes", *lab.cli("--switch", "--format", "json")
    )
    assert code == 0, err
    assert lab.routes.is_symlink()
    assert lab.routes.resolve() == real.resolve()
    assert load_settings(real)[0].routes["notes_store"].name == rows[0]["into"]
    (backup,) = real.parent.glob("real.yaml.bak-*")
    assert load_settings(backup)[0].routes["notes_store"].name == "notes"


def test_switch_keeps_crlf_line_ends(lab: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    text = lab.routes.read_text()
    lab.routes.write_bytes(text.replace("\n", "\r\n").encode())
    code, rows, err = run_cli(
        capsys, "projections", "rebuild", "notes", *lab.cli("--switch", "--format", "json")
    )
    assert code == 0, err
    after = lab.routes.read_bytes().decode()
    assert after.count("\r\n") == text.count("\n")
    assert after.replace("\r\n", "").count("\n") == 0
    assert after == text.replace("name: notes\n", f"name: {rows[0]['into']}\n").replace(
        "\n", "\r\n"
    )
    assert "\r" not in rows[0]["routes_change"]


def test_a_routes_file_that_cannot_be_written_still_reports_the_rebuild_in_json(
    lab: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = lab.routes.read_text()

    def read_only(*_: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("engines.routes_edit.os.replace", read_only)
    code, rows, err = run_cli(
        capsys, "projections", "rebuild", "notes", *lab.cli("--switch", "--format", "json")
    )
    assert code == 1, err
    (row,) = rows
    assert row["verified"] is True
    assert row["switched"] is False
    assert "Read-only file system" in row["switch_error"]
    assert "nothing switched" in err
    assert lab.routes.read_text() == text
    assert f"handover:notes:{row['into']}" in run(_consumers(lab))
