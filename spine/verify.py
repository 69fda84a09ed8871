"""Verifying stored streams from the genesis: what ``engines audit verify`` and
``engines spine read --verify`` check of every event, as pure functions.

A stream verifies when its stored events are seq 1, 2, 3 ... with no gap; seq 1 chains
to :data:`~spine.events.GENESIS_HASH` and each later event to its predecessor's
``hash``; each ``hash`` recomputes (:func:`spine.codec.expected_hash`, which covers the
``stream_id`` and ``seq`` a store keys the event by, so a body stored under another
stream's key or seq does not verify); the event's ``tenant_id`` and ``mode`` are the
stream id's; and its family agrees with the stream's domain (:func:`family_problem`).
A stored body that cannot be decoded is a bad event like any other.

:class:`ChainVerifier` takes the events of many streams in any interleaving (a scan
promises each stream's seq order, nothing across streams) and keeps, per stream, only
the last verified seq and hash, or the stream's first bad event: its memory is
O(streams), never O(events). Once a stream is broken its later events are passed over;
the report names each broken stream once, with its *first* bad event.

Given the heads that anchors recorded (:mod:`spine.anchors`), it also checks that the
event at each anchored seq still has the anchored hash ("rewritten history"); what an
anchored stream lacks (a removed tail, a removed stream) only shows once its events are
all seen: :meth:`ChainVerifier.short_of_anchors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, get_args

from spine.codec import expected_hash
from spine.errors import InvalidStreamId
from spine.events import GENESIS_HASH, EventEnvelope, Family
from spine.feed import Unreadable
from spine.streams import StreamName, parse_stream_id

#: The families that are stream domains of their own: an event of one lives in a stream
#: of that domain, and a stream of that domain holds only that family's events, each
#: ``event_type`` naming the family first (``budget.debited`` in ``budget/...``).
FAMILY_DOMAINS: Final = frozenset(get_args(Family)) - {"domain"}


@dataclass(frozen=True, slots=True)
class Break:
    """A stream's first bad event: where, what is wrong, and its event id where the
    event could be read (a missing event has none)."""

    stream_id: str
    seq: int
    problem: str
    event_id: str | None = None

    def __str__(self) -> str:
        return f"{self.stream_id} seq {self.seq}: {self.problem}"


class Head(NamedTuple):
    """A stream's position: a seq and the hash of the event there."""

    seq: int
    hash: str


def family_problem(event: EventEnvelope, domain: str) -> str | None:
    """What is wrong with ``event``'s family in a stream of ``domain``, if anything."""
    family = event.family
    if family != "domain":
        if domain != family:
            return f"an event of family {family!r} in a stream of domain {domain!r}"
        if event.event_type.split(".", 1)[0] != family:
            return f"event_type {event.event_type!r} does not name its family {family!r} first"
    elif domain in FAMILY_DOMAINS:
        return f"an event of family 'domain' in the stream of family {domain!r}"
    return None


def event_problem(event: EventEnvelope, name: StreamName, prev_hash: str) -> str | None:
    """What is wrong with ``event`` (at the seq its stream expects next, whose
    predecessor's hash is ``prev_hash``) in the stream ``name``, if anything."""
    if event.tenant_id != name.tenant_id:
        return f"tenant_id {event.tenant_id!r} is not the stream's tenant {name.tenant_id!r}"
    if event.mode != name.mode:
        return f"mode {event.mode!r} is not the stream's mode {name.mode!r}"
    problem = family_problem(event, name.domain)
    if problem is not None:
        return problem
    if event.prev_hash != prev_hash:
        before = "the genesis hash" if event.seq == 1 else f"seq {event.seq - 1}'s hash"
        return f"prev_hash is not {before}"
    if expected_hash(event) != event.hash:
        return "hash does not match the event's content"
    return None


def _is_seq(seq: object) -> bool:
    """Whether a stored seq is one (a whole number from 1): a store keyed by a column
    that takes anything (SQLite) may hold a row at seq 0, ``'3x'`` or ``3.5``."""
    return type(seq) is int and seq >= 1


def _odd_row(seq: object) -> str:
    stored = repr(seq) if isinstance(seq, (int, float)) else repr(str(seq)[:40])
    return f"a row is stored at seq {stored}, not a seq (seqs are whole numbers from 1)"


def _event_id(item: EventEnvelope | Unreadable) -> str | None:
    return item.event_id if isinstance(item, EventEnvelope) else None


