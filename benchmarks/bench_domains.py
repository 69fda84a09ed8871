"""Domain commands through the command bus, beside a baseline measured in the same run.

    python benchmarks/bench_domains.py [--quick] [--no-http]

Each figure runs a fresh runtime (``engines.runtime.bootstrap``, the packaged lab
routes) on a fresh temporary data directory, under ``serving_gc()`` as ``engines
serve`` runs. The baseline is note creates through the same path (one new stream each,
so never a conflict), so a budget figure reads as a ratio on a noisy machine.

budget    debits of one budget by ``runtime.dispatch``: one writer after another, then
          50 concurrent debiters on the same budget (each decision folded and appended
          at the exact version; a loser is retried by the handler). Conflicts are the
          appends the spine refused as stale, counted under the handler. Projectors
          are off: this is the command path (load, fold, decide, append).
http      the same over HTTP in-process (httpx ASGI transport, projectors on): each
          answer waits for the budget view, as a client sees it.
board     blackboard writes, 20 writers, every write naming the version it replaces
          (``If-Match``): on 20 distinct keys (a writer's own key: never a conflict),
          then all on one key (a writer whose version is stale is refused, 412, and
          tries again on the version the refusal names: its ETag). By
          ``runtime.dispatch`` and over HTTP, beside 20 concurrent note creates on the
          same path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from commands.blackboard import PutBlackboardKey
from commands.budget import DebitBudget, SetLimit, budget_command, budget_stream
from commands.envelope import Command
from commands.handler import CommandHandler
from commands.notes import create_note_command
from engines.auth import mint_lab_token
from engines.http import build_app
from engines.runtime import Runtime, bootstrap, serving_gc
from engines.settings import load_settings
from spine.errors import ConcurrencyError
from spine.events import Scope

WRITERS = 50
BOARD_WRITERS = 20
SCOPE = Scope(tenant_id="t1", mode="lab", user_id="u1", surface_id="s1")
ON_P1 = SCOPE.model_copy(update={"project_id": "p1"})
LIMIT = 10**15  # never reached: every debit is accepted, so each is one append


@dataclass
class Row:
    name: str
    ops: int
    seconds: float
    baseline: float | None = None  # ops/s of the row this one is compared with
    conflicts: int | None = None
    gave_up: int = 0
    """Commands the handler gave up on after its last attempt (every one a conflict)."""
    note: str = ""

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


class CountingStore:
    """The handler's event store, counting the appends refused as stale."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, *args: Any, **kw: Any) -> Any:
        try:
            return await self.inner.append(*args, **kw)
        except ConcurrencyError:
            self.conflicts += 1
            raise


def counted(runtime: Runtime, payload_type: type) -> CountingStore:
    """Count the conflicts of the handler of ``payload_type`` (the in-process bus)."""
    handler = runtime.bus._handlers[payload_type]  # type: ignore[attr-defined]
    assert isinstance(handler, CommandHandler)
    store = CountingStore(handler.store)
    handler.store = store
    return store


@contextlib.asynccontextmanager
async def fresh_runtime(*, projectors: bool) -> AsyncIterator[Runtime]:
    d = Path(tempfile.mkdtemp(prefix="bench-domains-"))
    try:
        async with bootstrap(load_settings(None)[0], d, run_projectors=projectors) as rt:
            yield rt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def note(i: int) -> Command[Any]:
    return create_note_command(SCOPE, {"title": f"bench note {i}", "content": "x" * 200})


def debit(i: int) -> Command[Any]:
    payload = DebitBudget(budget_id="b1", amount_minor=3, reason=f"bench debit {i}")
    return budget_command(SCOPE, payload)


async def timed(
    runtime: Runtime, make: Callable[[int], Command[Any]], n: int, writers: int
) -> tuple[float, int]:
    """Seconds for ``writers`` tasks to dispatch ``n`` commands in all, each task one
    after another; and how many the handler gave up on (conflicts to its last attempt)."""
    per = n // writers
    gave_up = 0

    async def writer(w: int) -> None:
        nonlocal gave_up
        for i in range(per):
            try:
                await runtime.dispatch(make(w * per + i))
            except ConcurrencyError:
                gave_up += 1

    with serving_gc():
        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return time.perf_counter() - started, gave_up


