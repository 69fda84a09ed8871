"""What ``engines audit verify`` and ``engines audit anchor`` do, over any
:class:`~spine.store.EventStore`: read what is stored (bad bodies included), verify it
(:mod:`spine.verify`) against the anchors (:mod:`spine.anchors`), and append anchors.

Reads go through :func:`stored_events`: a store that can scan without stopping at a body
it cannot decode (``scan_delivered``, as the stores a relay follows offer) is scanned so,
and a bad body is a bad event of its stream; any other is scanned with ``scan``, where
a bad body ends the scan with :class:`~spine.errors.IntegrityError`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Protocol, runtime_checkable

from spine.anchors import (
    ANCHOR_DOMAIN,
    ANCHOR_EVENT,
    AnchorPayload,
    AnchorState,
    WitnessLine,
    anchor_stream_id,
    decide_anchors,
    fold_anchors,
    witness_line,
    witness_problem,
)
from spine.errors import ConcurrencyError, IntegrityError, RoutingError, StreamNotFound
from spine.events import NO_STREAM, EventEnvelope, Mode, NewEvent, new_id
from spine.feed import Delivered, Unreadable
from spine.store import EventStore
from spine.streams import ScanScope, parse_stream_id, scan_scope
from spine.verify import Break, ChainVerifier, Head, verify_events

#: How many events one read of a stream asks for.
PAGE: Final = 500
#: How often an anchor run re-reads and redoes a tenant's anchors after losing a race.
ANCHOR_TRIES: Final = 3

Progress = Callable[[int], None]


@runtime_checkable
class ScansStored(Protocol):
    """A store that scans without stopping at a stored body it cannot decode."""

    def scan_delivered(
        self, *, domain: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[Delivered]: ...


async def stored_events(
    store: EventStore,
    *,
    domain: str | None = None,
    tenant_id: str | None = None,
    mode: Mode | None = None,
) -> AsyncIterator[Delivered]:
    """Every stored event in scope, each stream in seq order, an undecodable body as
    :class:`~spine.feed.Unreadable` where the store can say so (see the module)."""
    scope = scan_scope(domain, tenant_id, mode)
    if not isinstance(store, ScansStored):
        async for event in store.scan(domain=domain, tenant_id=tenant_id, mode=mode):
            yield event
        return
    async for item in store.scan_delivered(domain=domain):
        try:
            held = scope.holds(item.stream_id)
        except ValueError:  # not a stream id at all: the verifier says so
            held = tenant_id is None and mode is None
        if held:
            yield item


async def stream_events(store: EventStore, stream_id: str) -> AsyncIterator[Delivered]:
    """Every stored event of one stream, in seq order, a page at a time. A page holding
    a body that cannot be decoded is read again an event at a time, up to that event,
    which comes as :class:`~spine.feed.Unreadable` and ends the read."""
    seq = 1
    while True:
        try:
            events = await store.read_stream(stream_id, seq, seq + PAGE - 1)
        except IntegrityError:
            for one in range(seq, seq + PAGE):
                try:
                    for event in await store.read_stream(stream_id, one, one):
                        yield event
                except IntegrityError as exc:
                    yield Unreadable(stream_id, one, str(exc))
                    return
            seq += PAGE
            continue
        if not events:  # past the end, or a page-long gap: whatever follows, at once
            for event in await store.read_stream(stream_id, seq):
                yield event
            return
        for event in events:
            yield event
        seq += PAGE


async def read_anchors(
    store: EventStore, *, tenant_id: str | None, mode: Mode | None, key: bytes | None
) -> dict[str, AnchorState]:
    """Every anchor stream in scope, folded (with ``key``: macs checked), by stream id."""
    found: dict[str, list[Delivered]] = defaultdict(list)
    async for item in stored_events(store, domain=ANCHOR_DOMAIN, tenant_id=tenant_id, mode=mode):
        found[item.stream_id].append(item)
    states = {}
    for sid, items in found.items():
        try:
            name = parse_stream_id(sid)
        except ValueError:
            continue
        if sid == anchor_stream_id(name.tenant_id, name.mode):
            states[sid] = fold_anchors(sid, items, key)
    return states


async def read_anchor_state(
    store: EventStore, anchor_stream: str, key: bytes | None
) -> AnchorState:
    return fold_anchors(anchor_stream, [e async for e in stream_events(store, anchor_stream)], key)


@dataclass
class VerifyReport:
    """What a verify found."""

    breaks: list[Break]
    streams: int
    events: int
    anchors: int = 0
    """Anchor events folded."""
    anchor_streams: int = 0
    last_anchor: datetime | None = None
    """The least recent of the anchor streams' last anchors (``None``: no anchor)."""
    warnings: list[str] = field(default_factory=list)
    witnessed: int = 0
    """Anchor streams checked against their witnessed head."""
    seconds: float = 0.0