class ChainVerifier:
    """Every stream's chain, fed event by event (:meth:`add`), streams interleaved.

    ``anchored``: the heads anchors recorded, by stream; the event at an anchored seq
    must still carry the anchored hash. Memory: one :class:`Head` per stream seen, one
    :class:`Break` per broken stream, and ``anchored`` itself.
    """

    def __init__(self, anchored: Mapping[str, Head] | None = None) -> None:
        self.anchored: Mapping[str, Head] = anchored or {}
        self.heads: dict[str, Head] = {}
        """The last verified event of each stream that is not broken."""
        self.broken: dict[str, Break] = {}
        """Each broken stream's first bad event."""
        self.events = 0
        """Events (and unreadable bodies) passed to :meth:`add`."""

    @property
    def streams(self) -> int:
        return len(self.heads) + len(self.broken)

    def add(self, item: EventEnvelope | Unreadable) -> Break | None:
        """Check one stored event, the next of its stream in seq order; returns the
        stream's break if this event is its first bad one."""
        self.events += 1
        sid = item.stream_id
        if sid in self.broken:
            if not _is_seq(item.seq):  # stored out of order: name it beside the break
                self._name_odd_row(sid, item.seq)
            return None
        head = self.heads.get(sid)
        expected = 1 if head is None else head.seq + 1
        found = self._problem(item, head, expected)
        if found is not None:
            return self.mark(found)
        assert isinstance(item, EventEnvelope)
        self.heads[sid] = Head(item.seq, item.hash)
        return None

    def _problem(
        self, item: EventEnvelope | Unreadable, head: Head | None, expected: int
    ) -> Break | None:
        sid = item.stream_id
        if not _is_seq(item.seq):
            return Break(sid, expected, _odd_row(item.seq), _event_id(item))
        if item.seq > expected:
            return Break(
                sid, expected, f"seq {expected} is missing (the next stored is seq {item.seq})"
            )
        if item.seq < expected:
            return Break(sid, item.seq, f"seq {item.seq} is stored again after seq {expected - 1}")
        if isinstance(item, Unreadable):
            return Break(sid, item.seq, f"unreadable: {item.error}"[:500])
        try:
            name = parse_stream_id(sid)
        except InvalidStreamId as exc:
            return Break(sid, item.seq, f"not a stream id: {exc}", item.event_id)
        problem = event_problem(item, name, GENESIS_HASH if head is None else head.hash)
        if problem is None:
            anchor = self.anchored.get(sid)
            if anchor is not None and anchor.seq == item.seq and anchor.hash != item.hash:
                problem = (
                    f"rewritten history: the hash at seq {item.seq} is not the one anchored "
                    "(the stream was rewritten at or before this seq)"
                )
        return None if problem is None else Break(sid, item.seq, problem, item.event_id)

    def _name_odd_row(self, stream_id: str, seq: object) -> None:
        found = self.broken[stream_id]
        if "not a seq" not in found.problem:
            odd = _odd_row(seq)
            self.broken[stream_id] = Break(
                stream_id, found.seq, f"{found.problem}; and {odd}", found.event_id
            )

    def mark(self, found: Break) -> Break:
        """Record ``found`` as its stream's break (unless it has one already)."""
        self.heads.pop(found.stream_id, None)
        return self.broken.setdefault(found.stream_id, found)

    def short_of_anchors(self) -> list[str]:
        """Anchored streams, not broken, whose verified events end below their anchored
        seq (or that were not seen at all): a removed tail or a removed stream, unless a
        direct read of the stream finds the rest (a scan finds some stores' streams by
        their first event)."""
        out = []
        for sid, anchor in self.anchored.items():
            if sid in self.broken:
                continue
            head = self.heads.get(sid)
            if head is None or head.seq < anchor.seq:
                out.append(sid)
        return sorted(out)

    def truncation(self, stream_id: str) -> Break | None:
        """The break of an anchored stream whose every stored event has been added and
        which ends short of its anchor (``None`` if it does not)."""
        anchor = self.anchored.get(stream_id)
        if anchor is None or stream_id in self.broken:
            return None
        head = self.heads.get(stream_id)
        if head is None:
            found = Break(
                stream_id, 1, f"removed stream: anchored at seq {anchor.seq}, no event stored"
            )
        elif head.seq < anchor.seq:
            found = Break(
                stream_id,
                head.seq + 1,
                f"removed tail: the stream ends at seq {head.seq}, anchored at seq {anchor.seq}",
            )
        else:
            return None
        return self.mark(found)


def verify_events(
    stream_id: str,
    events: Iterable[EventEnvelope | Unreadable],
    *,
    anchored: Head | None = None,
) -> tuple[int, Break | None]:
    """The stream ``stream_id``'s events from seq 1 (every one stored, in seq order):
    how many were checked, and its first bad event (``None``: the stream verifies, and
    holds its ``anchored`` head, if one is given, with the anchored hash)."""
    verifier = ChainVerifier({} if anchored is None else {stream_id: anchored})
    for event in events:
        if event.stream_id != stream_id:
            found = Break(stream_id, event.seq, f"read back as stream {event.stream_id!r}")
            return verifier.events + 1, verifier.mark(found)
        if verifier.add(event) is not None:
            return verifier.events, verifier.broken[stream_id]
    return verifier.events, verifier.truncation(stream_id)
