"""Faults: slow HTTP clients, against `python app.py` with HTTP_REQUEST_TIMEOUT_S=2.

500 keep-alive connections left idle after a request, clients that connect and
send nothing, send their headers or their body a byte at a time: a well-behaved
client keeps getting its answers within 1 s throughout, the idle connections are
closed by the keep-alive timeout, and the slow ones once HTTP_REQUEST_TIMEOUT_S has
passed (408 when no response began)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories.cluster import AppProcess, app_with_files

pytestmark = pytest.mark.faults

REQUEST_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 5.0  # uvicorn's timeout_keep_alive
IDLE = 500
ANSWER_S = 1.0
QUERY = b'{"query":"{ __typename }"}'
REQUEST = (
    b"POST /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(QUERY)).encode() + b"\r\n\r\n" + QUERY
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AppProcess]:
    with app_with_files(
        tmp_path, 4 * IDLE + 256, HTTP_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S)
    ) as app:
        yield app


class Prober:
    """A well-behaved client asking every 0.2 s, on its own connection each time;
    the slowest answer it got."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = httpx.post(
                    self.url + "/graphql",
                    content=QUERY,
                    timeout=10,
                    headers={"content-type": "application/json"},
                )
                if response.json().get("data") != {"__typename": "Query"}:
                    self.failures.append(response.text)
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - started)
            self._stop.wait(0.2)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `seconds`, and what it sent."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def dribble(
    sock: socket.socket, data: bytes, every_s: float, stop: threading.Event
) -> None:
    for byte in data:
        if stop.is_set():
            return
        with contextlib.suppress(OSError):
            sock.sendall(bytes([byte]))
        stop.wait(every_s)


def test_slow_and_idle_clients_are_dropped_and_others_served(
    server: AppProcess,
) -> None:
    with Prober(server.url) as prober:
        # 500 kept-alive connections, each after one answered request.
        idle = []
        for _ in range(IDLE):
            sock = connect(server.port)
            sock.sendall(REQUEST)
            idle.append(sock)
        for sock in idle:
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "no answer"
        # A client that sends nothing, one that dribbles its headers, one its body.
        silent = connect(server.port)
        headers, body = connect(server.port), connect(server.port)
        stop = threading.Event()
        started = time.monotonic()
        # The body's client sends its headers at once, then the body byte by byte.
        body.sendall(REQUEST[: -len(QUERY)])
        dribblers = [
            threading.Thread(target=dribble, args=(headers, REQUEST, 0.3, stop)),
            threading.Thread(target=dribble, args=(body, QUERY, 0.3, stop)),
        ]
        for thread in dribblers:
            thread.start()
        try:
            for sock in (silent, headers, body):
                gone, sent = closed_within(
                    sock, REQUEST_TIMEOUT_S + 2.0 - (time.monotonic() - started)
                )
                assert gone, "a slow client was not dropped"
                assert sent.startswith(b"HTTP/1.1 408"), sent
            assert time.monotonic() - started >= REQUEST_TIMEOUT_S - 0.1
            # The idle ones: closed by the keep-alive timeout.
            for sock in idle:
                gone, _ = closed_within(sock, KEEP_ALIVE_S + 3.0)
                assert gone, "an idle connection was kept"
        finally:
            stop.set()
            for thread in dribblers:
                thread.join(10)
            for sock in (*idle, silent, headers, body):
                sock.close()
    assert prober.failures == []
    assert prober.slowest < ANSWER_S, prober.slowest
