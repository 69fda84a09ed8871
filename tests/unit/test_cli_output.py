"""What the CLI prints: stored values escaped, the formats every command shares
(table, json, jsonl), summaries, progress, and the exit codes."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from engines.cli import output
from engines.cli.common import shown


def test_stored_values_cannot_drive_the_operators_terminal() -> None:
    assert shown("red \x1b[31mtext") == "red \\x1b[31mtext"
    assert shown("a\x00b\nc") == "a\\x00b\\nc"
    assert shown("evil\u202eright") == "evil\\u202eright"
    assert shown("plain — ✓") == "plain — ✓"
    assert shown(None) == "-"


def _commands() -> list[list[str]]:
    from engines.cli import parser

    found: list[list[str]] = []

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append(prefix)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*prefix, name])

    walk(parser(), [])
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_shows_its_help(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from engines.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    assert exited.value.code == 0
    assert "usage: engines" in capsys.readouterr().out


# --- engines.cli.output: the formats every command shares ----------------------------

ROWS = [
    {"name": "a", "when": datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "n": 1},
    {"name": "b\x1b[31m[bold]x[/bold]", "when": None, "n": 22, "extra": {"k": [1, 2]}},
]


def _args(fmt: str) -> argparse.Namespace:
    return argparse.Namespace(format=fmt)


def test_add_format_offers_table_json_and_jsonl_and_refuses_others() -> None:
    p = argparse.ArgumentParser()
    output.add_format(p)
    assert p.parse_args([]).format == "table"
    assert p.parse_args(["--format", "jsonl"]).format == "jsonl"
    with pytest.raises(SystemExit):
        p.parse_args(["--format", "yaml"])


def test_json_is_one_array_with_iso_datetimes(capsys: pytest.CaptureFixture[str]) -> None:
    assert output.emit(_args("json"), ROWS) == 2
    out = capsys.readouterr().out
    assert json.loads(out)[0] == {"name": "a", "when": "2024-05-01T12:00:00+00:00", "n": 1}
    assert json.loads(out)[1]["extra"] == {"k": [1, 2]}


def test_jsonl_streams_each_row_as_it_comes(capsys: pytest.CaptureFixture[str]) -> None:
    written: list[str] = []

    def rows() -> Iterator[dict[str, object]]:
        for i in range(3):
            written.append(capsys.readouterr().out)  # what was out before this row
            yield {"i": i}

    assert output.emit(_args("jsonl"), rows()) == 3
    assert written[1] == '{"i":0}\n'
    assert written[2] == '{"i":1}\n'
    assert capsys.readouterr().out == '{"i":2}\n'


def test_a_table_off_a_terminal_is_plain_padded_columns_and_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert output.emit(_args("table"), ROWS, columns=["n", "name", "when"], title="T") == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["n", "name", "when"]
    assert lines[1].split() == ["1", "a", "2024-05-01T12:00:00+00:00"]
    assert lines[2].split() == ["22", "b\\x1b[31m[bold]x[/bold]", "-"]
    # columns line up: each starts where its header does
    assert lines[1].index("a") == lines[0].index("name") == lines[2].index("b")
    assert "\x1b" not in captured.out
    assert captured.err == "T\n"  # the title stays off the parseable stdout


def test_a_table_on_a_terminal_is_rich_and_stored_markup_stays_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    monkeypatch.setattr("sys.stdout", out)
    output.emit(_args("table"), ROWS, columns=["name", "n"])
    text = out.getvalue()
    assert "[bold]x[/bold]" in text  # shown as typed, not interpreted as markup
    assert "\x1b[31m" not in text  # the stored escape is escaped, whatever Rich adds


def test_summary_goes_to_stderr_beside_a_table_and_to_stdout_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output.summary(_args("table"), {"events": 10, "seconds": 1.5})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["events   10", "seconds  1.5"]
    output.summary(_args("jsonl"), {"events": 10})
    assert json.loads(capsys.readouterr().out) == {"events": 10}


def test_progress_off_a_terminal_counts_and_prints_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "PROGRESS_DELAY_SECONDS", 0.0)
    with output.progress(_args("table"), None, "scanning") as bar:
        bar.advance(5)
        bar.set_total(10)
        bar.advance(5)
        assert not bar.shown
    assert bar.completed == 10
    assert bar.total == 10
    assert capsys.readouterr() == ("", "")


def test_progress_on_a_terminal_waits_a_second_then_draws_on_stderr_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    with output.progress(_args("json"), 100, "rebuilding") as bar:
        bar.advance(10)
        assert not bar.shown  # under a second: nothing drawn
        monkeypatch.setattr(output, "PROGRESS_DELAY_SECONDS", 0.0)
        bar.advance(10)
        assert bar.shown
    assert "rebuilding" in err.getvalue()
    assert capsys.readouterr().out == ""


def test_exit_codes_are_documented_in_the_top_level_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from engines.cli import main
    from engines.cli.common import EXIT_CODES

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert [c for c, _ in EXIT_CODES] == [0, 1, 2, 3, 4, 130]
    for code, meaning in EXIT_CODES:
        assert f"{code:>3}  {meaning}" in out


def test_ctrl_c_exits_130_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.cli import main, routes

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(routes, "cmd_check", interrupted)
    assert main(["routes", "check", "engines/lab.yaml"]) == 130
    assert capsys.readouterr().err == "engines: interrupted\n"
