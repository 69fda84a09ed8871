"""``engines projections rebuild`` on the lab backend: blue/green with verification and
the switch, in place, and what it refuses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engines.settings import load_settings
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


def test_a_name_another_route_uses_is_refused(
    lab: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "projections", "rebuild", "notes", *lab.cli("--into", "budgets"))
    assert code == 2
    assert "taken by route budget_store" in err


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
