"""``engines replay RUN_ID``: a run's events in causal order, and, with ``--into``, its
effects on a sandbox set of views apart from the live ones.

**Finding the run.** Every event records the ``run_id`` it was written under (the
``X-Run-Id`` header or the body's ``provenance``). No view indexes every event by run
(the ``audit`` and ``events`` views hold only their families), so replay scans the spine
(one tenant's streams with ``--tenant``: give it on a large spine), with a progress bar
on a terminal.

**Causal order.** A tree by ``parent_event_id``: each event under its parent, siblings
and roots ordered by seq, then recorded_at (then stream). An event whose parent is not in
the run is a root, with a note; so is, after every root, the earliest event of a parent
cycle (hostile data: each event is shown once, whatever its links), and a second event
under an event id already shown. An event whose stored hash does not match its content
is shown with a note.

**--into SANDBOX.** Every projector whose domains the run touched applies the run's
events through :meth:`~projections.runner.ProjectorRunner.apply`, into view stores of
their own: ``<live name>__sandbox_<SANDBOX>``, on the backend of each live route. The
runner repairs a stream's gap from the spine, so the sandbox holds **each stream the run
touched, from its first event up to the run's last event in it** (a view folds whole
streams: a note's update means nothing without its creation); later events of those
streams, and streams the run did not touch, are not in it. Parked events go under the
projector's sandbox name (``<projector>__sandbox_<SANDBOX>``), never the live
projectors'. Replaying again into the same sandbox writes nothing new.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from engines.cli.common import EXIT_OK, add_common, with_runtime
from engines.cli.output import add_format, clip, emit, format_of, progress
from engines.runtime import Runtime
from projections.projector import Projector
from projections.runner import ProjectorRunner
from projections.views import QueryShape, ViewRecord, ViewStore, ViewWrite
from routing.registry import Registry
from spine.codec import expected_hash
from spine.errors import InvalidInput
from spine.events import EventEnvelope, Provenance

SANDBOX_NAME = re.compile(r"^[A-Za-z0-9_-]{1,24}$")
#: How many events the scan reads between two updates of the progress bar.
PROGRESS_EVERY = 500
#: The deepest indentation a tree draws (a hostile chain may be thousands deep).
MAX_INDENT = 24
FORMATS = ("tree", "table", "jsonl")
SANDBOX_COLUMNS = ("projector", "view", "events_applied", "records_written", "parked")
COLUMNS = ("depth", "step_id", "event_type", "source", "stream_id", "seq", "payload", "note")

EPILOG = """\
exit status: 0 the run was printed (and applied); 3 no events for the run (or an invalid
run id, tenant or sandbox name); 2 a sandbox name a route already uses; 4 a stored event
that cannot be read; 1 a backend that does not answer.
"""


def sandbox_name(text: str) -> str:
    """``text`` if it is a sandbox name; else invalid input (exit 3, like a malformed run
    id or tenant), before anything opens."""
    if not SANDBOX_NAME.match(text):
        raise InvalidInput(f"{text[:40]!r}: a sandbox name is 1 to 24 letters, digits, _ and -")
    return text


@dataclass(frozen=True, slots=True)
class Step:
    """One event of a run as the tree shows it."""

    event: EventEnvelope
    depth: int
    parent: str | None
    """The event id it is shown under (``None``: a root)."""
    notes: tuple[str, ...] = ()


def _order(event: EventEnvelope) -> tuple[int, Any, str]:
    return (event.seq, event.recorded_at, event.stream_id)


def causal_order(events: Sequence[EventEnvelope]) -> list[Step]:
    """``events`` as a depth-first walk of their ``parent_event_id`` tree (see the
    module's docstring). Each event once; never loops, never recurses (a chain may be
    as deep as the run is long)."""
    by_id: dict[str, EventEnvelope] = {}
    again: list[EventEnvelope] = []
    for event in sorted(events, key=_order):
        if event.event_id in by_id:
            again.append(event)
        else:
            by_id[event.event_id] = event
    children: dict[str, list[EventEnvelope]] = {}
    roots: list[tuple[EventEnvelope, tuple[str, ...]]] = []
    for event in by_id.values():  # in order, so each list of children is too
        parent = event.parent_event_id
        if parent is None:
            roots.append((event, ()))
        elif parent == event.event_id:
            roots.append((event, ("its parent is itself",)))
        elif parent not in by_id:
            roots.append((event, (f"parent {parent} is not in this run",)))
        else:
            children.setdefault(parent, []).append(event)
    steps: list[Step] = []
    seen: set[str] = set()

    def walk(root: EventEnvelope, notes: tuple[str, ...]) -> None:
        stack: list[tuple[EventEnvelope, int, str | None, tuple[str, ...]]] = [
            (root, 0, None, notes)
        ]
        while stack:
            event, depth, parent, why = stack.pop()
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
            steps.append(Step(event, depth, parent, why))
            below = children.get(event.event_id, ())
            stack.extend((c, depth + 1, event.event_id, ()) for c in reversed(below))

    for event, notes in roots:
        walk(event, notes)
    for event in by_id.values():  # what no root reaches: a parent cycle
        if event.event_id not in seen:
            walk(event, (f"in a parent cycle (its parent {event.parent_event_id})",))
    for event in again:
        steps.append(Step(event, 0, None, (f"a second event with id {event.event_id}",)))
    return [_checked(step) for step in steps]


def _checked(step: Step) -> Step:
    if expected_hash(step.event) == step.event.hash:
        return step
    tampered = "its hash does not match its content (changed behind the spine's back?)"
    return Step(step.event, step.depth, step.parent, (*step.notes, tampered))


def _summary(payload: Mapping[str, Any], keys: int = 3) -> str:
    first = dict(list(payload.items())[:keys])
    more = f" +{len(payload) - keys}" if len(payload) > keys else ""
    return clip(first, 60) + more


def _row(step: Step) -> dict[str, Any]:
    e = step.event
    return {
        "depth": step.depth,
        "step_id": e.step_id,
        "event_type": e.event_type,
        "source": e.source,
        "stream_id": e.stream_id,
        "seq": e.seq,
        "payload": _summary(e.payload),
        "note": "; ".join(step.notes) or None,
    }


def _line(step: Step) -> str:
    e = step.event
    indent = "  " * min(step.depth, MAX_INDENT)
    deeper = f"(+{step.depth - MAX_INDENT}) " if step.depth > MAX_INDENT else ""
    mark = "└─ " if step.depth else ""
    cells = [
        clip(e.step_id or "-", 40),
        clip(e.event_type, 60),
        clip(e.source, 20),
        clip(f"{e.stream_id}/{e.seq}", 200),
        _summary(e.payload),
    ]
    notes = "".join(f"  [{clip(n, 200)}]" for n in step.notes)
    return f"{indent}{deeper}{mark}{'  '.join(cells)}{notes}"


def print_steps(args: argparse.Namespace, steps: Sequence[Step]) -> None:
    fmt = format_of(args)
    if fmt == "tree":
        print("\n".join(_line(step) for step in steps), flush=True)
    elif fmt == "table":
        emit(args, (_row(step) for step in steps), columns=COLUMNS)
    else:  # jsonl
        rows = (
            {
                "depth": s.depth,
                "parent": s.parent,
                "notes": list(s.notes),
                "event": s.event.model_dump(mode="json"),
            }
            for s in steps
        )
        emit(args, rows)


async def find_run(
    rt: Runtime, args: argparse.Namespace, run_id: str, tenant: str | None
) -> list[EventEnvelope]:
    """Every event of ``run_id`` (of ``tenant`` where given), read by a scan."""
    found: list[EventEnvelope] = []
    read = 0
    with progress(args, None, f"scanning the spine for run {run_id}") as bar:
        async for event in rt.spine.scan(tenant_id=tenant, mode=rt.settings.mode):
            read += 1
            if read % PROGRESS_EVERY == 0:
                bar.advance(PROGRESS_EVERY)
            if event.run_id == run_id:
                found.append(event)
        bar.advance(read % PROGRESS_EVERY)
    if not found:
        where = f" in tenant {tenant!r}" if tenant else ""
        raise InvalidInput(f"no events for run {run_id!r}{where} ({read} events scanned)")
    return found


# -- --into: a sandbox set of views -----------------------------------------------------


class _Sandboxed:
    """A live projector under a sandbox's name: its applied progress and parked events
    are its own, never the live projector's."""

    def __init__(self, projector: Projector, sandbox: str) -> None:
        self.inner = projector
        self.name = f"{projector.name}__sandbox_{sandbox}"
        self.domains = projector.domains
        self.resource_kind = projector.resource_kind
        self.shapes: tuple[QueryShape, ...] = projector.shapes

    def keys(self, event: EventEnvelope) -> Sequence[str]:
        return self.inner.keys(event)

    def apply(
        self, event: EventEnvelope, records: Mapping[str, ViewRecord]
    ) -> Sequence[ViewRecord]:
        return self.inner.apply(event, records)


