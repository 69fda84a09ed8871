"""The ``engines`` console script's entry point: Ctrl-C handled from the first moment.

Importing the CLI (pydantic, the SDKs, Rich) takes a second or two; a Ctrl-C in that
time would otherwise print a ``KeyboardInterrupt`` traceback. So this module imports
nothing heavy itself, and imports :mod:`engines.cli` inside the handler that turns an
interrupt into exit 130 and one line, as every command does once it runs.
"""

from __future__ import annotations

import sys

#: What an interrupted command exits with (:data:`engines.cli.common.EXIT_INTERRUPTED`).
EXIT_INTERRUPTED = 130


def entry() -> None:
    """Run ``engines`` with ``sys.argv``; exit with its code."""
    try:
        from engines.cli import main

        code = main()
    except KeyboardInterrupt:  # during the imports, or around main's own handler
        sys.stderr.write("engines: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover - `python -m engines.console`
    entry()
