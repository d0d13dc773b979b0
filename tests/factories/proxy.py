"""A TCP proxy on 127.0.0.1 that a test stops and starts, to take a service (Redis)
away from the app and give it back without touching the service itself."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from tests.factories import free_port


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `host`:`target_port`. `stop()` refuses new
    connections and cuts the open ones (a Redis that went away); `start()` listens
    again on the same port; `blackhole()` accepts connections and answers nothing
    (a Redis that hangs)."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._forward = True
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, redis_url: str) -> str:
        """`redis_url` (same database number and credentials) through the proxy."""
        parts = urlsplit(redis_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._forward = True
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._cut()

    def blackhole(self) -> None:
        """Keep listening, forward nothing: every command times out."""
        self._forward = False
        self._cut()

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        try:
            if not self._forward:
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.host, self.target_port
                )
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    # One side ended: end the other as well.
    writer.transport.abort()
