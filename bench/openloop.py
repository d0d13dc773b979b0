"""An open-loop load client (constant rate, wrk2-style): requests are started on a
fixed schedule whatever the answers do, over a pool of keep-alive connections, and
each latency is counted from the moment its request was due, so that a server that
falls behind shows it in the tail (no coordinated omission)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Tally:
    """Latencies (s, from the due time) and errors of one stretch of load."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Connection:
    """One keep-alive HTTP/1.1 connection: a POST and its whole answer at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if (
            self.writer is None
            or self.writer.is_closing()
            or self.reader is None
            or self.reader.at_eof()  # the server closed it (keep-alive timeout)
        ):
            self.close()
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port
            )
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nhost: "
            + self.host.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class OpenLoop:
    """Requests to `url` at `rate` a second for `seconds`, from `body()` each."""

    def __init__(self, url: str, connections: int = 64) -> None:
        parts = urlsplit(url)
        self.path = parts.path or "/"
        self.pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(connections):
            self.pool.put_nowait(
                Connection(parts.hostname or "127.0.0.1", parts.port or 80)
            )

    async def run(
        self,
        rate: float,
        seconds: float,
        body: Callable[[], bytes],
        tally: Callable[[], Tally],
        ok: Callable[[int, bytes], bool] = lambda status, _: status == 200,
    ) -> None:
        """`tally()` gives the Tally a request's figure goes to (by minute, say)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = int(rate * seconds)
        tasks: set[asyncio.Task[None]] = set()
        for n in range(count):
            due = start + n / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(due, body(), tally(), ok))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    async def _one(
        self, due: float, body: bytes, into: Tally, ok: Callable[[int, bytes], bool]
    ) -> None:
        connection = await self.pool.get()
        try:
            status, payload = await asyncio.wait_for(
                connection.post(self.path, body), 30
            )
            if not ok(status, payload):
                into.errors += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            into.errors += 1
            connection.close()
            connection.writer = None
        finally:
            self.pool.put_nowait(connection)
        into.latencies.append(asyncio.get_running_loop().time() - due)

    def close(self) -> None:
        while not self.pool.empty():
            self.pool.get_nowait().close()
