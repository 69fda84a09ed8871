"""A Kafka deployment as the tests run it: a routes file built here, and ``engines serve
--no-projectors`` and ``engines projections run`` as processes of their own.

The routes: lab mode, the spine on the data directory's SQLite file (shared by every
process) or on DynamoDB, ``spine_feed: kafka`` on a fresh topic of the test's broker,
``command_bus: inprocess``, checkpoints and views on the same SQLite file.

The processes are started as the test servers are (:mod:`tests.servers.process`: their
own process group, a watchdog, the log in a file), through :mod:`tests.e2e.kafka.feed.cli`,
which is the ``engines`` command with the consumer groups' assignments logged.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engines.devservers.process import signal_group
from engines.settings import Settings, load_settings
from routing.config import Connections
from routing.registry import Registry
from tests.e2e.kafka.feed.cli import ASSIGNED
from tests.servers.process import HOST, ServerProcess, free_port

#: The checkout's root: the processes import ``engines`` and ``tests`` from it.
ROOT = str(Path(__file__).resolve().parents[4])
STARTUP_SECONDS = 30.0
#: What ``engines projections run`` says once its projectors are running.
RUNNING = b"engines: running"
#: A local Tansu in memory answers an idle fetch late: keep the wait short (a broker that
#: keeps its records in object storage needs more: :attr:`TansuOnS3.fetch_max_wait_ms`).
FETCH_MAX_WAIT_MS = 50
T = TypeVar("T")


def kafka_block(bootstrap: str, *, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS) -> dict[str, Any]:
    """``connections.kafka`` for a local Tansu (as tests/contract/cloud_kafka.py sets it)."""
    return {
        "bootstrap_servers": bootstrap,
        "partitions": 4,
        "fetch_max_wait_ms": fetch_max_wait_ms,
        # Tansu holds a join until half a session has passed: keep sessions short.
        "session_timeout_ms": 1_000,
        "heartbeat_interval_ms": 100,
        "rebalance_timeout_ms": 1_000,
    }


def write_routes(
    directory: Path,
    bootstrap: str,
    topic: str,
    *,
    spine_on: Connections | None = None,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> Path:
    """The routes file (see the module's docstring) in ``directory``; ``spine_on``: the
    DynamoDB connection to put the spine on (the SQLite file otherwise);
    ``fetch_max_wait_ms``: the consumers' fetch wait (see :data:`FETCH_MAX_WAIT_MS`)."""
    lab = {"backend": "sqlite", "lab": True}
    routes: dict[str, dict[str, Any]] = {
        "event_spine": {**lab, "name": "spine_events"},
        "spine_feed": {"backend": "kafka", "name": topic},
        "command_bus": {"backend": "inprocess", "name": "commands"},
        "projection_checkpoints": {**lab, "name": "projection_checkpoints"},
    }
    views = {
        "notes_store": "notes",
        "flow_store": "flows",
        "graph_store": "graphs",
        "overlay_store": "overlays",
        "blackboard_store": "blackboard",
        "memory_store": "session_memory",
        "budget_store": "budgets",
        "strategy_lock_store": "strategy_locks",
        "seo_config_store": "seo_config",
        "analytics_store": "analytics",
        "audit_store": "audit",
        "telemetry_store": "telemetry",
    }
    routes |= {kind: {**lab, "name": name} for kind, name in views.items()}
    connections: dict[str, Any] = {
        "sqlite": {"path": "engines.db", "synchronous": "NORMAL"},
        "kafka": kafka_block(bootstrap, fetch_max_wait_ms=fetch_max_wait_ms),
    }
    if spine_on is not None:
        assert spine_on.dynamodb is not None
        connections["dynamodb"] = spine_on.dynamodb.model_dump(mode="json")
        routes["event_spine"] = {"backend": "dynamodb", "name": "spine_events"}
    document = {
        "mode": "lab",
        "connections": connections,
        "auth": {"algorithm": "HS256"},
        # A write waits for its view in another process: bounded, and generous here so a
        # slow machine does not turn a 201 into a 202.
        "write_wait_seconds": 15,
        "routes": routes,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "routes.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def settings_of(routes: Path) -> Settings:
    return load_settings(routes)[0]


class EnginesProcess(ServerProcess):
    """One ``engines`` process (its own group); :meth:`kill` is SIGKILL, no goodbye."""

    def log_text(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the group: nothing is flushed, closed or checkpointed."""
        signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.stop()


class Serving(EnginesProcess):
    url: str = ""


class Projecting(EnginesProcess):
    """``engines projections run``: ready once it says its projectors run."""

    def _answers(self, url: str) -> bool:
        return RUNNING in self.log_text().encode()

    def assigned(self) -> set[int]:
        """The partitions the group gave this member last (from aiokafka's log line)."""
        lines = [line for line in self.log_text().splitlines() if ASSIGNED in line]
        if not lines:
            return set()
        return {int(n) for n in re.findall(r"partition=(\d+)", lines[-1])}


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.e2e.kafka.feed.cli", *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


async def serve(routes: Path, data_dir: Path) -> Serving:
    """``engines serve --no-projectors`` on a free port; returns once it answers."""
    port = free_port()
    argv = _argv(
        "serve",
        "--routes",
        str(routes),
        "--data-dir",
        str(data_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-projectors",
    )
    url = f"http://{HOST}:{port}"
    server = await asyncio.to_thread(
        Serving.start,
        "engines serve",
        argv,
        ready_url=f"{url}/healthz",
        timeout=STARTUP_SECONDS,
        env=_env(),
    )
    server.url = url
    return server


async def run_projectors(routes: Path, data_dir: Path, names: Sequence[str]) -> Projecting:
    """``engines projections run NAMES``; returns once it says they run."""
    argv = _argv("projections", "run", "--routes", str(routes), "--data-dir", str(data_dir))
    return await asyncio.to_thread(
        Projecting.start,
        "engines projections run",
        [*argv, *names],
        ready_url="",
        timeout=STARTUP_SECONDS,
        env=_env(),
    )


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.05
) -> T:
    """Poll ``check`` every ``every`` seconds until it returns something truthy; fail
    saying ``what`` was awaited at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(every)


async def positions(settings: Settings, data_dir: Path, projector: str) -> dict[str, str]:
    """``projector``'s stored positions on the topic's partitions (``<topic>/<n>``)."""
    registry = Registry(settings, data_dir, create=False)
    try:
        stored = await (await registry.checkpoint_store()).get(projector)
    finally:
        await registry.aclose()
    topic = settings.routes["spine_feed"].name
    out = {}
    for partition, token in stored.items():
        name, _, number = partition.rpartition("/")
        if name == topic and number.isdigit():
            out[partition] = token
    return out
