"""``audit verify`` and ``audit anchor`` against every spine backend, with the spine
tampered with directly in the store (:class:`~tests.contract.harness.Tampering`): each
tamper is named in the report with its stream and first bad seq."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from commands.spine_audit import (
    AnchorReport,
    VerifyReport,
    anchor_spine,
    stream_events,
    verify_spine,
    verify_stream,
)
from spine.anchors import WitnessLine, anchor_stream_id, fold_anchors, latest_witnessed
from spine.codec import encode, seal_after
from spine.events import NO_STREAM, EventEnvelope, NewEvent
from spine.store import EventStore
from spine.streams import stream_id
from tests.conftest import make_event
from tests.contract.harness import Harness, Tampering, requires

KEY = b"an anchor key of at least 32 bytes!"


@pytest.fixture
async def store(spine_harness: Harness, unique: str) -> EventStore:
    s: EventStore = await spine_harness.backend.event_store(spine_harness.route(f"spine_{unique}"))
    return s


@pytest.fixture
def tampering(spine_harness: Harness) -> Tampering:
    if spine_harness.tampering is None:
        pytest.skip(f"no tampering hooks for {spine_harness.name!r}")
    return spine_harness.tampering


def sid(name: str, tenant: str = "t1") -> str:
    return stream_id("notes", tenant, "lab", name)


async def append(store: EventStore, stream: str, n: int, at: int = 0) -> list[EventEnvelope]:
    tenant = stream.split("/")[1]
    events = [make_event(tenant_id=tenant, payload={"i": at + i}) for i in range(n)]
    out = []
    for i, event in enumerate(events):
        result = await store.append(stream, [event], at + i or NO_STREAM)
        out += result.events
    return out


def broken(report: VerifyReport) -> list[tuple[str, int]]:
    return [(b.stream_id, b.seq) for b in report.breaks]


def problem(report: VerifyReport, stream: str) -> str:
    (found,) = [b for b in report.breaks if b.stream_id == stream]
    return found.problem


async def test_an_untouched_spine_verifies_and_anchors_then_still_verifies(
    store: EventStore,
) -> None:
    await append(store, sid("a"), 3)
    await append(store, sid("b", "t2"), 2)
    report = await verify_spine(store)
    assert (broken(report), report.streams, report.events, report.anchors) == ([], 2, 5, 0)

    anchored = await anchor_spine(store)
    assert sorted((a.anchor_stream, a.heads, a.first_seq) for a in anchored.anchored) == [
        (anchor_stream_id("t1", "lab"), 1, 1),
        (anchor_stream_id("t2", "lab"), 1, 1),
    ]
    assert (await anchor_spine(store)).anchored[0].heads == 0  # nothing moved since
    await append(store, sid("a"), 1, at=3)
    report = await verify_spine(store, tenant_id="t1")
    assert (broken(report), report.streams, report.anchors) == ([], 2, 1)
    assert report.last_anchor is not None


async def test_a_changed_payload_is_named_at_its_seq(
    store: EventStore, tampering: Tampering
) -> None:
    a = sid("a")
    events = await append(store, a, 3)
    changed = events[1].model_copy(update={"payload": {"i": 999}})
    await tampering.put(store, a, 2, encode(changed))
    report = await verify_spine(store)
    assert broken(report) == [(a, 2)]
    assert problem(report, a) == "hash does not match the event's content"
    assert report.breaks[0].event_id == events[1].event_id


@pytest.mark.parametrize(("removed", "first_bad"), [(2, 2), (3, 3)])
async def test_a_removed_middle_or_last_event_is_named_against_an_anchor(
    store: EventStore, tampering: Tampering, removed: int, first_bad: int
) -> None:
    a = sid("a")
    await append(store, a, 3)
    await anchor_spine(store)
    await tampering.remove(store, a, removed)
    report = await verify_spine(store)
    assert broken(report) == [(a, first_bad)]


async def test_a_removed_tail_leaves_a_chain_that_verifies_without_an_anchor(
    store: EventStore, tampering: Tampering
) -> None:
    a = sid("a")
    await append(store, a, 3)
    await tampering.remove(store, a, 3)
    assert broken(await verify_spine(store)) == []


async def test_a_removed_first_event_is_named_against_an_anchor(
    store: EventStore, tampering: Tampering
) -> None:
    a = sid("a")
    await append(store, a, 3)
    await anchor_spine(store)
    await tampering.remove(store, a, 1)
    report = await verify_spine(store)
    assert broken(report) == [(a, 1)]
    assert problem(report, a) == "seq 1 is missing (the next stored is seq 2)"
    assert broken(await verify_stream(store, a)) == [(a, 1)]


async def test_a_removed_first_event_is_named_by_a_scan_that_finds_the_stream(
    spine_harness: Harness, store: EventStore, tampering: Tampering
) -> None:
    requires(spine_harness, "scan_finds_headless_streams", "streams are found by seq 1")
    a = sid("a")
    await append(store, a, 2)
    await tampering.remove(store, a, 1)
    assert broken(await verify_spine(store)) == [(a, 1)]


async def test_a_reordered_pair_is_named_at_the_first_of_them(
    store: EventStore, tampering: Tampering
) -> None:
    a = sid("a")
    events = await append(store, a, 4)
    await tampering.put(store, a, 2, encode(events[2]))
    await tampering.put(store, a, 3, encode(events[1]))
    report = await verify_spine(store)
    assert broken(report) == [(a, 2)]


async def test_a_relabelled_stream_is_named_under_its_new_id_and_missing_under_its_old(
    store: EventStore, tampering: Tampering
) -> None:
    """Its rows moved under another tenant's stream id, bodies unchanged."""
    old, new = sid("a"), sid("a", "t2")
    events = await append(store, old, 2)
    await anchor_spine(store)
    for event in events:
        await tampering.put(store, new, event.seq, encode(event))
    await tampering.remove_stream(store, old)
    report = await verify_spine(store)
    assert broken(report) == [(old, 1), (new, 1)]
    assert problem(report, new) == "tenant_id 't1' is not the stream's tenant 't2'"
    assert problem(report, old).startswith("removed stream")
    assert broken(await verify_spine(store, tenant_id="t2")) == [(new, 1)]