async def bus_rows(n: int) -> list[Row]:
    rows = []
    for writers in (1, WRITERS):
        async with fresh_runtime(projectors=False) as rt:
            notes = counted(rt, type(note(0).payload))
            seconds, _ = await timed(rt, note, n, writers)
            base = n / seconds
        async with fresh_runtime(projectors=False) as rt:
            await rt.dispatch(budget_command(SCOPE, SetLimit(budget_id="b1", amount_minor=LIMIT)))
            debits = counted(rt, DebitBudget)
            seconds, gave_up = await timed(rt, debit, n, writers)
            events = await rt.spine.read_stream(budget_stream(SCOPE, "b1"))
        if len(events) != n - gave_up + 1:
            raise RuntimeError(f"{len(events)} budget events, not {n - gave_up + 1}")
        if notes.conflicts:
            raise RuntimeError(f"{notes.conflicts} conflicts between creates of new notes")
        who = "1 writer" if writers == 1 else f"{writers} concurrent"
        rows += [
            Row(f"note creates, {who} (baseline)", n, n / base, conflicts=notes.conflicts),
            Row(
                f"debits of one budget, {who}",
                n - gave_up,
                seconds,
                baseline=base,
                conflicts=debits.conflicts,
                gave_up=gave_up,
                note=f"{debits.conflicts / n:.1f} retries per debit" if writers > 1 else "",
            ),
        ]
    return rows


async def posted(
    post: Callable[[int], Awaitable[httpx.Response]], n: int, writers: int
) -> tuple[float, int]:
    """Seconds for ``writers`` clients to make ``n`` requests in all (each 201), each
    client one after another; and how many answered 409 (the handler gave up)."""
    per = n // writers
    gave_up = 0

    async def writer(w: int) -> None:
        nonlocal gave_up
        for i in range(per):
            response = await post(w * per + i)
            if response.status_code == 409:
                gave_up += 1
            elif response.status_code != 201:
                raise RuntimeError(response.text)

    with serving_gc():
        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return time.perf_counter() - started, gave_up


async def http_rows(n: int) -> list[Row]:
    rows = []
    for writers in (1, WRITERS):
        async with fresh_runtime(projectors=True) as rt:
            token = mint_lab_token(
                rt.data_dir,
                tenant_id="t1",
                user_id="u1",
                surfaces=["s1"],
                projects=[],
                roles=["admin"],
                ttl_seconds=3600,
            )
            transport = httpx.ASGITransport(app=build_app(rt))
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as client:
                limit = await client.put("/budgets/b1/limit", json={"amount_minor": LIMIT})
                assert limit.status_code == 200, limit.text
                debits = counted(rt, DebitBudget)

                def note_post(i: int) -> Awaitable[httpx.Response]:
                    body = {"title": f"n{i}", "content": "x" * 200}
                    return client.post("/notes", json=body)

                def debit_post(i: int) -> Awaitable[httpx.Response]:
                    body = {"amount_minor": 3, "reason": f"d{i}"}
                    return client.post("/budgets/b1/debits", json=body)

                seconds, _ = await posted(note_post, n, writers)
                base = n / seconds
                seconds, gave_up = await posted(debit_post, n, writers)
        who = "1 client" if writers == 1 else f"{writers} concurrent"
        rows += [
            Row(f"HTTP POST /notes, {who} (baseline)", n, n / base),
            Row(
                f"HTTP POST debits, one budget, {who}",
                n - gave_up,
                seconds,
                baseline=base,
                conflicts=debits.conflicts,
                gave_up=gave_up,
                note=f"{debits.conflicts / n:.1f} retries per debit" if writers > 1 else "",
            ),
        ]
    return rows


def board_write(key: str, value: int, version: int) -> Command[Any]:
    """Write ``key`` of run r1 if it is at ``version`` (0: create it)."""
    payload = PutBlackboardKey(
        path=("p1", "r1", key), body={"value": value}, create="must" if version == 0 else "never"
    )
    return Command[Any](scope=ON_P1, expected_version=version or None, payload=payload)


async def board_writes(
    write: Callable[[str, int, int], Awaitable[tuple[bool, int]]], n: int, one_key: bool
) -> tuple[float, int]:
    """Seconds for :data:`BOARD_WRITERS` writers to make ``n`` writes in all; and how
    many writes were refused as stale. ``write(key, value, version)`` answers whether it
    was written, and the key's version (the new one, or the one that made it stale).
    Every key is at version 1 to begin with."""
    per = n // BOARD_WRITERS
    refused = 0

    async def writer(w: int) -> None:
        nonlocal refused
        key = "hot" if one_key else f"k{w}"
        version = 1
        for i in range(per):
            done = False
            while not done:
                done, version = await write(key, w * per + i, version)
                refused += not done

    with serving_gc():
        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(BOARD_WRITERS)))
        return time.perf_counter() - started, refused


