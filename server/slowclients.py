"""Slow clients: HTTP_REQUEST_TIMEOUT_S, a request must arrive whole within it;
WS_SEND_TIMEOUT_S, a WebSocket client must take what the server sends.

uvicorn closes a keep-alive connection left idle after a response
(`timeout_keep_alive`, 5 s), but has no limit on receiving a request: a client that
connects and sends nothing, or sends its headers or body a byte a second, holds its
connection (and a file descriptor) for as long as it likes. This is uvicorn's
httptools protocol with that limit: from the connection (or, on a kept-alive one,
the first byte of the next request) to the request's last body byte. Past it, the
connection is closed, with a 408 when no response has begun. The time the app takes
to answer is not counted (OPERATION_TIMEOUT_S bounds that), nor is a WebSocket once
upgraded.

A WebSocket client that stops reading fills its socket buffers, then the server's
write buffer: uvicorn then holds every send (and the close) until it drains, and
closes a connection whose keep-alive pong is late with `transport.close()`, which
also waits for the buffer to drain. So a client that never reads again would hold
its connection, its subscriptions and their queues for ever. `SendTimeoutProtocol`
is uvicorn's websockets-sansio protocol with a limit: a connection whose write
buffer has stayed full for WS_SEND_TIMEOUT_S is aborted (the app sees a
disconnect, its operations end, their memory goes)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)

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


class SendTimeoutProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, send_timeout_s: float = 30.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.send_timeout_s = send_timeout_s
        self._stuck: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stuck is None:
            self._stuck = self.loop.call_later(self.send_timeout_s, self._timed_out)

    def resume_writing(self) -> None:
        self._unstick()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstick()
        super().connection_lost(exc)

    def _unstick(self) -> None:
        if self._stuck is not None:
            self._stuck.cancel()
            self._stuck = None

    def _timed_out(self) -> None:
        self._stuck = None
        host, port = self.client or ("-", 0)
        self.logger.info(
            "%s:%d - WebSocket dropped: the client took nothing for %.0f s",
            host,
            port,
            self.send_timeout_s,
        )
        self.transport.abort()  # connection_lost follows: the app sees a disconnect