def _anchor_summary(
    report: VerifyReport, states: dict[str, AnchorState], key: bytes | None
) -> None:
    report.anchor_streams = len(states)
    report.anchors = sum(s.anchors for s in states.values())
    lasts = [s.last_at for s in states.values() if s.last_at is not None]
    report.last_anchor = min(lasts) if lasts else None
    if key is None:
        for sid, state in sorted(states.items()):
            if state.macs:
                report.warnings.append(
                    f"{sid}: {state.macs} anchors carry a mac that was not checked "
                    "(no audit.anchor_key_file configured)"
                )


async def _settle_anchored(store: EventStore, verifier: ChainVerifier) -> None:
    """Anchored streams that the scan found short of their anchors (or not at all) are
    read directly (some stores' scans find a stream by its first event), then judged."""
    for sid in verifier.short_of_anchors():
        if sid not in verifier.heads:
            async for item in stream_events(store, sid):
                verifier.add(item)
        verifier.truncation(sid)


async def _check_witnessed(
    store: EventStore,
    verifier: ChainVerifier,
    witnessed: Mapping[str, WitnessLine],
    scope: ScanScope,
) -> int:
    """Each anchor stream in ``scope`` with a witnessed head must still hold that anchor
    (its hash, its mac): a witness outside the stores catches anchors removed (all, or
    the newest: a rollback), which nothing inside them can. Returns how many were
    checked; a failure is the anchor stream's break."""
    checked = 0
    for sid, line in sorted(witnessed.items()):
        if not scope.holds(sid):
            continue
        checked += 1
        try:
            stored: Delivered | None = next(
                iter(await store.read_stream(sid, line.seq, line.seq)), None
            )
        except IntegrityError as exc:
            stored = Unreadable(sid, line.seq, str(exc))
        problem = witness_problem(line, stored)
        if problem is not None:
            event_id = stored.event_id if isinstance(stored, EventEnvelope) else None
            verifier.mark(Break(sid, line.seq, problem, event_id))
    return checked


def _unanchored(verifier: ChainVerifier, states: Mapping[str, AnchorState]) -> list[str]:
    """Warnings: each tenant and mode whose streams were verified but that holds no
    anchor at all (never anchored, or its anchors removed)."""
    counts: dict[str, int] = defaultdict(int)
    for sid in [*verifier.heads, *verifier.broken]:
        try:
            name = parse_stream_id(sid)
        except ValueError:
            continue
        if name.domain != ANCHOR_DOMAIN:
            counts[anchor_stream_id(name.tenant_id, name.mode)] += 1
    return [
        f"{sid.split('/', 1)[1].rsplit('/', 1)[0]}: not anchored: {n} streams and no anchor "
        "(never anchored, or its anchors were removed; run `engines audit anchor`, and "
        "keep a --witness)"
        for sid, n in sorted(counts.items())
        if sid not in states or not states[sid].anchors
    ]


