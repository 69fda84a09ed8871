"""The handler shape every domain uses: load stream → fold → decide → append.

A domain supplies a :class:`Decider` (pure functions, tested without I/O); :func:`execute`
does the I/O: it answers a repeated command with its original result, checks an explicit
expected version (after deciding, so not-found is not masked), and retries a concurrent
write, with jittered backoff, when the caller did not pin a version.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from commands.envelope import Command, CommandResult
from spine.errors import ConcurrencyError
from spine.events import NO_STREAM, EventEnvelope, NewEvent
from spine.store import EventStore

S = TypeVar("S")
C = TypeVar("C", bound=Command[Any], contravariant=True)


class Decider(Protocol, Generic[S, C]):
    def stream_id(self, command: C) -> str: ...

    def initial(self) -> S: ...

    def evolve(self, state: S, event: EventEnvelope) -> S: ...

    def decide(self, state: S, command: C) -> Sequence[NewEvent]: ...


def fold(decider: Decider[S, Any], events: Sequence[EventEnvelope]) -> S:
    state = decider.initial()
    for event in events:
        state = decider.evolve(state, event)
    return state


async def execute(
    store: EventStore, decider: Decider[S, C], command: C, *, max_attempts: int = 100
) -> CommandResult:
    stream_id = decider.stream_id(command)
    for attempt in range(1, max_attempts + 1):
        events = await store.read_stream(stream_id)
        done = [e for e in events if e.command_id == command.command_id]
        if done:
            return CommandResult(
                stream_id=stream_id, version=done[-1].seq, events=tuple(done), deduplicated=True
            )
        version = events[-1].seq if events else 0
        # Decide first: a caller who may not see the entity learns nothing from a
        # version check (not-found wins over a stale If-Match).
        new_events = decider.decide(fold(decider, events), command)
        if command.expected_version is not None and command.expected_version != version:
            raise ConcurrencyError(stream_id, command.expected_version, version)
        try:
            result = await store.append(stream_id, new_events, version or NO_STREAM)
        except ConcurrencyError:
            if command.expected_version is not None or attempt == max_attempts:
                raise
            # Another writer won this round; back off a little, with jitter, and redo.
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
            continue
        return CommandResult(
            stream_id=stream_id,
            version=result.last_seq,
            events=result.events,
            deduplicated=result.deduplicated,
        )
    raise AssertionError("unreachable")  # pragma: no cover
