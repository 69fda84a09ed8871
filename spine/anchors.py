"""Anchors: periodic records of stream heads, against truncation, optionally keyed.

A per-stream hash chain shows any edit of a stored event, but not a removed tail (the
chain that is left still verifies) nor a whole removed stream. So ``engines audit
anchor`` records, per tenant and mode, every stream head (stream id, seq, hash) that
moved since the previous anchor, as events of a stream of their own::

    anchor/{tenant}/{mode}/heads      event_type anchor.heads_recorded
                                      payload {heads: [{stream_id, seq, hash}, ...],
                                               run_id, part, parts, mac}

At most :data:`MAX_HEADS` heads (and :data:`MAX_HEADS_BYTES` of them) an event. The
anchor stream is hash-chained like any stream, and no projector reads its domain.
Folding the anchors (:func:`fold_anchors`) gives each anchored stream's last anchored
head; a verify then reports an anchored stream that is gone, ends below its anchored
seq, or holds another hash there.

**The keyed chain.** With a key (``audit.anchor_key_file``), each anchor carries
``mac = HMAC-SHA256(key, previous anchor's mac || canonical JSON of this anchor)``
(:func:`anchor_mac`: the anchor stream's id, the anchor's seq and its payload but the
mac, sorted keys). Whoever can write to the store but lacks the key can rewrite events
and recompute every sha256 chain, the anchors' own included, but not the macs. The key
rides on the anchors, not on every event's hash, so the stores' append path and the
stored form stay as they are; the events appended since the last anchor are covered by
their (unkeyed) chain only.

**The witness.** Nothing inside the stores proves their own latest state: whoever can
delete events can delete the newest anchors (a rollback) or all of them, and what is
left verifies, keyed or not. So ``audit anchor --witness FILE`` also writes, per anchor
stream, its head after the run (:class:`WitnessLine`: seq, hash, mac) to a file kept
elsewhere, the way a transparency log publishes its signed head; ``audit verify
--witness FILE`` then requires each anchor stream to still hold its witnessed head
(:func:`latest_witnessed`, :func:`witness_problem`).

Pure: no I/O. Appending and scanning are in :mod:`commands.spine_audit`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Final

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from spine.errors import InvalidStreamId
from spine.events import EventEnvelope, Mode
from spine.feed import Unreadable
from spine.streams import parse_stream_id, stream_id
from spine.verify import Break, ChainVerifier, Head

ANCHOR_DOMAIN: Final = "anchor"
"""The anchors' stream domain: no domain of the product uses it, no projector reads it."""
ANCHOR_EVENT: Final = "anchor.heads_recorded"
#: At most this many heads an anchor event ...
MAX_HEADS: Final = 500
#: ... and at most this many bytes of them (an event fits every store's item limit).
MAX_HEADS_BYTES: Final = 200_000
#: The fewest bytes an anchor key may hold.
MIN_KEY_BYTES: Final = 32

Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def anchor_stream_id(tenant_id: str, mode: str) -> str:
    """The stream of a tenant's anchors in ``mode``."""
    return stream_id(ANCHOR_DOMAIN, tenant_id, mode, "heads")


