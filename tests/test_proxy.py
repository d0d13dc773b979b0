"""The tests' TCP proxy (tests/factories/proxy.py) in front of the real Redis: it
forwards, it cuts, and a stop closes every socket it opened, even that of a
connection the loop was accepting at that moment (asyncio.Server.close() leaks that
one: CPython gh-109564)."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from urllib.parse import urlsplit

from tests.factories.proxy import TcpProxy

PING = b"*1\r\n$4\r\nPING\r\n"


def proxy_for(redis_url: str) -> TcpProxy:
    parts = urlsplit(redis_url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)


def connect(proxy: TcpProxy) -> socket.socket:
    """A client whose connection the kernel has completed (it waits in the proxy's
    backlog until the loop accepts it)."""
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


async def ask(client: socket.socket, request: bytes) -> bytes:
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(client, request)
    return await asyncio.wait_for(loop.sock_recv(client, 1024), 2)


async def ended(client: socket.socket) -> bool:
    """The proxy ended this connection: end of stream, or reset."""
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(client, 1024), 2) == b""
    except ConnectionResetError:
        return True


async def test_forwards_cuts_and_forwards_again(redis_url):
    proxy = proxy_for(redis_url)
    await proxy.start()
    try:
        with connect(proxy) as first:
            before = await ask(first, PING)
            await proxy.stop()
            cut = await ended(first)
            refused = None
            try:
                connect(proxy).close()
            except ConnectionRefusedError as exc:
                refused = exc
        await proxy.start()
        with connect(proxy) as second:
            after = await ask(second, PING)
    finally:
        await proxy.stop()

    assert before == after == b"+PONG\r\n"
    assert cut
    assert refused is not None


async def test_a_blackhole_answers_nothing(redis_url):
    proxy = proxy_for(redis_url)
    await proxy.start()
    try:
        proxy.blackhole()
        with connect(proxy) as client:
            try:
                answer = await ask(client, PING)
            except TimeoutError:
                answer = None
    finally:
        await proxy.stop()

    assert answer is None


async def test_a_stop_closes_the_connections_it_was_accepting(redis_url):
    proxy = proxy_for(redis_url)
    clients: list[socket.socket] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        # Stop 0 to 3 loop turns after the clients connected: after 2, the loop has
        # accepted them and not yet handed them on (where asyncio.Server leaks).
        for turns in [0, 1, 2, 3] * 10:
            await proxy.start()
            clients += [connect(proxy) for _ in range(3)]
            for _ in range(turns):
                await asyncio.sleep(0)
            await proxy.stop()
        cut = [await ended(client) for client in clients]
        for client in clients:
            client.close()
        gc.collect()

    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert cut == [True] * 120
