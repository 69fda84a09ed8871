"""One SQLite database file: group commit on the event loop's thread, and readers.

Every write is a *job*: a function run on the writer's connection. The jobs that arrive
during one turn of the event loop run together in one transaction at the start of the
next turn, and commit once (up to ``max_batch`` jobs; the rest go on at the turn
after). A job that fails is undone alone (see ``_run_jobs``); the others still commit.
Many callers' writes thus share one fsync, and each is still atomic and answered on its
own. Because there is one writer connection and rows are numbered inside its
transaction, commit order is position order.

Where a group runs: a light one (weighing less than ``thread_from``, a job weighing
about what it costs in single appends: a lone request, a few at once) on the loop's
own thread, since crossing to another thread and back cost more than the write
(sequential appends at NORMAL went from ~10k to ~15k a second); a heavy one on the
writer's thread, where SQLite works without the GIL while the loop goes on (the 1 ms
timer's p99 lateness under 100 writers fell from 12-19 ms to 2-5 ms, for the same
throughput). The writer's connection never waits for a lock on the loop
(``busy_timeout`` 0): a group that finds another process holding the write lock goes
to the writer's thread too and waits there (``busy_timeout_ms``). One group at a time:
the next queues until the one in flight is done.

Reads run on a small pool of threads, each with its own connection (WAL lets readers
proceed while the writer writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast

from spine.errors import BackendUnavailable, EnginesError

T = TypeVar("T")
Item = TypeVar("Item")
Job = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]
"""``(True, result)`` or ``(False, exception)``."""

#: How many values one ``IN (...)`` list binds (SQLite allows 32,766 variables).
IN_CHUNK: Final = 500
#: How many commits may pass before the WAL is checkpointed (off the writer's path).
CHECKPOINT_EVERY: Final = 100

log = logging.getLogger(__name__)


def translate(route: str, exc: sqlite3.Error) -> EnginesError:
    """The one translation table from the driver's errors to ours (the original kept as
    ``__cause__``)."""
    error = BackendUnavailable(route, "sqlite", f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _is_busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


class Grouped(Generic[Item, T]):
    """A job that runs in one call with the jobs of its kind queued right behind it in
    the same group: ``run_many(conn, items)`` answers each item, in order, with
    ``(True, result)`` or ``(False, exception)``, and writes nothing for an item it
    refuses. If it raises, every item of the group is redone alone (``run_many`` with
    one item) under its own savepoint, so one item's failure undoes that item only."""

    __slots__ = ("item", "run_many")

    def __init__(
        self, run_many: Callable[[sqlite3.Connection, list[Item]], list[Outcome]], item: Item
    ) -> None:
        self.run_many = run_many
        self.item = item

    def joins(self, other: object) -> bool:
        return isinstance(other, Grouped) and other.run_many == self.run_many

    def __call__(self, conn: sqlite3.Connection) -> T:
        ((ok, value),) = self.run_many(conn, [self.item])
        if not ok:
            raise value
        return cast(T, value)


Route = str | None
"""What a call is for: the physical name of the route's table, named in its errors
(``None``: the database file)."""


@dataclass(slots=True)
class _Queued:
    job: Job
    future: asyncio.Future[Any]
    """What the caller awaits."""
    route: str
    """What its errors name."""
    weight: int
    since: float
    """When it was queued (the loop's clock): a lock is waited for at most
    ``busy_timeout_ms`` from then, however many groups wait before it."""


