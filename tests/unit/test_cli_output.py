"""What the CLI prints of stored values."""

from __future__ import annotations

from engines.cli.common import shown


def test_stored_values_cannot_drive_the_operators_terminal() -> None:
    assert shown("red \x1b[31mtext") == "red \\x1b[31mtext"
    assert shown("a\x00b\nc") == "a\\x00b\\nc"
    assert shown("evil\u202eright") == "evil\\u202eright"
    assert shown("plain — ✓") == "plain — ✓"
    assert shown(None) == "-"
