"""The lab database shared with another process, and a process that dies mid-write."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from spine.codec import verify_chain
from spine.errors import ConcurrencyError
from spine.events import ANY, NO_STREAM
from tests.conftest import make_event
from tests.integration.conftest import lab_database, lab_route

ROOT = Path(__file__).resolve().parents[2]

#: A writer in its own process: ``appends`` single-event appends in rounds of ``width``
#: at once, even rounds to its own ``width`` streams (exact versions), odd rounds to the
#: shared stream (ANY); it prints the stream and seq of each append once acknowledged.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from routing.backends.sqlite import SqliteBackend, open_backend
    from routing.config import Connections, Route, SqliteConnection
    from spine.events import ANY, NO_STREAM
    from tests.conftest import make_event

    async def main(path, name, appends, width, synchronous):
        connections = Connections(
            sqlite=SqliteConnection(path=path, synchronous=synchronous)
        )
        backend = await open_backend(connections, Path(path).parent, create=False)
        store = await backend.event_store(Route(backend="sqlite", name="spine", lab=True))
        versions = {}

        async def one(i):
            if (i // width) % 2:
                result = await store.append("notes/t1/lab/shared", [make_event()], ANY)
            else:
                own = f"notes/t1/lab/{name}-{i % width}"
                expected = versions.get(own, 0) or NO_STREAM
                result = await store.append(own, [make_event()], expected)
                versions[own] = result.last_seq
            print(result.stream_id, result.last_seq, flush=True)

        for start in range(0, appends, width):
            await asyncio.gather(*(one(i) for i in range(start, start + width)))
        await backend.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
    """
)


def _writer(
    path: Path, name: str, appends: int, width: int, synchronous: str = "FULL"
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a writer process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(path), name, str(appends), str(width), synchronous]
    return [sys.executable, "-c", WRITER, *args], env


async def test_two_processes_appending_to_one_database_lose_nothing_and_chain(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    async with lab_database(path) as backend:
        store = await backend.event_store(lab_route("spine"))
        command, env = _writer(path, "child", 512, 16)
        child = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        conflicts = 0
        for round_ in range(25):
            batch = [
                store.append(f"notes/t1/lab/parent-{k}", [make_event()], round_ or NO_STREAM)
                for k in range(8)
            ] + [store.append("notes/t1/lab/shared", [make_event()], ANY) for _ in range(8)]
            results = await asyncio.gather(*batch, return_exceptions=True)
            for result in results:
                if isinstance(result, ConcurrencyError):
                    conflicts += 1
                elif isinstance(result, BaseException):
                    raise result
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()
        acknowledged = out.decode().split()
        assert len(acknowledged) == 2 * 512
        assert conflicts == 0

        shared = await store.read_stream("notes/t1/lab/shared")
        # the parent's 25 x 8, the child's odd rounds: 16 x 16
        assert [e.seq for e in shared] == list(range(1, 25 * 8 + 16 * 16 + 1))
        assert verify_chain(shared) == 456
        for k in range(8):
            assert len(await store.read_stream(f"notes/t1/lab/parent-{k}")) == 25
        for k in range(16):
            own = await store.read_stream(f"notes/t1/lab/child-{k}")
            assert verify_chain(own) == len(own) == 16
        conn = sqlite3.connect(path)
        try:
            (count,) = conn.execute("SELECT count(*) FROM spine").fetchone()
            (distinct,) = conn.execute("SELECT count(DISTINCT position) FROM spine").fetchone()
        finally:
            conn.close()
        assert count == distinct == 25 * 16 + 512


async def test_an_exact_version_taken_by_another_process_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    async with lab_database(path) as backend:
        store = await backend.event_store(lab_route("spine"))
        await store.append("notes/t1/lab/child-0", [make_event()], NO_STREAM)
        # the child's first append to child-0 expects NO_STREAM: the stream refutes it
        command, env = _writer(path, "child", 1, 1)
        child = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        _, err = await child.communicate()
        assert child.returncode != 0
        assert b"ConcurrencyError" in err
        result = await store.append("notes/t1/lab/child-0", [make_event()], 1)
        assert result.last_seq == 2


async def test_every_acknowledged_append_survives_the_process_being_killed(
    tmp_path: Path,
) -> None:
    """A writer is killed (SIGKILL) while appending; every append it had acknowledged is
    in the database afterwards, and every stream still verifies."""
    path = tmp_path / "killed.db"
    async with lab_database(path) as backend:  # creates the table the writer needs
        await backend.event_store(lab_route("spine"))
    command, env = _writer(path, "victim", 100_000, 32)
    victim = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert victim.stdout is not None
    acknowledged: list[tuple[str, int]] = []
    while len(acknowledged) < 3_000:
        line = await victim.stdout.readline()
        assert line, "the writer stopped before it was killed"
        sid, seq = line.decode().split()
        acknowledged.append((sid, int(seq)))
    victim.send_signal(signal.SIGKILL)
    rest, _ = await victim.communicate()
    for line in rest.decode().split("\n")[:-1]:  # the last one may be cut by the kill
        sid, seq = line.split()
        acknowledged.append((sid, int(seq)))

    async with lab_database(path) as backend:
        store = await backend.event_store(lab_route("spine"))
        heads: dict[str, int] = {}
        for sid, seq in acknowledged:
            heads[sid] = max(seq, heads.get(sid, 0))
        for sid, head in heads.items():
            events = await store.read_stream(sid)
            assert len(events) >= head, f"{sid}: acknowledged seq {head}, stored {len(events)}"
            assert verify_chain(events) == len(events)