async def board_bus_rows(n: int) -> list[Row]:
    async with fresh_runtime(projectors=False) as rt:
        seconds, _ = await timed(rt, note, n, BOARD_WRITERS)
        base = n / seconds
    rows = [Row(f"note creates, {BOARD_WRITERS} concurrent (baseline)", n, seconds)]
    for one_key in (False, True):
        async with fresh_runtime(projectors=False) as rt:
            keys = ["hot"] if one_key else [f"k{w}" for w in range(BOARD_WRITERS)]
            for key in keys:
                await rt.dispatch(board_write(key, -1, 0))

            async def write(key: str, value: int, version: int) -> tuple[bool, int]:
                try:
                    return True, (await rt.dispatch(board_write(key, value, version))).version
                except ConcurrencyError as stale:
                    return False, stale.actual

            seconds, refused = await board_writes(write, n, one_key)
            streams = ["/".join(("blackboard", "t1", "lab", "p1", "r1", k)) for k in keys]
            written = sum([len(await rt.spine.read_stream(s)) for s in streams]) - len(keys)
        if written != n:
            raise RuntimeError(f"{written} blackboard writes recorded, not {n}")
        where = "one key" if one_key else f"{BOARD_WRITERS} keys"
        rows.append(
            Row(
                f"blackboard writes, {BOARD_WRITERS} writers, {where}",
                n,
                seconds,
                baseline=base,
                conflicts=refused,
                note=f"{refused / n:.1f} refused (412) per write" if one_key else "",
            )
        )
    return rows


async def board_http_rows(n: int) -> list[Row]:
    rows: list[Row] = []
    for one_key in (False, True):
        async with fresh_runtime(projectors=True) as rt:
            token = mint_lab_token(
                rt.data_dir,
                tenant_id="t1",
                user_id="u1",
                surfaces=["s1"],
                projects=["p1"],
                ttl_seconds=3600,
            )
            transport = httpx.ASGITransport(app=build_app(rt))
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as client:
                if not rows:

                    def note_post(i: int) -> Awaitable[httpx.Response]:
                        body = {"title": f"n{i}", "content": "x" * 200}
                        return client.post("/notes", json=body)

                    seconds, _ = await posted(note_post, n, BOARD_WRITERS)
                    rows.append(
                        Row(f"HTTP POST /notes, {BOARD_WRITERS} concurrent (baseline)", n, seconds)
                    )
                base = rows[0].rate
                keys = ["hot"] if one_key else [f"k{w}" for w in range(BOARD_WRITERS)]
                for key in keys:
                    made = await client.put(
                        f"/blackboard/p1/r1/{key}",
                        json={"value": -1},
                        headers={"If-None-Match": "*"},
                    )
                    assert made.status_code == 201, made.text

                async def write(key: str, value: int, version: int) -> tuple[bool, int]:
                    response = await client.put(
                        f"/blackboard/p1/r1/{key}",
                        json={"value": value},
                        headers={"If-Match": f'"{version}"'},
                    )
                    if response.status_code not in (200, 412):
                        raise RuntimeError(response.text)
                    return response.status_code == 200, int(response.headers["ETag"].strip('"'))

                seconds, refused = await board_writes(write, n, one_key)
        where = "one key" if one_key else f"{BOARD_WRITERS} keys"
        rows.append(
            Row(
                f"HTTP PUT blackboard, {BOARD_WRITERS} clients, {where}",
                n,
                seconds,
                baseline=base,
                conflicts=refused,
                note=f"{refused / n:.1f} refused (412) per write" if one_key else "",
            )
        )
    return rows


def show(rows: Sequence[Row]) -> None:
    head = (
        f"{'scenario':<44} {'done':>6} {'ops/s':>9} {'vs base':>8} {'conflicts':>9} "
        f"{'gave up':>7}  note"
    )
    print(f"{head}\n{'-' * len(head)}")
    for r in rows:
        ratio = f"{r.rate / r.baseline:.2f}x" if r.baseline else "-"
        conflicts = "-" if r.conflicts is None else str(r.conflicts)
        print(
            f"{r.name:<44} {r.ops:>6} {r.rate:>9,.0f} {ratio:>8} {conflicts:>9} {r.gave_up:>7}"
            f"  {r.note}"
        )


def main() -> int:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--no-http", action="store_true", help="the command bus only")
    args = p.parse_args()
    n, n_http = (500, 200) if args.quick else (2_000, 1_000)
    started = time.perf_counter()
    print("bus ...", file=sys.stderr, flush=True)
    rows = asyncio.run(bus_rows(n))
    if not args.no_http:
        print("http ...", file=sys.stderr, flush=True)
        rows += asyncio.run(http_rows(n_http))
    print("board ...", file=sys.stderr, flush=True)
    board = asyncio.run(board_bus_rows(n))
    if not args.no_http:
        board += asyncio.run(board_http_rows(n_http))
    print("Budget debits beside note creates through the same path, same run (lab SQLite).")
    print("vs base = debits/s over the baseline's ops/s; conflicts = stale appends retried;")
    print("gave up = commands still in conflict at the handler's last attempt (HTTP 409).\n")
    show(rows)
    print("\nBlackboard writes beside note creates through the same path, same run.")
    print("conflicts = writes refused as stale (412), each retried on the version it names.\n")
    show(board)
    print(f"\n{time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