async def test_a_removed_stream_is_named_against_an_anchor(
    store: EventStore, tampering: Tampering
) -> None:
    a, b = sid("a"), sid("b")
    await append(store, a, 1)
    await append(store, b, 2)
    await anchor_spine(store)
    await tampering.remove_stream(store, a)
    report = await verify_spine(store)
    assert broken(report) == [(a, 1)]
    assert problem(report, a) == "removed stream: anchored at seq 1, no event stored"
    assert broken(await verify_stream(store, a)) == [(a, 1)]


async def test_an_unreadable_body_is_a_bad_event_of_its_stream(
    store: EventStore, tampering: Tampering
) -> None:
    a, b = sid("a"), sid("b")
    await append(store, a, 3)
    await append(store, b, 1)
    await tampering.put(store, a, 2, b'{"not": "an event"')
    report = await verify_spine(store)
    assert broken(report) == [(a, 2)]
    assert problem(report, a).startswith("unreadable")
    assert broken(await verify_stream(store, a)) == [(a, 2)]


def resealed(events: list[EventEnvelope], payloads: dict[int, dict[str, object]]) -> list[bytes]:
    """``events`` (a stream from seq 1) with ``payloads`` changed, chained again as the
    store would: what an attacker who knows the format writes back."""
    fields = set(NewEvent.model_fields)
    new = [
        NewEvent.model_validate(
            {
                **e.model_dump(include=fields),
                "payload": payloads.get(e.seq, e.payload),
            }
        )
        for e in events
    ]
    sealed = seal_after(
        new,
        stream_id=events[0].stream_id,
        head=0,
        prev_hash=events[0].prev_hash,
        recorded_at=datetime.now(UTC),
    )
    return [body for _, body in sealed]


async def rewrite(
    store: EventStore, tampering: Tampering, stream: str, payloads: dict[int, dict[str, object]]
) -> None:
    events = [e async for e in stream_events(store, stream) if isinstance(e, EventEnvelope)]
    for event, body in zip(events, resealed(events, payloads), strict=True):
        await tampering.put(store, stream, event.seq, body)


async def test_a_rewritten_chain_is_caught_by_an_unkeyed_anchor_unless_anchors_are_rewritten_too(
    store: EventStore, tampering: Tampering
) -> None:
    a = sid("a")
    await append(store, a, 3)
    await anchor_spine(store)
    await rewrite(store, tampering, a, {2: {"i": "forged"}})
    report = await verify_spine(store)
    assert broken(report) == [(a, 3)]
    assert problem(report, a).startswith("rewritten history")

    anchors = anchor_stream_id("t1", "lab")
    (anchor,) = [e async for e in stream_events(store, anchors) if isinstance(e, EventEnvelope)]
    new_head = (await store.read_stream(a, 3, 3))[0].hash
    heads = [{**h, "hash": new_head} for h in anchor.payload["heads"]]
    await rewrite(store, tampering, anchors, {1: {**anchor.payload, "heads": heads}})
    assert broken(await verify_spine(store)) == []


async def test_a_rewrite_with_every_chain_recomputed_is_caught_only_with_the_anchor_key(
    store: EventStore, tampering: Tampering
) -> None:
    a = sid("a")
    await append(store, a, 3)
    keyed = await anchor_spine(store, key=KEY)
    assert [x.keyed for x in keyed.anchored] == [True]
    assert broken(await verify_spine(store, key=KEY)) == []

    await rewrite(store, tampering, a, {2: {"i": "forged"}})
    anchors = anchor_stream_id("t1", "lab")
    (anchor,) = [e async for e in stream_events(store, anchors) if isinstance(e, EventEnvelope)]
    new_head = (await store.read_stream(a, 3, 3))[0].hash
    heads = [{**h, "hash": new_head} for h in anchor.payload["heads"]]
    await rewrite(store, tampering, anchors, {1: {**anchor.payload, "heads": heads}})

    unkeyed = await verify_spine(store)
    assert broken(unkeyed) == []
    assert unkeyed.warnings == [
        f"{anchors}: 1 anchors carry a mac that was not checked "
        "(no audit.anchor_key_file configured)"
    ]
    report = await verify_spine(store, key=KEY)
    assert broken(report) == [(anchors, 1)]
    assert (
        problem(report, anchors)
        == "the anchor's mac does not verify with the configured anchor key"
    )
    assert broken(await verify_stream(store, a, key=KEY)) == [(anchors, 1)]


