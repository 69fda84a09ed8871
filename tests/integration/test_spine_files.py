"""``engines spine export`` and ``engines spine import`` on the lab: the file's shape,
and the files an import refuses before it writes anything (exit 3 for a malformed
file, naming the line; 4 for a chain that does not verify)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from engines.cli import main, spine_file
from engines.runtime import bootstrap
from engines.settings import load_settings
from spine.codec import seal_after
from spine.events import ANY, GENESIS_HASH
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event

TENANT = "acme"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[Path, EventStore]]:
    """A lab data directory holding two tenants' streams: five of ``acme`` (one with a
    command of two events), one of ``other``; and its event store."""
    data = tmp_path / "lab"
    data.mkdir()
    async with bootstrap(load_settings(None)[0], data, run_projectors=False) as rt:
        spine = await rt.registry.event_store()
        for n in range(5):
            sid = stream_id("notes", TENANT, "lab", f"n{n}")
            await spine.append(sid, [make_event(tenant_id=TENANT, command_id=f"a{n}")], ANY)
            events = [make_event(tenant_id=TENANT, command_id=f"b{n}") for _ in range(1 + n % 2)]
            await spine.append(sid, events, ANY)
        other = stream_id("notes", "other", "lab", "n0")
        await spine.append(other, [make_event(tenant_id="other")], ANY)
        yield data, spine


@pytest.fixture
async def target(tmp_path: Path) -> Path:
    """A fresh lab data directory, as `engines serve` leaves it (no events)."""
    data = tmp_path / "target"
    data.mkdir()
    async with bootstrap(load_settings(None)[0], data, run_projectors=False):
        pass
    return data


async def streams_in(data: Path) -> int:
    async with bootstrap(load_settings(None)[0], data, run_projectors=False) as rt:
        return await stream_count(await rt.registry.event_store())


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def export(capsys: pytest.CaptureFixture[str], data: Path, *more: str) -> list[bytes]:
    code, out, err = await run(capsys, "spine", "export", "--data-dir", str(data), *more)
    assert code == 0, err
    return out.encode().splitlines()


async def stream_count(spine: EventStore) -> int:
    return len({e.stream_id async for e in spine.scan()})


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


async def test_an_export_is_a_header_each_event_and_a_trailer(
    lab: tuple[Path, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    data, spine = lab
    code, out, err = await run(
        capsys, "spine", "export", "--tenant", TENANT, "--data-dir", str(data)
    )

    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    header, events, trailer = lines[0], lines[1:-1], lines[-1]
    assert header["format"] == "engines-spine-export"
    assert header["version"] == 1
    assert header["scope"] == {"domain": None, "tenant_id": TENANT, "mode": None}
    assert header["source"] == "sqlite"
    assert trailer == {"format": "engines-spine-export", "end": True, "events": 12}
    stored = sorted([e async for e in spine.scan(tenant_id=TENANT)], key=lambda e: e.stream_id)
    assert events == [e.model_dump(mode="json") for e in stored]  # every field, raw
    assert {"hash", "prev_hash", "recorded_at", "event_id"} <= events[0].keys()
    assert "events   12\nstreams  5\n" in err  # the summary, on stderr


async def test_an_export_to_a_file_is_readable_by_its_owner_only(
    lab: tuple[Path, EventStore], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data, _ = lab
    target = tmp_path / "out.jsonl"

    await export(capsys, data, "--domain", "notes", "-o", str(target))

    assert target.stat().st_mode & 0o777 == 0o600
    assert not target.with_name("out.jsonl.partial").exists()
    assert orjson.loads(target.read_bytes().splitlines()[-1])["events"] == 13


async def test_an_export_of_a_malformed_scope_is_refused(
    lab: tuple[Path, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = lab
    code, out, err = await run(
        capsys, "spine", "export", "--tenant", "../x", "--data-dir", str(data)
    )
    assert code == 3
    assert out == ""
    assert "tenant_id" in err


async def test_a_dry_run_says_what_it_would_write_and_writes_nothing(
    lab: tuple[Path, EventStore], target: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data, _ = lab
    lines = await export(capsys, data, "--tenant", TENANT)
    file = write(tmp_path / "acme.jsonl", lines)

    code, out, err = await run(
        capsys, "spine", "import", str(file), "--dry-run", "--format", "json",
        "--data-dir", str(target),
    )  # fmt: skip

    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["dry_run"], row["events_written"], row["imported"]) == (True, 12, 5)
    assert await streams_in(target) == 0


def _spoil(lines: list[bytes], at: int, change: dict[str, Any]) -> list[bytes]:
    spoiled = list(lines)
    spoiled[at] = orjson.dumps(orjson.loads(spoiled[at]) | change)
    return spoiled


@pytest.mark.parametrize(
    ("spoil", "code", "message"),
    [
        pytest.param(
            lambda ls: [b'{"not": "a header"}', *ls[1:]],
            3,
            "line 1: not an engines-spine-export",
            id="no-header",
        ),
        pytest.param(
            lambda ls: _spoil(ls, 0, {"version": 2}), 3, "line 1: export version 2", id="version"
        ),
        pytest.param(lambda ls: ls[:-1], 3, "without the export's trailer", id="cut-short"),
        pytest.param(lambda ls: [*ls, b"{}"], 3, "line 15: a line after the trailer", id="after"),
        pytest.param(
            lambda ls: [*ls[:5], b"{not json", *ls[5:]], 3, "line 6: not JSON", id="not-json"
        ),
        pytest.param(
            lambda ls: _spoil(ls, 7, {"seq": "x"}), 3, "line 8: not an event (seq", id="bad-field"
        ),
        pytest.param(
            lambda ls: [*ls[:-1], orjson.dumps(orjson.loads(ls[-1]) | {"events": 11})],
            3,
            "the trailer says 11 events",
            id="trailer-count",
        ),
        pytest.param(
            lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]],
            3,
            "line 5: notes/acme/lab/n1: seq 1 follows seq 2",
            id="stream-out-of-order",
        ),
        pytest.param(
            lambda ls: _spoil(ls, 9, {"payload": {"n": 2}}),
            4,
            "line 10: notes/acme/lab/n3 seq 2: hash does not match",
            id="tampered",
        ),
    ],
)
async def test_a_file_that_is_not_a_whole_export_is_refused_and_nothing_written(
    lab: tuple[Path, EventStore],
    target: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    spoil: Any,
    code: int,
    message: str,
) -> None:
    lines = await export(capsys, lab[0], "--tenant", TENANT)
    file = write(tmp_path / "spoiled.jsonl", spoil(lines))

    got, out, err = await run(capsys, "spine", "import", str(file), "--data-dir", str(target))

    assert got == code, err
    assert message in err
    assert out == ""
    assert await streams_in(target) == 0  # not even the streams before the bad line


def test_parts_gather_interleaved_streams_and_cut_between_commands(tmp_path: Path) -> None:
    def sealed(name: str, commands: list[str]) -> list[Any]:
        events = [make_event(tenant_id=TENANT, command_id=c) for c in commands]
        sid = stream_id("notes", TENANT, "lab", name)
        pairs = seal_after(
            events, stream_id=sid, head=0, prev_hash=GENESIS_HASH, recorded_at=datetime.now(UTC)
        )
        return [e for e, _ in pairs]

    a = sealed("a", ["a1", "a1", "a2", "a3", "a3", "a3", "a4"])
    b = sealed("b", ["b1", "b2", "b3"])
    interleaved = [a[0], b[0], a[1], a[2], b[1], a[3], a[4], a[5], b[2], a[6]]
    file = write(
        tmp_path / "x.jsonl",
        [
            spine_file.header({"domain": None, "tenant_id": None, "mode": None}, "test"),
            *(spine_file.event_line(e) for e in interleaved),
            spine_file.trailer(len(interleaved)),
        ],
    )
    checked = spine_file.check_file(file)

    got = list(spine_file.parts(file, checked.streams, part=3, max_buffered=4))

    by_stream: dict[str, list[Any]] = {}
    for sid, part in got:
        runs = {e.command_id for e in part}
        assert not any(  # no command split between two parts
            other != part and runs & {e.command_id for e in other} for _, other in got
        )
        by_stream.setdefault(sid, []).extend(part)
    assert by_stream == {a[0].stream_id: a, b[0].stream_id: b}
    assert len(got) > 2
