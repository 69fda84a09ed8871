"""Ctrl-C at any moment of an ``engines`` command: exit 130, one line, no traceback;
during the imports too (the console script's entry point, :mod:`engines.console`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from engines.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
#: How long a command runs before Ctrl-C reaches it: well inside its imports (which
#: take a second or more), after the interpreter itself has started.
DURING_IMPORTS = 0.2


def start(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    """``engines ARGV`` through the console script's entry point."""
    entry = "from engines.console import entry; entry()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", entry, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal, even where this test runs with SIGINT ignored (a
        # background job), which the child would inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_the_console_script_is_the_entry_point_that_handles_ctrl_c() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["engines"] == "engines.console:entry"


def test_ctrl_c_during_the_imports_exits_130_without_a_traceback(tmp_path: Path) -> None:
    run = start("audit", "verify", "--data-dir", str(tmp_path), cwd=tmp_path)
    time.sleep(DURING_IMPORTS)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert err.strip().splitlines()[-1] == "engines: interrupted"
    assert "Traceback" not in err
    assert out == ""


def test_ctrl_c_stops_spine_tail_with_130(runtime: Runtime, tmp_path: Path) -> None:
    tail = start("spine", "tail", "--data-dir", str(runtime.data_dir), cwd=tmp_path)
    try:
        assert tail.stderr is not None
        lines: list[str] = []
        while not any("following new events" in line for line in lines):
            lines.append(tail.stderr.readline())
            assert lines[-1], "".join(lines)
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 130, err
    assert "engines: interrupted" in err
    assert "Traceback" not in err
