"""What the CLI prints of stored values."""

from __future__ import annotations

import pytest

from engines.cli.common import shown


def test_stored_values_cannot_drive_the_operators_terminal() -> None:
    assert shown("red \x1b[31mtext") == "red \\x1b[31mtext"
    assert shown("a\x00b\nc") == "a\\x00b\\nc"
    assert shown("evil\u202eright") == "evil\\u202eright"
    assert shown("plain — ✓") == "plain — ✓"
    assert shown(None) == "-"


def _commands() -> list[list[str]]:
    import argparse

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