async def verify_spine(
    store: EventStore,
    *,
    tenant_id: str | None = None,
    mode: Mode | None = None,
    key: bytes | None = None,
    witnessed: Mapping[str, WitnessLine] | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify every stream in scope from the genesis, against its anchors, and each
    anchor stream against its ``witnessed`` head (by anchor stream id). With ``key``, a
    tenant and mode with streams but no anchor is a warning."""
    began = time.monotonic()
    states = await read_anchors(store, tenant_id=tenant_id, mode=mode, key=key)
    anchored: dict[str, Head] = {}
    for state in states.values():
        anchored.update(state.heads)
    verifier = ChainVerifier(anchored)
    for state in states.values():
        if state.broken is not None:
            verifier.mark(state.broken)
    seen = 0
    async for item in stored_events(store, tenant_id=tenant_id, mode=mode):
        verifier.add(item)
        seen += 1
        if progress is not None and seen % 1000 == 0:
            progress(1000)
    if progress is not None:
        progress(seen % 1000)
    await _settle_anchored(store, verifier)
    checked = await _check_witnessed(
        store, verifier, witnessed or {}, scan_scope(None, tenant_id, mode)
    )
    report = VerifyReport(
        breaks=sorted(verifier.broken.values(), key=lambda b: b.stream_id),
        streams=verifier.streams,
        events=verifier.events,
        witnessed=checked,
    )
    _anchor_summary(report, states, key)
    if key is not None:
        report.warnings += _unanchored(verifier, states)
    report.seconds = time.monotonic() - began
    return report


async def verify_stream(
    store: EventStore,
    stream_id: str,
    *,
    key: bytes | None = None,
    witnessed: Mapping[str, WitnessLine] | None = None,
) -> VerifyReport:
    """Verify one stream from the genesis, against its tenant's anchors, and that
    anchor stream against its ``witnessed`` head."""
    began = time.monotonic()
    name = parse_stream_id(stream_id)
    anchor_stream = anchor_stream_id(name.tenant_id, name.mode)
    state = await read_anchor_state(store, anchor_stream, key)
    items = [e async for e in stream_events(store, stream_id)]
    anchored = state.heads.get(stream_id)
    if not items and anchored is None:
        raise StreamNotFound(stream_id)
    count, found = verify_events(stream_id, items, anchored=anchored)
    anchors = ChainVerifier()
    if state.broken is not None:
        anchors.mark(state.broken)
    line = (witnessed or {}).get(anchor_stream)
    checked = 0
    if line is not None:
        scope = scan_scope(ANCHOR_DOMAIN, name.tenant_id, name.mode)
        checked = await _check_witnessed(store, anchors, {anchor_stream: line}, scope)
    breaks = [b for b in (*anchors.broken.values(), found) if b is not None]
    report = VerifyReport(breaks=breaks, streams=1, events=count, witnessed=checked)
    _anchor_summary(report, {anchor_stream: state} if state.anchors or state.broken else {}, key)
    if key is not None and not state.anchors:
        report.warnings.append(
            f"{name.tenant_id}/{name.mode}: not anchored: no anchor (never anchored, or its "
            "anchors were removed; run `engines audit anchor`, and keep a --witness)"
        )
    report.seconds = time.monotonic() - began
    return report


@dataclass
class Anchored:
    """What one anchor run appended to one tenant's anchor stream in one mode."""

    anchor_stream: str
    heads: int
    """Stream heads recorded (those that moved since the previous anchor)."""
    first_seq: int | None
    last_seq: int | None
    keyed: bool
    witness: WitnessLine | None = None
    """The anchor stream's head after the run, for a witness file (``None``: none)."""


@dataclass
class AnchorReport:
    anchored: list[Anchored]
    broken: list[Break]
    """Streams that do not verify: not anchored."""
    streams: int
    events: int
    seconds: float = 0.0


def anchor_event(anchor_stream: str, payload: dict[str, object], command_id: str) -> NewEvent:
    name = parse_stream_id(anchor_stream)
    return NewEvent(
        event_type=ANCHOR_EVENT,
        tenant_id=name.tenant_id,
        mode=name.mode,
        source="tool",
        command_id=command_id,
        payload=payload,
    )


def _after(state: AnchorState, hash_: str, seq: int, payload: AnchorPayload) -> AnchorState:
    """``state``'s head once ``payload`` is appended as ``seq`` with ``hash_``."""
    return replace(state, version=seq, hash=hash_, mac=payload.mac or "", heads={})


async def _anchor_one(
    store: EventStore,
    anchor_stream: str,
    state: AnchorState,
    heads: dict[str, Head],
    key: bytes | None,
) -> Anchored:
    """Append the anchors of one tenant and mode: each with the exact version the fold
    gave, so a concurrent run makes this one re-read and redo (at most
    :data:`ANCHOR_TRIES` times)."""
    for attempt in range(ANCHOR_TRIES):
        if attempt:
            state = await read_anchor_state(store, anchor_stream, key)
            if state.broken is not None:
                raise IntegrityError(f"anchors not appended: {state.broken}")
        run_id = new_id()
        payloads = decide_anchors(state, heads, key=key, run_id=run_id)
        first: int | None = None
        last: int | None = None
        head = state
        try:
            for part, payload in enumerate(payloads, start=1):
                version = state.version + part - 1
                event = anchor_event(
                    anchor_stream,
                    payload.model_dump(mode="json", exclude_none=True),
                    f"anchor:{run_id}:{part}",
                )
                result = await store.append(anchor_stream, [event], version or NO_STREAM)
                first = first or result.first_seq
                last = result.last_seq
                head = _after(head, result.events[-1].hash, result.last_seq, payload)
        except ConcurrencyError:  # another run anchored meanwhile (what of this one
            continue  # landed, the next fold includes)
        return Anchored(
            anchor_stream,
            heads=sum(len(p.heads) for p in payloads),
            first_seq=first,
            last_seq=last,
            keyed=key is not None,
            witness=witness_line(head, datetime.now(UTC)),
        )
    raise ConcurrencyError(anchor_stream, "the version its anchors were read at", state.version)


async def anchor_spine(
    store: EventStore,
    *,
    tenant_id: str | None = None,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> AnchorReport:
    """Record, per tenant and mode in scope, every stream head that moved since the
    previous anchor. Each stream is verified first (from the genesis, against the
    anchors so far); a broken one is not anchored, and is reported."""
    began = time.monotonic()
    states = await read_anchors(store, tenant_id=tenant_id, mode=None, key=key)
    for sid, state in sorted(states.items()):
        if state.broken is not None:
            raise IntegrityError(f"anchors not appended: {state.broken}")
        if key is None and state.macs:
            raise RoutingError(
                f"{sid}: its anchors carry macs; configure audit.anchor_key_file to anchor "
                "further (an unkeyed anchor after keyed ones would not verify with the key)"
            )
    anchored: dict[str, Head] = {}
    for state in states.values():
        anchored.update(state.heads)
    verifier = ChainVerifier(anchored)
    seen = 0
    async for item in stored_events(store, tenant_id=tenant_id):
        if item.stream_id.startswith(ANCHOR_DOMAIN + "/"):
            continue
        verifier.add(item)
        seen += 1
        if progress is not None and seen % 1000 == 0:
            progress(1000)
    if progress is not None:
        progress(seen % 1000)
    await _settle_anchored(store, verifier)
    by_anchor: dict[str, dict[str, Head]] = defaultdict(dict)
    for sid, head in verifier.heads.items():
        name = parse_stream_id(sid)
        by_anchor[anchor_stream_id(name.tenant_id, name.mode)][sid] = head
    done = []
    for anchor_stream, heads in sorted(by_anchor.items()):
        state = states.get(anchor_stream) or AnchorState(anchor_stream)
        done.append(await _anchor_one(store, anchor_stream, state, heads, key))
    return AnchorReport(
        anchored=done,
        broken=sorted(verifier.broken.values(), key=lambda b: b.stream_id),
        streams=verifier.streams,
        events=verifier.events,
        seconds=time.monotonic() - began,
    )