class SqliteDatabase:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 200,
        thread_from: int = 8,
        readers: int = 2,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.thread_from = thread_from
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._open = False
        self._pending: list[_Queued] = []
        self._scheduled = False
        self._in_flight: asyncio.Future[Any] | None = None
        """The group the writer's thread is running, if any."""
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="sqlite-reader", initializer=self._open_reader
        )
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_waiters: set[asyncio.Future[None]] = set()
        self.commits = 0
        self._checkpointer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite-checkpoint", initializer=self._open_reader
        )
        self._checkpoint: asyncio.Future[Any] | None = None
        self._checkpointed_at = 0
        self._finish_checkpoint = False

    # -- life cycle -------------------------------------------------------------------

    def _connect(self, busy_timeout_ms: int | None = None) -> sqlite3.Connection:
        timeout = self.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        """The writer's connection: it waits for no lock (see the module), and it leaves
        checkpoints to the checkpointer, so no commit pays for copying the WAL back."""
        conn = self._connect(0)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _create_private(self) -> None:
        """Create the directory (0700) and the file (0600) if absent: SQLite gives its
        WAL and shared-memory files the database file's permissions."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))

    async def open(self, *, create: bool = True) -> None:
        """Create the file (unless told not to), then open the writer's connection."""
        self._loop = asyncio.get_running_loop()
        try:
            if create:
                await asyncio.to_thread(self._create_private)
            conn = await asyncio.to_thread(self._connect_writer)
            # Switching to WAL needs the write lock once: wait for it off the loop.
            await asyncio.to_thread(self._enable_wal, conn)
        except OSError as exc:
            raise BackendUnavailable(str(self.path), "sqlite", str(exc)) from exc
        except sqlite3.Error as exc:
            raise translate(str(self.path), exc) from exc
        self._conn = conn
        self._open = True

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA busy_timeout = 0")

    async def write_script(self, statements: list[str], *, route: Route = None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for statement in statements:
                conn.execute(statement)

        await self.write(run, route=route)

    async def aclose(self) -> None:
        if not self._open and self._loop is None:
            return
        self._open = False  # refuse new writes from here on
        while self._in_flight is not None or self._scheduled:
            if self._in_flight is not None:
                await asyncio.wait({self._in_flight})
            else:
                await asyncio.sleep(0)
        self._fail_pending("the database was closed")
        if self._checkpoint is not None:
            await asyncio.wait({self._checkpoint})
        self._discard(self._conn)
        self._conn = None
        self._writer_thread.shutdown(wait=True)
        await asyncio.to_thread(self._checkpointer.shutdown, True)
        await asyncio.to_thread(self._reader_pool.shutdown, True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._loop = None

    # -- writing ------------------------------------------------------------------------

    def _route(self, route: Route) -> str:
        """What an error names: the route (its table), else the database file by name
        (never its path: errors reach clients, /readyz anyone)."""
        return route if route is not None else self.path.name

    async def write(
        self, job: Callable[[sqlite3.Connection], T], *, route: Route = None, weight: int = 1
    ) -> T:
        """Run ``job`` atomically in the writer's next transaction; return its result or
        raise its exception. The transaction is committed (durably, per ``synchronous``)
        before this returns. ``weight``: about what it costs, in single appends (a group
        weighing ``thread_from`` or more runs on the writer's thread)."""
        loop = self.check_writer()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Queued(job, future, self._route(route), weight, loop.time()))
        if not self._scheduled and self._in_flight is None:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def check_writer(self) -> asyncio.AbstractEventLoop:
        """The loop writes are answered on; :class:`BackendUnavailable` if the database
        is not open."""
        if not self._open or self._loop is None:
            raise BackendUnavailable(self.path.name, "sqlite", "the database is not open")
        return self._loop

    def _flush(self) -> None:
        """Run the next group of pending jobs in one transaction: a light group on the
        loop's thread, a heavy one (or one that must wait for the lock) on the writer's."""
        self._scheduled = False
        if not self._pending or self._in_flight is not None:
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        try:
            if self._conn is None:
                self._conn = self._connect_writer()
            self._finish(self._conn)
            if sum(queued.weight for queued in batch) >= self.thread_from:
                self._on_writer_thread(batch)
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                self._on_writer_thread(batch)  # it waits for the lock there
                return
            outcomes = self._run_open_batch(self._conn, batch)
        except BaseException as exc:  # never leave a caller waiting for ever
            self._writer_failed(batch, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._deliver(batch, outcomes)
        self._next()

    def _finish(self, conn: sqlite3.Connection) -> None:
        """The writer's end of a checkpoint (see :meth:`_start_checkpoint`)."""
        if self._finish_checkpoint:
            self._finish_checkpoint = False
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("sqlite %s: checkpoint failed: %r", self.path, exc)

    def _next(self) -> None:
        if self._pending and not self._scheduled and self._in_flight is None:
            assert self._loop is not None
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _on_writer_thread(self, batch: list[_Queued]) -> None:
        """Run this group on the writer's thread, waiting there for a lock another
        process holds (until its oldest job has waited ``busy_timeout_ms``); the loop
        goes on, and the next group queues until this one is done. The driver lets go
        of the GIL while SQLite works, so the loop's Python work overlaps the group's
        SQL."""
        assert self._loop is not None
        assert self._conn is not None
        conn = self._conn
        waited_ms = (self._loop.time() - min(queued.since for queued in batch)) * 1000
        wait_ms = max(0, int(self.busy_timeout_ms - waited_ms))

        def run() -> list[Outcome]:
            conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                return [(False, translate(queued.route, exc)) for queued in batch]
            finally:
                conn.execute("PRAGMA busy_timeout = 0")
            return self._run_open_batch(conn, batch)

        in_flight = self._loop.run_in_executor(self._writer_thread, run)
        self._in_flight = in_flight

        def done(task: asyncio.Future[list[Outcome]]) -> None:
            self._in_flight = None
            exc = asyncio.CancelledError() if task.cancelled() else task.exception()
            if exc is not None:
                self._writer_failed(batch, exc)
            else:
                self._deliver(batch, task.result())
            self._next()

        in_flight.add_done_callback(done)

    def _writer_failed(self, batch: list[_Queued], exc: BaseException) -> None:
        """Answer every job of a group that blew up, and drop the connection: it may be
        unusable (the file replaced, a disk error); the next group opens a new one, so
        the service recovers without a restart."""
        failed: list[Outcome] = [
            (False, BackendUnavailable(queued.route, "sqlite", f"writer failed: {exc!r}"))
            for queued in batch
        ]
        self._deliver(batch, failed)
        self._discard(self._conn)
        self._conn = None

    @staticmethod
    def _discard(conn: sqlite3.Connection | None) -> None:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _fail_pending(self, why: str) -> None:
        """Answer every job still pending with an error."""
        pending, self._pending = self._pending, []
        for queued in pending:
            if not queued.future.done():
                queued.future.set_exception(BackendUnavailable(queued.route, "sqlite", why))

    def _run_open_batch(self, conn: sqlite3.Connection, batch: list[_Queued]) -> list[Outcome]:
        """The whole group in the transaction just begun. Jobs first run back to back; a
        job that refuses (raises one of our errors) having written nothing needs no undo.
        Any other failure rolls the transaction back and reruns the group with a
        SAVEPOINT around each job, so each job's failure, a driver error included, undoes
        that job alone."""
        try:
            conn.execute("SAVEPOINT grp")  # to undo the first pass without the lock
            outcomes = self._run_jobs(conn, batch, savepoints=False)
            if outcomes is None:
                conn.execute("ROLLBACK TO grp")
                outcomes = self._run_jobs(conn, batch, savepoints=True)
                assert outcomes is not None
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(False, translate(queued.route, exc)) for queued in batch]
        return outcomes

    def _run_jobs(
        self, conn: sqlite3.Connection, batch: list[_Queued], *, savepoints: bool
    ) -> list[Outcome] | None:
        outcomes: list[Outcome] = []
        index = 0
        while index < len(batch):
            job, route = batch[index].job, batch[index].route
            if not savepoints and isinstance(job, Grouped):
                # this job and the ones of its kind queued right behind it, in one call
                end = index + 1
                while end < len(batch) and job.joins(batch[end].job):
                    end += 1
                items = [cast(Grouped[Any, Any], queued.job).item for queued in batch[index:end]]
                try:
                    outcomes += job.run_many(conn, items)
                except Exception:
                    return None  # redo the batch, each item alone under its savepoint
                index = end
                continue
            index += 1
            if savepoints:
                conn.execute("SAVEPOINT job")
            before = conn.total_changes
            try:
                result = job(conn)
            except Exception as exc:
                if not savepoints:
                    if isinstance(exc, EnginesError) and conn.total_changes == before:
                        outcomes.append((False, exc))  # refused before writing
                        continue
                    return None  # redo the batch with savepoints
                if not conn.in_transaction:
                    raise  # the transaction itself is gone: fail the batch
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append(
                    (
                        False,
                        translate(route, exc) if isinstance(exc, sqlite3.Error) else exc,
                    )
                )
            else:
                if savepoints:
                    conn.execute("RELEASE job")
                outcomes.append((True, result))
        return outcomes

    def _deliver(self, batch: list[_Queued], outcomes: list[Outcome]) -> None:
        for queued, (ok, value) in zip(batch, outcomes, strict=True):
            future = queued.future
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if any(ok for ok, _ in outcomes):
            self.commits += 1
            waiters, self._commit_waiters = self._commit_waiters, set()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if self.commits - self._checkpointed_at >= CHECKPOINT_EVERY:
                self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        """Copy the WAL back into the database on the checkpointer's thread (PASSIVE: it
        waits for no reader or writer, and the writer goes on appending meanwhile).

        SQLite starts the WAL over only when a write transaction begins with every frame
        copied back, which a writer that keeps writing never sees after a checkpoint of
        another connection. So the writer then copies the few frames added meanwhile
        itself, before its next group (:meth:`_finish`), and the WAL starts over."""
        if self._checkpoint is not None or self._loop is None:
            return
        self._checkpointed_at = self.commits

        def checkpoint() -> None:
            conn: sqlite3.Connection = self._local.conn
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        def done(task: asyncio.Future[None]) -> None:
            self._checkpoint = None
            if not task.cancelled() and task.exception() is not None:
                log.warning("sqlite %s: checkpoint failed: %r", self.path, task.exception())
            else:
                self._finish_checkpoint = True

        self._checkpoint = self._loop.run_in_executor(self._checkpointer, checkpoint)
        self._checkpoint.add_done_callback(done)

    async def wait_for_commit(self, timeout: float, *, unless_past: int | None = None) -> None:
        """Wait (at most ``timeout`` seconds) for this process's next commit; return at once
        if ``commits`` has already moved past ``unless_past``."""
        assert self._loop is not None
        if unless_past is not None and self.commits != unless_past:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._commit_waiters.add(waiter)
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
            # races with the waiter's result, and the runtime's close then hangs.
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            self._commit_waiters.discard(waiter)

    async def try_write_lock(self, timeout: float = 1.0) -> None:
        """:class:`BackendUnavailable` unless a write transaction could begin within
        ``timeout`` seconds (another process holding the write lock makes writes wait)."""

        def attempt() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=timeout)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()

        try:
            await asyncio.to_thread(attempt)
        except sqlite3.Error as exc:
            raise translate(self.path.name, exc) from exc

    # -- reading ------------------------------------------------------------------------

    def _open_reader(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        self._local.conn = conn
        with self._lock:
            self._reader_conns.append(conn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection = self._local.conn
        return fn(conn)

    async def fetchall(
        self, sql: str, args: Sequence[Any] = (), *, route: Route = None
    ) -> list[Any]:
        return await self.read(lambda conn: conn.execute(sql, args).fetchall(), route=route)

    async def fetchall_in(
        self,
        sql: str,
        values: Sequence[Any],
        *,
        leading: Sequence[Any] = (),
        route: Route = None,
    ) -> list[Any]:
        """The rows of ``sql`` (which ends in ``IN``) for every one of ``values``, bound
        ``IN_CHUNK`` at a time after the ``leading`` arguments; each value once."""
        wanted = list(dict.fromkeys(values))
        rows: list[Any] = []
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start : start + IN_CHUNK]
            text = f"{sql} ({', '.join('?' * len(chunk))})"
            rows += await self.fetchall(text, [*leading, *chunk], route=route)
        return rows

    async def fetchone(self, sql: str, args: Sequence[Any] = (), *, route: Route = None) -> Any:
        return await self.read(lambda conn: conn.execute(sql, args).fetchone(), route=route)

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, route: Route = None) -> T:
        """Run ``fn`` on a reader connection in the reader pool."""
        if self._loop is None:
            raise BackendUnavailable(self._route(route), "sqlite", "the database is not open")
        try:
            return await self._loop.run_in_executor(self._reader_pool, self._run_read, fn)
        except sqlite3.Error as exc:
            raise translate(self._route(route), exc) from exc
