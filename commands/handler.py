"""The handler shape every domain uses: load stream → fold → decide → append.

A domain supplies a :class:`Decider` (pure functions, tested without I/O);
:class:`CommandHandler` does the I/O. It answers a repeated command with its original
result, checks an explicit expected version (after deciding, so not-found is not
masked), answers a decision that changes nothing as a success with nothing appended,
and retries a concurrent write, with jittered backoff, when the caller did not pin a
version.

It keeps each recent stream's folded state (bounded, least recently used first out)
and reads only the events appended since, so a command on a long stream does not
re-read the whole stream, nor does each retry. The cache is only a shortcut: every
decision is appended with the exact version it was folded at.

Commands on one stream take turns within a process (a lock per stream, held from the
load to the append): fifty concurrent debits of one budget are decided one after
another on the state the previous one left, instead of all folding the same version
and all but one losing the append, round after round. Other processes, and commands on
other streams, are not held up; a conflict with another process is retried as before.
A command that finds the store unavailable fails the commands queued behind it with the
same error, rather than have each wait out the store's timeout in turn.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from commands.envelope import Command, CommandResult
from spine.errors import (
    BackendUnavailable,
    ConcurrencyError,
    EnginesError,
    IdentityError,
    NotFound,
)
from spine.events import ANY, NO_STREAM, EventEnvelope, NewEvent
from spine.store import EventStore

S = TypeVar("S")
C = TypeVar("C", bound=Command[Any], contravariant=True)

#: How many of a stream's latest command ids the cache remembers for idempotency.
RECENT_COMMANDS = 64


class Decider(Protocol, Generic[S, C]):
    """Pure functions over one stream. ``evolve`` returns a new state and never changes
    the one it is given (states are cached and shared)."""

    def stream_id(self, command: C) -> str: ...

    def initial(self) -> S: ...

    def evolve(self, state: S, event: EventEnvelope) -> S: ...

    def decide(self, state: S, command: C) -> Sequence[NewEvent]:
        """The events ``command`` produces; none if it changes nothing. Raises one of
        :mod:`spine.errors` to refuse."""
        ...


class AppendOnly(Generic[C]):
    """A domain that only records: its commands append to a stream whatever the stream
    holds (telemetry), so nothing is read or folded first and the append expects
    :data:`~spine.events.ANY`. The store still answers a repeated command id with its
    original events. Subclasses give the stream and the events."""

    def stream_id(self, command: C) -> str:
        raise NotImplementedError

    def record(self, command: C) -> Sequence[NewEvent]:
        """The events ``command`` appends (at least one); raises one of
        :mod:`spine.errors` to refuse."""
        raise NotImplementedError


class AppendOnlyHandler(Generic[C]):
    """Handles an :class:`AppendOnly` domain's commands: one append each, no turns and no
    cache, so concurrent commands on one stream share the store's group commit."""

    def __init__(self, store: EventStore, recorder: AppendOnly[C]) -> None:
        self.store = store
        self.recorder = recorder

    async def __call__(self, command: C) -> CommandResult:
        stream_id = self.recorder.stream_id(command)
        result = await self.store.append(stream_id, self.recorder.record(command), ANY)
        return CommandResult(
            stream_id=stream_id,
            version=result.last_seq,
            events=result.events,
            deduplicated=result.deduplicated,
        )


def handler_for(
    store: EventStore, decider: Decider[Any, Any] | AppendOnly[Any]
) -> CommandHandler[Any, Any] | AppendOnlyHandler[Any]:
    """The handler a domain's decider needs."""
    if isinstance(decider, AppendOnly):
        return AppendOnlyHandler(store, decider)
    return CommandHandler(store, decider)


def fold(decider: Decider[S, Any], events: Sequence[EventEnvelope]) -> S:
    state = decider.initial()
    for event in events:
        state = decider.evolve(state, event)
    return state


@dataclass(frozen=True)
class _Folded(Generic[S]):
    """A stream's state folded up to ``version``, and its latest command ids."""

    version: int
    state: S
    recent: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)
    complete: bool = True
    """``recent`` holds every command id of the stream (none was pushed out)."""

    def extend(self, decider: Decider[S, Any], events: Sequence[EventEnvelope]) -> _Folded[S]:
        if not events:
            return self
        state, recent, complete = self.state, OrderedDict(self.recent), self.complete
        for event in events:
            state = decider.evolve(state, event)
            first = recent.get(event.command_id, (event.seq, event.seq))[0]
            recent[event.command_id] = (first, event.seq)
            recent.move_to_end(event.command_id)
            if len(recent) > RECENT_COMMANDS:
                recent.popitem(last=False)
                complete = False
        return _Folded(events[-1].seq, state, recent, complete)


