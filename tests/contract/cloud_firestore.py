"""The Firestore backend for the contract suites: one backend per test on the session's
Cloud Firestore emulator (tests/servers/), each route under fresh collection names (the
suites name their routes with ``unique``).

Imported by ``tests/contract/conftest.py``; the SDK is imported only when a test asks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers.fixtures import FirestoreEmulator

if TYPE_CHECKING:
    from routing.config import Connections
    from spine.store import EventStore
    from tests.contract.harness import Harness


def emulator_connections(emulator: FirestoreEmulator, **settings: float) -> Connections:
    """Connections to the emulator (``settings``: more FirestoreConnection fields)."""
    from routing.config import Connections, FirestoreConnection

    return Connections(
        firestore=FirestoreConnection(
            project=emulator.project, emulator_host=emulator.host_port, **settings
        )
    )


async def tamper(spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
    """Write ``body`` as ``stream_id``'s event ``seq`` with the SDK, behind the store."""
    from routing.backends.firestore import FirestoreEventStore
    from routing.backends.firestore.layout import EVENTS, seq_doc_id, stream_doc_id

    assert isinstance(spine, FirestoreEventStore)
    stream = spine.streams.document(stream_doc_id(stream_id))
    await stream.set({"stream_id": stream_id})
    await (
        stream.collection(EVENTS)
        .document(seq_doc_id(seq))
        .set({"seq": seq, "hash": "x", "body": body})
    )


class FirestoreTampering:
    """Behind the Firestore spine's back, with the SDK (the layout is in
    :mod:`routing.backends.firestore`)."""

    async def put(self, spine: EventStore, stream_id: str, seq: int, body: bytes) -> None:
        from routing.backends.firestore import FirestoreEventStore
        from routing.backends.firestore.layout import EVENTS, seq_doc_id, stream_doc_id
        from tests.contract.harness import stored_attributes

        assert isinstance(spine, FirestoreEventStore)
        digest, _ = stored_attributes(body)
        stream = spine.streams.document(stream_doc_id(stream_id))
        await stream.set({"stream_id": stream_id})
        event = stream.collection(EVENTS).document(seq_doc_id(seq))
        await event.set({"seq": seq, "hash": digest, "body": body})

    async def remove(self, spine: EventStore, stream_id: str, seq: int) -> None:
        from routing.backends.firestore import FirestoreEventStore
        from routing.backends.firestore.layout import EVENTS, seq_doc_id, stream_doc_id

        assert isinstance(spine, FirestoreEventStore)
        stream = spine.streams.document(stream_doc_id(stream_id))
        await stream.collection(EVENTS).document(seq_doc_id(seq)).delete()

    async def remove_stream(self, spine: EventStore, stream_id: str) -> None:
        """The stream's document, its events and command markers, its outbox markers."""
        from routing.backends.firestore import FirestoreEventStore
        from routing.backends.firestore.layout import COMMANDS, EVENTS, SLASH, stream_doc_id

        assert isinstance(spine, FirestoreEventStore)
        stream = spine.streams.document(stream_doc_id(stream_id))
        for name in (EVENTS, COMMANDS):
            async for doc in stream.collection(name).stream():
                await doc.reference.delete()
        await stream.delete()
        prefix = stream_doc_id(stream_id) + SLASH
        async for doc in spine.outbox.stream():
            if doc.id.startswith(prefix):
                await doc.reference.delete()


@pytest.fixture
async def firestore_backend(
    firestore_emulator: FirestoreEmulator, tmp_path: Path
) -> AsyncIterator[Harness]:
    from routing.backends.firestore import open_backend
    from tests.contract.harness import Harness

    connections = emulator_connections(firestore_emulator)
    backend = await open_backend(connections, tmp_path)
    try:
        yield Harness(
            "firestore",
            backend,
            lab=False,
            tamper=tamper,
            capabilities={
                "atomic_batch",
                "independent_subscriptions",
                "scan_finds_headless_streams",
            },
            connections=connections,
            data_dir=tmp_path,
            tampering=FirestoreTampering(),
        )
    finally:
        await backend.aclose()


@pytest.fixture
async def firestore_direct_backend(firestore_backend: Harness) -> AsyncIterator[Harness]:
    """The Firestore spine and checkpoints, delivered by ``spine_feed: direct``."""
    from dataclasses import replace

    from routing.backends.direct import open_backend as open_direct
    from routing.config import Connections

    direct = await open_direct(
        Connections(), Path("."), create=True, sweep_interval=2.0, sweep_after=1.0
    )
    try:
        yield replace(
            firestore_backend,
            feeder=direct,
            feeder_name="direct",
            capabilities=set(firestore_backend.capabilities),
        )
    finally:
        await direct.aclose()