async def test_a_key_given_over_unkeyed_anchors_fails(store: EventStore) -> None:
    await append(store, sid("a"), 1)
    await anchor_spine(store)
    report = await verify_spine(store, key=KEY)
    assert broken(report) == [(anchor_stream_id("t1", "lab"), 1)]


async def test_anchor_leaves_a_broken_stream_out_and_names_it(
    store: EventStore, tampering: Tampering
) -> None:
    a, b = sid("a"), sid("b")
    events = await append(store, a, 2)
    await append(store, b, 1)
    await tampering.put(store, a, 2, encode(events[1].model_copy(update={"payload": {}})))
    report = await anchor_spine(store)
    assert [(x.stream_id, x.seq) for x in report.broken] == [(a, 2)]
    state = fold_anchors(
        anchor_stream_id("t1", "lab"),
        [e async for e in stream_events(store, anchor_stream_id("t1", "lab"))],
        None,
    )
    assert set(state.heads) == {b}


async def test_two_anchor_runs_at_once_anchor_each_head_once(store: EventStore) -> None:
    for name in "abc":
        await append(store, sid(name), 2)
    reports = await asyncio.gather(anchor_spine(store), anchor_spine(store))
    anchors = anchor_stream_id("t1", "lab")
    events = [e async for e in stream_events(store, anchors)]
    state = fold_anchors(anchors, events, None)
    assert state.broken is None
    assert set(state.heads) == {sid(n) for n in "abc"}
    assert sum(r.anchored[0].heads for r in reports) == 3
    assert broken(await verify_spine(store)) == []


def witnessed(*reports: AnchorReport) -> dict[str, WitnessLine]:
    """What a witness file holds after the anchor runs ``reports``, latest per stream."""
    return latest_witnessed(a.witness for r in reports for a in r.anchored if a.witness)


@pytest.mark.parametrize("removed", ["all anchors", "the newest anchor"])
async def test_removed_anchors_pass_unseen_inside_the_store_and_are_caught_by_a_witness(
    store: EventStore, tampering: Tampering, removed: str
) -> None:
    """Whoever can delete events can delete anchors, keyed or not: what is left still
    verifies. Only the head a witness outside the store kept shows it."""
    a, anchors = sid("a"), anchor_stream_id("t1", "lab")
    await append(store, a, 2)
    first = await anchor_spine(store, key=KEY)
    await append(store, a, 1, at=2)
    second = await anchor_spine(store, key=KEY)
    witness = witnessed(first, second)
    assert [(w.anchor_stream, w.seq) for w in witness.values()] == [(anchors, 2)]
    assert witness[anchors].mac is not None
    report = await verify_spine(store, key=KEY, witnessed=witness)
    assert (broken(report), report.witnessed, report.warnings) == ([], 1, [])

    if removed == "all anchors":
        await tampering.remove_stream(store, anchors)
    else:
        await tampering.remove(store, anchors, 2)
    unwitnessed = await verify_spine(store, key=KEY)
    assert broken(unwitnessed) == []  # nothing inside the store says so
    if removed == "all anchors":  # with a key, a tenant with no anchor is a warning
        assert [w.split(":")[:2] for w in unwitnessed.warnings] == [["t1/lab", " not anchored"]]

    report = await verify_spine(store, key=KEY, witnessed=witness)
    assert broken(report) == [(anchors, 2)]
    assert problem(report, anchors).startswith(
        "anchors removed or rolled back: seq 2 (witnessed at "
    )
    assert broken(await verify_spine(store, key=KEY, witnessed=witness, tenant_id="t1")) == [
        (anchors, 2)
    ]
    assert broken(await verify_spine(store, witnessed=witness, tenant_id="t2")) == []
    assert broken(await verify_stream(store, a, key=KEY, witnessed=witness)) == [(anchors, 2)]


async def test_a_rewritten_newest_anchor_is_caught_by_a_witness(
    store: EventStore, tampering: Tampering
) -> None:
    """Unkeyed, the anchors can be rewritten with every chain recomputed; the hash the
    witness kept no longer matches."""
    a, anchors = sid("a"), anchor_stream_id("t1", "lab")
    await append(store, a, 2)
    witness = witnessed(await anchor_spine(store))
    (anchor,) = [e async for e in stream_events(store, anchors) if isinstance(e, EventEnvelope)]
    await rewrite(store, tampering, anchors, {1: {**anchor.payload, "run_id": "forged"}})
    assert broken(await verify_spine(store)) == []
    report = await verify_spine(store, witnessed=witness)
    assert broken(report) == [(anchors, 1)]
    assert problem(report, anchors).startswith("anchors rolled back or rewritten")