@dataclass
class _Turn:
    """The commands of one stream in this process, one at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    outages: int = 0
    """How many commands found the store unavailable (a waiter compares it with what
    it was when it began to wait)."""
    outage: BackendUnavailable | None = None


class CommandHandler(Generic[S, C]):
    """Handles the commands of one decider against ``store``."""

    def __init__(
        self,
        store: EventStore,
        decider: Decider[S, C],
        *,
        cache_size: int = 10_000,
        max_attempts: int = 100,
    ) -> None:
        self.store = store
        self.decider = decider
        self.cache_size = cache_size
        self.max_attempts = max_attempts
        self._cache: OrderedDict[str, _Folded[S]] = OrderedDict()
        self._turns: dict[str, _Turn] = {}

    async def __call__(self, command: C) -> CommandResult:
        stream_id = self.decider.stream_id(command)
        turn = self._turns.get(stream_id)
        if turn is None:
            turn = self._turns[stream_id] = _Turn()
        turn.waiting += 1
        outages = turn.outages
        try:
            async with turn.lock:
                if turn.outages != outages and turn.outage is not None:
                    # the store failed a command queued before this one meanwhile: say so
                    # now, rather than wait out its timeout again
                    failed = turn.outage
                    raise BackendUnavailable(failed.route, failed.backend, failed.detail)
                try:
                    return await self._handle(stream_id, command)
                except BackendUnavailable as exc:
                    turn.outages += 1
                    turn.outage = exc
                    raise
        finally:
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[stream_id]

    async def _handle(self, stream_id: str, command: C) -> CommandResult:
        for attempt in range(1, self.max_attempts + 1):
            folded = await self._load(stream_id)
            if (done := folded.recent.get(command.command_id)) is not None:
                return await self._original(stream_id, command.command_id, done)
            try:
                # Decide first: a caller who may not see the entity learns nothing from a
                # version check (not-found wins over a stale If-Match).
                new_events = self.decider.decide(folded.state, command)
            except EnginesError as refusal:
                # A refusal may be a repeated command whose result is older than the
                # remembered ids: its original answer wins.
                if not folded.complete:
                    found = await self._find(stream_id, command.command_id, folded.version)
                    if found is not None:
                        return found
                # A caller who pinned a stale version decided on a state that is gone:
                # that is what to tell them (412), not what the current state refuses;
                # except not-found and identity refusals, which tell nothing of it.
                expected = command.expected_version
                if (
                    expected is not None
                    and expected != folded.version
                    and not isinstance(refusal, NotFound | IdentityError)
                ):
                    raise ConcurrencyError(stream_id, expected, folded.version) from refusal
                raise
            expected = command.expected_version
            if expected is not None and expected != folded.version:
                raise ConcurrencyError(stream_id, expected, folded.version)
            if not new_events:
                return CommandResult(stream_id=stream_id, version=folded.version, events=())
            try:
                result = await self.store.append(stream_id, new_events, folded.version or NO_STREAM)
            except ConcurrencyError:
                if expected is not None or attempt == self.max_attempts:
                    raise
                # Another writer won this round; back off a little, with jitter, and redo
                # (the next round reads only what the winner appended).
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
                continue
            if result.deduplicated:
                self._cache.pop(stream_id, None)
            else:
                self._keep(stream_id, folded.extend(self.decider, result.events))
            return CommandResult(
                stream_id=stream_id,
                version=result.last_seq,
                events=result.events,
                deduplicated=result.deduplicated,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _load(self, stream_id: str) -> _Folded[S]:
        """The stream folded to its current version: the cached fold plus what was
        appended since."""
        cached = self._cache.get(stream_id) or _Folded(0, self.decider.initial())
        tail = await self.store.read_stream(stream_id, cached.version + 1)
        folded = cached.extend(self.decider, tail)
        self._keep(stream_id, folded)
        return folded

    def _keep(self, stream_id: str, folded: _Folded[S]) -> None:
        if self.cache_size <= 0:
            return
        current = self._cache.get(stream_id)
        if current is None or current.version <= folded.version:
            self._cache[stream_id] = folded
        self._cache.move_to_end(stream_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _original(
        self, stream_id: str, command_id: str, seqs: tuple[int, int]
    ) -> CommandResult:
        events = await self.store.read_stream(stream_id, seqs[0], seqs[1])
        mine = tuple(e for e in events if e.command_id == command_id)
        return CommandResult(
            stream_id=stream_id, version=mine[-1].seq, events=mine, deduplicated=True
        )

    async def _find(self, stream_id: str, command_id: str, version: int) -> CommandResult | None:
        events = await self.store.read_stream(stream_id, 1, version)
        mine = tuple(e for e in events if e.command_id == command_id)
        if not mine:
            return None
        return CommandResult(
            stream_id=stream_id, version=mine[-1].seq, events=mine, deduplicated=True
        )


async def execute(
    store: EventStore, decider: Decider[S, C], command: C, *, max_attempts: int = 100
) -> CommandResult:
    """Handle one command with no cache (tools and tests)."""
    handler = CommandHandler(store, decider, cache_size=0, max_attempts=max_attempts)
    return await handler(command)