class _Counted:
    """A view store that counts the records of the writes it commits."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, projector: str, writes: Sequence[ViewWrite]) -> list[str]:
        refused = await self._store.commit(projector, writes)
        self.written += sum(len(w.records) for w in writes if w.stream_id not in refused)
        return refused


@dataclass
class SandboxView:
    projector: str
    resource_kind: str
    backend: str
    physical_name: str
    events_applied: int = 0
    records_written: int = 0


async def into_sandbox(
    rt: Runtime, registry: Registry, events: Sequence[EventEnvelope], sandbox: str
) -> list[SandboxView]:
    """Apply ``events`` to every projector whose domains they touch, into sandbox view
    stores opened (made where missing) through ``registry``."""
    domains = {e.stream_id.split("/", 1)[0] for e in events}
    ordered = sorted(events, key=lambda e: (e.stream_id, e.seq))
    stores: dict[str, tuple[str, ViewStore]] = {}
    views: list[SandboxView] = []
    for domain in rt.domains:
        for projector in domain.projectors:
            if not projector.domains & domains:
                continue
            kind = projector.resource_kind
            route = registry.resolve(kind).route
            if kind not in stores:
                name = f"{route.name}__sandbox_{sandbox}"
                if len(name) > 63:
                    raise InvalidInput(
                        f"sandbox view name {name!r} is over 63 characters: a shorter sandbox"
                    )
                stores[kind] = (name, await registry.view_store_named(kind, name))
            name, store = stores[kind]
            await store.declare(projector.shapes)
            counted = _Counted(store)
            live = rt.runners[projector.name]
            runner = ProjectorRunner(
                _Sandboxed(projector, sandbox),
                spine=rt.spine,
                views=cast(ViewStore, counted),
                parking=rt.parking,
                upcasters=live.upcasters,
            )
            applied = await runner.apply(ordered)
            views.append(
                SandboxView(projector.name, kind, route.backend, name, applied, counted.written)
            )
    return views


def cmd_replay(args: argparse.Namespace) -> int:
    run_id = Provenance.model_validate({"run_id": args.run_id}).run_id
    assert run_id is not None
    if args.into is not None:
        sandbox_name(args.into)

    async def body(rt: Runtime) -> int:
        events = await find_run(rt, args, run_id, args.tenant)
        steps = causal_order(events)
        print_steps(args, steps)
        if args.into is None:
            return EXIT_OK
        registry = Registry(rt.settings, rt.data_dir, create=True)  # makes the sandbox's
        try:
            views = await into_sandbox(rt, registry, events, args.into)
        finally:
            await registry.aclose()
        rows = []
        for view in views:
            parked = await rt.parking.parked(f"{view.projector}__sandbox_{args.into}")
            rows.append(
                {
                    "sandbox": args.into,
                    "projector": view.projector,
                    "view": f"{view.backend}:{view.physical_name}",
                    "events_applied": view.events_applied,
                    "records_written": view.records_written,
                    "parked": len(parked),
                }
            )
        if format_of(args) != "jsonl":
            print()  # the tree or table above, then the sandbox's
        emit(args, rows, columns=SANDBOX_COLUMNS, title=f"sandbox {args.into}:")
        return EXIT_OK

    return with_runtime(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "replay",
        help="a run's events in causal order; --into applies them to sandbox views",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(r)
    r.add_argument("run_id", metavar="RUN_ID", help="the run (its X-Run-Id)")
    r.add_argument("--tenant", help="only this tenant's streams (a smaller scan)")
    add_format(r, default="tree", choices=FORMATS)
    r.add_argument(
        "--into",
        metavar="SANDBOX",
        help="apply the run to views named <live name>__sandbox_SANDBOX (made if missing)",
    )
    r.set_defaults(func=cmd_replay)