class AnchoredHead(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_id: str = Field(min_length=1, max_length=1024)
    seq: int = Field(ge=1)
    hash: Hash


class AnchorPayload(BaseModel):
    """One anchor event's payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    heads: tuple[AnchoredHead, ...]
    run_id: str = Field(min_length=1, max_length=64)
    """The ``audit anchor`` run that recorded it ..."""
    part: int = Field(ge=1)
    """... as its ``part``-th event of ``parts`` for this tenant and mode."""
    parts: int = Field(ge=1)
    mac: Hash | None = None
    """HMAC-SHA256 chained over the anchors (:func:`anchor_mac`); ``None``: unkeyed."""


def anchor_mac(
    key: bytes, prev_mac: str, anchor_stream: str, seq: int, payload: AnchorPayload
) -> str:
    """The mac of ``payload`` as seq ``seq`` of ``anchor_stream`` after an anchor whose
    mac is ``prev_mac`` (``""`` for the first)."""
    body = payload.model_dump(mode="json", exclude={"mac"})
    message = orjson.dumps(
        {"stream_id": anchor_stream, "seq": seq, "payload": body}, option=orjson.OPT_SORT_KEYS
    )
    return hmac.new(key, prev_mac.encode() + message, hashlib.sha256).hexdigest()


@dataclass
class AnchorState:
    """What a tenant's anchors in one mode say, folded up to the first one that cannot
    be trusted (:attr:`broken`)."""

    stream_id: str
    version: int = 0
    """The anchor stream's last seq folded (what the next anchor appends after)."""
    hash: str = ""
    """The hash of the anchor at :attr:`version` (``""``: none)."""
    mac: str = ""
    """The last anchor's mac (``""``: none)."""
    heads: dict[str, Head] = field(default_factory=dict)
    """Each anchored stream's last anchored head."""
    anchors: int = 0
    macs: int = 0
    """How many of the anchors carry a mac."""
    last_at: datetime | None = None
    """When the last anchor was recorded."""
    broken: Break | None = None
    """The first anchor that does not verify: it and the anchors after it are not folded."""


def fold_anchors(
    anchor_stream: str, events: Iterable[EventEnvelope | Unreadable], key: bytes | None
) -> AnchorState:
    """Fold a tenant's anchor stream (every stored event from seq 1, in seq order).

    Each anchor must verify as an event of its stream (:class:`~spine.verify.ChainVerifier`),
    be an anchor, name only streams of its tenant and mode, never anchor a stream below
    a seq anchored before, and, with ``key``, carry the mac that ``key`` gives. The
    first that does not is :attr:`AnchorState.broken`; the fold stops there.
    """
    name = parse_stream_id(anchor_stream)
    state = AnchorState(anchor_stream)
    chain = ChainVerifier()
    for event in events:
        found = chain.add(event)
        if found is None:
            assert isinstance(event, EventEnvelope)
            problem = _fold_one(state, name.tenant_id, name.mode, event, key)
            if problem is not None:
                found = Break(anchor_stream, event.seq, problem, event.event_id)
        if found is not None:
            state.broken = found
            return state
    return state


def _fold_one(
    state: AnchorState, tenant_id: str, mode: Mode, event: EventEnvelope, key: bytes | None
) -> str | None:
    if event.event_type != ANCHOR_EVENT:
        return f"not an anchor: event_type {event.event_type!r}"
    try:
        payload = AnchorPayload.model_validate(event.payload)
    except ValidationError as exc:
        return f"not an anchor: {exc.errors()[0]['msg']}"[:300]
    if key is not None:
        if payload.mac is None:
            return "the anchor carries no mac, and an anchor key is configured"
        expected = anchor_mac(key, state.mac, state.stream_id, event.seq, payload)
        if not hmac.compare_digest(expected, payload.mac):
            return "the anchor's mac does not verify with the configured anchor key"
    for head in payload.heads:
        try:
            named = parse_stream_id(head.stream_id)
        except InvalidStreamId:
            return f"anchors {head.stream_id[:200]!r}, not a stream id"
        if (named.tenant_id, named.mode) != (tenant_id, mode) or named.domain == ANCHOR_DOMAIN:
            return f"anchors {head.stream_id!r}, not a stream of {tenant_id}/{mode}"
        before = state.heads.get(head.stream_id)
        if before is not None and head.seq < before.seq:
            return (
                f"anchors {head.stream_id} at seq {head.seq}, below seq {before.seq} "
                "anchored before"
            )
        state.heads[head.stream_id] = Head(head.seq, head.hash)
    state.version = event.seq
    state.hash = event.hash
    state.mac = payload.mac or ""
    state.anchors += 1
    state.macs += payload.mac is not None
    state.last_at = event.recorded_at
    return None


def moved_heads(state: AnchorState, heads: Mapping[str, Head]) -> list[AnchoredHead]:
    """The heads in ``heads`` that are not what ``state`` anchored last, by stream id."""
    return [
        AnchoredHead(stream_id=sid, seq=head.seq, hash=head.hash)
        for sid, head in sorted(heads.items())
        if state.heads.get(sid) != head
    ]


def decide_anchors(
    state: AnchorState, heads: Mapping[str, Head], *, key: bytes | None, run_id: str
) -> list[AnchorPayload]:
    """The anchor payloads that record ``heads`` (the stream heads now, of the anchor
    stream's tenant and mode) after ``state``: those that moved, :data:`MAX_HEADS` (and
    :data:`MAX_HEADS_BYTES`) an anchor, each with its mac when ``key`` is given, chained
    as seqs ``state.version + 1, + 2 ...``. Empty when no head moved."""
    chunks: list[list[AnchoredHead]] = []
    size = 0
    for head in moved_heads(state, heads):
        weight = len(head.stream_id) + len(head.hash) + 48
        if not chunks or len(chunks[-1]) >= MAX_HEADS or size + weight > MAX_HEADS_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(head)
        size += weight
    out: list[AnchorPayload] = []
    mac = state.mac
    for part, chunk in enumerate(chunks, start=1):
        payload = AnchorPayload(heads=tuple(chunk), run_id=run_id, part=part, parts=len(chunks))
        if key is not None:
            seq = state.version + part
            mac = anchor_mac(key, mac, state.stream_id, seq, payload)
            payload = payload.model_copy(update={"mac": mac})
        out.append(payload)
    return out


class WitnessLine(BaseModel):
    """One line of a witness file: an anchor stream's head after an anchor run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=256)
    mode: Mode
    anchor_stream: str = Field(min_length=1, max_length=1024)
    seq: int = Field(ge=1)
    hash: Hash
    mac: Hash | None = None
    at: datetime

    @model_validator(mode="after")
    def _its_anchor_stream(self) -> WitnessLine:
        try:
            expected = anchor_stream_id(self.tenant_id, self.mode)
        except InvalidStreamId as exc:
            raise ValueError(str(exc)) from None
        if self.anchor_stream != expected:
            raise ValueError(f"anchor_stream is not {expected!r}")
        return self


def witness_line(state: AnchorState, at: datetime) -> WitnessLine | None:
    """What a witness records of ``state`` (an anchor stream's head), ``None`` if the
    stream holds no anchor."""
    if state.version < 1:
        return None
    name = parse_stream_id(state.stream_id)
    return WitnessLine(
        tenant_id=name.tenant_id,
        mode=name.mode,
        anchor_stream=state.stream_id,
        seq=state.version,
        hash=state.hash,
        mac=state.mac or None,
        at=at,
    )


def latest_witnessed(lines: Iterable[WitnessLine]) -> dict[str, WitnessLine]:
    """Each anchor stream's highest witnessed head (an anchor stream only grows, so the
    highest seq is the latest, whatever order two concurrent runs wrote their lines in)."""
    latest: dict[str, WitnessLine] = {}
    for line in lines:
        before = latest.get(line.anchor_stream)
        if before is None or line.seq >= before.seq:
            latest[line.anchor_stream] = line
    return latest


def witness_problem(
    witnessed: WitnessLine, stored: EventEnvelope | Unreadable | None
) -> str | None:
    """What is wrong with the anchor ``stored`` at the witnessed seq of its stream
    (``None``: no event there) against the witness, if anything. The anchors below it
    are pinned by its hash, through the chain the fold verifies."""
    seen = f"witnessed at {witnessed.at.isoformat(timespec='seconds')}"
    if stored is None:
        return f"anchors removed or rolled back: seq {witnessed.seq} ({seen}) is no longer stored"
    if isinstance(stored, Unreadable):
        return None  # the fold names it
    if stored.hash != witnessed.hash:
        return (
            f"anchors rolled back or rewritten: the anchor at seq {witnessed.seq} is not "
            f"the one {seen} (another hash)"
        )
    if stored.payload.get("mac") != witnessed.mac:
        return (
            f"anchors rolled back or rewritten: the anchor at seq {witnessed.seq} carries "
            f"another mac than the one {seen}"
        )
    return None
