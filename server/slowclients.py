"""HTTP_REQUEST_TIMEOUT_S: a request must arrive whole within it.

uvicorn closes a keep-alive connection left idle after a response
(`timeout_keep_alive`, 5 s), but has no limit on receiving a request: a client that
connects and sends nothing, or sends its headers or body a byte a second, holds its
connection (and a file descriptor) for as long as it likes. This is uvicorn's
httptools protocol with that limit: from the connection (or, on a kept-alive one,
the first byte of the next request) to the request's last body byte. Past it, the
connection is closed, with a 408 when no response has begun. The time the app takes
to answer is not counted (OPERATION_TIMEOUT_S bounds that), nor is a WebSocket once
upgraded."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 43\r\n\r\n"
    b"the request did not arrive within the limit"
)


class RequestTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, request_timeout_s: float = 30.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.request_timeout_s = request_timeout_s
        self._receiving: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._receiving is None:  # a kept-alive connection's next request
            self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._receiving = self.loop.call_later(self.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._receiving is not None:
            self._receiving.cancel()
            self._receiving = None

    def _timed_out(self) -> None:
        self._receiving = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT)
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() says http.disconnect
            cycle.message_event.set()
        self.transport.close()
