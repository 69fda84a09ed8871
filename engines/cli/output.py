"""How every ``engines`` command prints: one place for tables, JSON and progress.

- ``--format table`` (the default): a Rich table on stdout when stdout is a terminal;
  when it is not (a pipe, a file, a test), a plain layout of padded columns — a header
  line, then one line per row, never wrapped or truncated — so the output stays stable
  for ``grep``, ``awk`` and copy-paste. Every cell goes through :func:`shown`, so a
  stored value cannot drive the operator's terminal (nor inject Rich markup).
- ``--format json``: one JSON array on stdout (indented); ``--format jsonl``: one JSON
  object per line, written and flushed as each row comes. Datetimes are ISO 8601 text.
- :func:`summary` prints figures about the work (counts, seconds): on stderr for a
  table, so the table on stdout stays parseable; as one JSON object on stdout otherwise.
- :func:`progress` is a Rich progress bar on stderr (count, events/s, ETA when the total
  is known), shown only when stderr is a terminal and the work has lasted over a second.
  It never writes to stdout.

Exit codes are in :mod:`engines.cli.common` (``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import IO, Any

import orjson
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from engines.cli.common import shown

FORMATS = ("table", "json", "jsonl")
#: work shorter than this shows no progress bar
PROGRESS_DELAY_SECONDS = 1.0


def add_format(
    parser: argparse.ArgumentParser,
    default: str = "table",
    *,
    choices: Sequence[str] = FORMATS,
) -> None:
    """Add ``--format``: ``table`` for people, ``json`` / ``jsonl`` for scripts."""
    parser.add_argument(
        "--format",
        choices=tuple(choices),
        default=default,
        help=f"output format (default {default}): "
        + ", ".join(
            {
                "table": "table: a table for people",
                "json": "json: one JSON array",
                "jsonl": "jsonl: one JSON object per line",
            }.get(c, c)
            for c in choices
        ),
    )


def format_of(args: argparse.Namespace) -> str:
    fmt: str = getattr(args, "format", None) or "table"
    return fmt


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def json_bytes(value: Any, *, indent: bool = False) -> bytes:
    """``value`` as JSON (orjson): datetimes as ISO text, models as their JSON form,
    anything else orjson does not know as its ``str``."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=_default, option=option)


def cell(value: object) -> str:
    """One table cell: a scalar as text, a datetime as ISO text, a list or mapping as
    compact JSON; control characters escaped (:func:`shown`)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list, tuple, set, frozenset, BaseModel)):
        return shown(json_bytes(value).decode())
    return shown(value)


def _write(stream: IO[str], text: str) -> None:
    stream.write(text)
    stream.flush()


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def emit(
    args: argparse.Namespace,
    rows: Iterable[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> int:
    """Print ``rows`` in ``args.format``; returns how many rows were printed.

    ``columns`` names the table's columns in order (default: every key, in the order
    first seen); json and jsonl print each row whole. ``jsonl`` streams: each row is
    written as it comes, so ``rows`` may be a generator over a long read.
    """
    fmt = format_of(args)
    out = sys.stdout
    if fmt == "jsonl":
        count = 0
        for row in rows:
            _write(out, json_bytes(row).decode() + "\n")
            count += 1
        return count
    listed = list(rows)
    if fmt == "json":
        _write(out, json_bytes(listed, indent=True).decode() + "\n")
        return len(listed)
    names = list(columns) if columns is not None else _columns(listed)
    cells = [[cell(row.get(name)) for name in names] for row in listed]
    if _is_tty(out):
        table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold")
        for name in names:
            table.add_column(name, overflow="fold")
        for line in cells:
            table.add_row(*(Text(c) for c in line))
        Console(file=out).print(table)
    else:
        if title:
            print(title, file=sys.stderr)
        _write(out, plain_table(names, cells))
    return len(listed)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def plain_table(names: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """The layout for a stdout that is not a terminal: columns padded to their widest
    cell and separated by two spaces, the last one unpadded; nothing cut."""
    if not names:
        return ""
    widths = [len(n) for n in names]
    for line in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    text = []
    for line in [list(names), *cells]:
        padded = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=False)]
        text.append("  ".join([*padded, line[-1]]).rstrip() + "\n")
    return "".join(text)


def summary(
    args: argparse.Namespace, mapping: Mapping[str, Any], *, title: str | None = None
) -> None:
    """Figures about the work: ``key  value`` lines on stderr for a table (stdout keeps
    only the table), one JSON object on stdout for json / jsonl."""
    fmt = format_of(args)
    if fmt in ("json", "jsonl"):
        _write(sys.stdout, json_bytes(dict(mapping), indent=fmt == "json").decode() + "\n")
        return
    width = max((len(k) for k in mapping), default=0)
    lines = [title] if title else []
    lines += [f"{shown(k).ljust(width)}  {cell(v)}" for k, v in mapping.items()]
    _write(sys.stderr, "".join(line + "\n" for line in lines))


class _Rate(ProgressColumn):
    """Items per second over Rich's recent samples."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} {self.unit}/s", style="progress.data.speed")


class Tracker:
    """What :func:`progress` yields: ``advance(n)`` after each batch, ``set_total(n)``
    once the total is known. Cheap: a clock read per call, no output until the work
    has lasted :data:`PROGRESS_DELAY_SECONDS` (and none at all unless stderr is a
    terminal)."""

    def __init__(self, total: int | None, what: str, *, show: bool, unit: str) -> None:
        self.total = total
        self.completed = 0
        self.what = what
        self.unit = unit
        self._show = show
        self._began = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed)
        else:
            self._maybe_start()

    def set_total(self, n: int | None) -> None:
        self.total = n
        if self._bar is not None:
            self._bar.update(self._task, total=n)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def _maybe_start(self) -> None:
        if not self._show or time.monotonic() - self._began < PROGRESS_DELAY_SECONDS:
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(self.unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
            refresh_per_second=4,
        )
        bar.start()
        self._task = bar.add_task(shown(self.what), total=self.total, completed=self.completed)
        self._bar = bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def progress(
    args: argparse.Namespace, total: int | None, what: str, *, unit: str = "events"
) -> Iterator[Tracker]:
    """A progress bar on stderr for work that may last: ``with progress(args, n,
    "rebuilding notes") as bar: ... bar.advance(len(batch))``. Shown only when stderr
    is a terminal and the work lasts over a second; removed when the work ends (the
    command then prints its :func:`summary`)."""
    del args  # the bar never touches stdout, whatever the format
    tracker = Tracker(total, what, show=_is_tty(sys.stderr), unit=unit)
    try:
        yield tracker
    finally:
        tracker.close()
