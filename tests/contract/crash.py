"""A process that appends and dies before anything delivers its appends.

``python -m tests.contract.crash`` reads one JSON request on stdin (the backend's name,
its connections, data directory and route, and the appends as ``[stream_id, expected]``
pairs), opens the backend the way the registry does, appends, prints ``committed`` and
ends with ``os._exit``: no feed, no relay, nothing closed or flushed. The crash tests
start it with :func:`die_after_appending`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from routing.catalog import BACKENDS
from routing.config import Connections, Route
from spine.events import NO_STREAM
from tests.conftest import make_event
from tests.contract.harness import Harness

#: The checkout's root: the crashing process imports ``tests`` from it.
ROOT = str(Path(__file__).resolve().parents[2])


async def die_after_appending(h: Harness, route: Route, appends: list[tuple[str, int]]) -> None:
    """Run the crashing process against ``h``'s stores (``expected`` 0: a new stream)."""
    assert h.connections is not None, f"harness {h.name!r} names no connections"
    request = {
        "backend": h.name,
        "connections": h.connections.model_dump(mode="json"),
        "data_dir": str(h.data_dir),
        "route": route.model_dump(mode="json"),
        "appends": appends,
    }
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.contract.crash",
        env={**os.environ, "PYTHONPATH": path},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(orjson.dumps(request))
    assert (child.returncode, out) == (0, b"committed\n"), err.decode()


async def _append(request: dict[str, Any]) -> None:
    module = importlib.import_module(str(BACKENDS[request["backend"]].module))
    connections = Connections.model_validate(request["connections"])
    backend = await module.open_backend(connections, Path(request["data_dir"]), create=False)
    store = await backend.event_store(Route.model_validate(request["route"]))
    for stream_id, expected in request["appends"]:
        tenant_id, mode = stream_id.split("/")[1:3]
        event = make_event(tenant_id=tenant_id, mode=mode)
        await store.append(stream_id, [event], expected or NO_STREAM)
    sys.stdout.write("committed\n")
    sys.stdout.flush()
    os._exit(0)  # dies here, in the loop: whatever would deliver or close never runs


def main() -> None:
    asyncio.run(_append(orjson.loads(sys.stdin.buffer.read())))


if __name__ == "__main__":
    main()
