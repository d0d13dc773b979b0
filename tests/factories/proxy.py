"""A TCP proxy on 127.0.0.1 that a test stops and starts, to take a service (Redis)
away from the app and give it back without touching the service itself.

It accepts in a plain reader callback, not through asyncio.Server: Server.close()
races with a connection that the loop has accepted but not yet handed to a transport
(CPython gh-109564, open in 3.11 to 3.13): the transport's creation fails silently
and its socket is left for the garbage collector, a ResourceWarning in whichever test
runs next. Here a socket belongs to the proxy from the moment accept() returns it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit, urlunsplit

from tests.factories import free_port

CHUNK = 65536
# stop() waits this long for the connections' tasks to end once they are cut (they
# end at once: every socket is shut down under them).
STOP_S = 2.0


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `host`:`target_port`. `stop()` refuses new
    connections and cuts the open ones (a Redis that went away), and returns once
    every socket it opened is closed; `start()` listens again on the same port;
    `blackhole()` accepts connections and answers nothing (a Redis that hangs)."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._forward = True
        # Every socket the proxy holds open (both ends of each connection), and the
        # task that serves each accepted connection.
        self._sockets: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, redis_url: str) -> str:
        """`redis_url` (same database number and credentials) through the proxy."""
        parts = urlsplit(redis_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._forward = True
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener, self._accept, listener)
        self._listener = listener

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            asyncio.get_running_loop().remove_reader(listener)
            listener.close()
        self._cut()
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        # A task cancelled before it ran never reached its `finally`.
        for sock in list(self._sockets):
            self._close(sock)

    def blackhole(self) -> None:
        """Keep listening, forward nothing: every command times out."""
        self._forward = False
        self._cut()

    def _cut(self) -> None:
        """Every open connection ends at once; their tasks close the sockets."""
        for sock in list(self._sockets):
            _shut(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the client gave up meanwhile (ECONNABORTED)
                continue
            conn.setblocking(False)
            self._sockets.add(conn)
            task = asyncio.get_running_loop().create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            if not self._forward:
                with contextlib.suppress(OSError):
                    while await loop.sock_recv(conn, CHUNK):
                        pass
                return
            upstream = socket.socket()
            upstream.setblocking(False)
            self._sockets.add(upstream)
            try:
                with contextlib.suppress(OSError):
                    await loop.sock_connect(upstream, (self.host, self.target_port))
                    await asyncio.gather(
                        _pipe(loop, conn, upstream), _pipe(loop, upstream, conn)
                    )
            finally:
                self._close(upstream)
        finally:
            self._close(conn)

    def _close(self, sock: socket.socket) -> None:
        self._sockets.discard(sock)
        sock.close()


async def _pipe(
    loop: asyncio.AbstractEventLoop, source: socket.socket, target: socket.socket
) -> None:
    with contextlib.suppress(OSError):
        while data := await loop.sock_recv(source, CHUNK):
            await loop.sock_sendall(target, data)
    # One side ended: end the other as well.
    _shut(source)
    _shut(target)


def _shut(sock: socket.socket) -> None:
    """Ends a connection without closing its socket (a task may be waiting on it:
    the wait returns, and the task closes it)."""
    with contextlib.suppress(OSError):  # not connected (yet), or closed already
        sock.shutdown(socket.SHUT_RDWR)
