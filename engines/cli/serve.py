"""``engines serve``: check the routes file, build the runtime, then serve its app.

The order matters to the operator: every problem of the file is named at once before
anything is opened (exit 2); a backend that does not answer stops it with its message
(exit 1); only once every store is open and the address bound does it say "serving
on". Ctrl-C or SIGTERM stops serving, then the runtime closes, and the exit is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from engines.cli.common import LAB_NOTICE, err, settings_of
from engines.http import build_app
from engines.runtime import bootstrap, check_settings, serving_gc
from engines.settings import Settings

#: The exit status when the server could not start serving (see the command's help).
EXIT_NOT_STARTED = 1


class _Server(uvicorn.Server):
    """uvicorn's server, saying it serves once the address is bound, and leaving Ctrl-C
    and SIGTERM handled once it stops: uvicorn raises them again after serving, which
    would end the process before the runtime around it closes."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    data_dir = Path(args.data_dir)
    check_settings(settings, data_dir)  # every problem of the file, before anything opens
    try:
        return asyncio.run(_serve(settings, data_dir, args))
    except KeyboardInterrupt:  # Ctrl-C while starting: what was opened is closed
        err("engines: interrupted while starting")
        return EXIT_NOT_STARTED


async def _serve(settings: Settings, data_dir: Path, args: argparse.Namespace) -> int:
    # a backend down: its error
    async with bootstrap(settings, data_dir, run_projectors=args.projectors) as runtime:
        config = uvicorn.Config(
            build_app(runtime),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            # The app resolves the client address itself, believing X-Forwarded-For only
            # from the configured `http.trusted_proxies`; uvicorn's own handling would
            # believe it from any local peer.
            proxy_headers=False,
        )

        def announce() -> None:
            err(f"engines: serving on http://{args.host}:{args.port} mode={settings.mode}")
            if runtime.lab_routes:
                err(LAB_NOTICE, f"[LAB] data directory: {data_dir.resolve()}")

        server = _Server(config, announce)
        with serving_gc():
            try:
                await server.serve()
            except SystemExit:  # uvicorn could not start (the address in use); it said why
                return EXIT_NOT_STARTED
    return 0 if server.started else EXIT_NOT_STARTED
