"""A TCP pass-through in front of a session server that a test can take down and bring
back: a backend that goes down after start-up, without a server of its own. Down, its
port refuses connections (as a stopped server's does) and every open one is cut."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

HOST = "127.0.0.1"


class Outage:
    """Listens on ``HOST:port`` and forwards each connection to ``target``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def up(self) -> None:
        """Listen (on the same port as before, if it was up once)."""
        self._server = await asyncio.start_server(
            self._forward, HOST, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def stall(self) -> None:
        """Keep every connection open and accept new ones, but pass nothing on: a server
        that hangs (stopped, swapping), not one that is down."""
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@contextlib.asynccontextmanager
async def outage(target_host: str, target_port: int) -> AsyncIterator[Outage]:
    """An :class:`Outage` in front of ``target``, up; taken down on exit."""
    proxy = Outage(target_host, target_port)
    await proxy.up()
    try:
        yield proxy
    finally:
        await proxy.down()
