"""WebSocket transport: the two subscription protocols' handlers and a text adapter.

graphql-transport-ws: Strawberry closes with 4408 when no connection_init arrives in
time, 4409 on a duplicate operation id and 4401 on subscribe before ack, and answers
pings; this handler adds a server ping every KEEP_ALIVE_S. The legacy graphql-ws
protocol has no such codes: its handler closes a connection that sends no
connection_init in time and refuses a duplicate operation id with an error for that
id (Strawberry would silently replace the running operation); the view sends its
keep-alive ("ka") messages. Both give each operation fresh DataLoaders (the context
lives as long as the connection) and let resolvers close the connection (1013 for a
subscriber that fell behind)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import (
    BaseGraphQLWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage

from resolvers.context import Context

CONNECTION_INIT_TIMEOUT = timedelta(seconds=3)
KEEP_ALIVE_S = 15.0
INIT_TIMEOUT_CODE = 4408
INIT_TIMEOUT_REASON = "Connection initialisation timeout"


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends JSON as text frames (the view's encoder gives bytes, which Starlette
    would send as binary frames), and nothing once the socket is closed or the client
    has gone: the receive loop sees the disconnect and ends the operations, so there
    is nothing to report (Strawberry would log each operation's failed send)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        if self.ws.application_state is WebSocketState.DISCONNECTED:
            return  # e.g. closed by us with 1013: the operation's last words go nowhere
        encoded = self.view.encode_json(message)
        text = encoded.decode() if isinstance(encoded, bytes) else encoded
        with contextlib.suppress(WebSocketDisconnect):
            await self.ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state is not WebSocketState.DISCONNECTED:
            await self.ws.close(code=code, reason=reason)


def _attach(context: Any, websocket: Any) -> None:
    if isinstance(context, Context):
        context.close_connection = websocket.close


def _refresh(context: Any) -> None:
    if isinstance(context, Context):
        context.refresh_loaders()


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with a server keep-alive ping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_alive_task: asyncio.Task[None] | None = None
        _attach(self.context, self.websocket)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.keep_alive_task is None:
            self.keep_alive_task = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        # The view's interval, which also paces the legacy protocol's "ka" messages.
        interval = self.view.keep_alive_interval or KEEP_ALIVE_S
        while True:
            await asyncio.sleep(interval)
            await self.send_message({"type": "ping"})

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged:
            _refresh(self.context)
        await super().handle_subscribe(message)

    async def shutdown(self) -> None:
        if self.keep_alive_task is not None:
            self.keep_alive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keep_alive_task
        await super().shutdown()


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws (subscriptions-transport-ws) with an init timeout and no silent
    replacement of a running operation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_received = False
        _attach(self.context, self.websocket)

    async def handle(self) -> None:
        timeout = asyncio.create_task(self._init_timeout())
        try:
            await super().handle()
        finally:
            timeout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timeout

    async def _init_timeout(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.init_received:
            await self.websocket.close(INIT_TIMEOUT_CODE, INIT_TIMEOUT_REASON)

    async def handle_connection_init(
        self, message: LegacyConnectionInitMessage
    ) -> None:
        self.init_received = True
        await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        operation_id = message.get("id")
        if self.connection_acknowledged and operation_id in self.tasks:
            extensions: dict[str, object] = {"code": "BAD_USER_INPUT"}
            if request_id := getattr(self.context, "request_id", None):
                extensions["requestId"] = request_id
            await self.send_message(
                {
                    "type": "error",
                    "id": str(operation_id),
                    "payload": {
                        "message": f"an operation with id {operation_id!r} is "
                        "already running; stop it first or use another id",
                        "extensions": extensions,
                    },
                }
            )
            return
        if self.connection_acknowledged:
            _refresh(self.context)
        await super().handle_start(message)
