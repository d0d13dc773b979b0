"""WebSocket transport: the two subscription protocols' handlers and a text adapter.

graphql-transport-ws: Strawberry closes with 4408 when no connection_init arrives in
time, 4409 on a duplicate operation id and 4401 on subscribe before ack, and answers
pings; this handler adds a server ping every KEEP_ALIVE_S. The legacy graphql-ws
protocol has no such codes: its handler closes a connection that sends no
connection_init in time and refuses a duplicate operation id with an error for that
id (Strawberry would silently replace the running operation); the view sends its
keep-alive ("ka") messages. Both give each operation fresh DataLoaders (the context
lives as long as the connection) and let resolvers close the connection (1013 for a
subscriber that fell behind).

Both authenticate the connection_init payload `{"Authorization": "Bearer <token>"}`
by the rules of the HTTP header and set the connection's viewer before the ack;
refused credentials close with 4403 (graphql-transport-ws) or get a
`connection_error` and then the 4403 close (graphql-ws). A second connection_init
closes with 4429 on both: it must not swap the viewer of a running connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
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

from resolvers.auth import MALFORMED_HEADER
from resolvers.context import Context
from resolvers.errors import Unauthenticated
from schema.limits import timeout_error

CONNECTION_INIT_TIMEOUT = timedelta(seconds=3)
KEEP_ALIVE_S = 15.0
INIT_TIMEOUT_CODE = 4408
INIT_TIMEOUT_REASON = "Connection initialisation timeout"
FORBIDDEN_CODE = 4403
FORBIDDEN_REASON = "Forbidden"
TOO_MANY_INITS_CODE = 4429
TOO_MANY_INITS_REASON = "Too many initialisation requests"


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


def authorization_param(payload: Mapping[str, object] | None) -> str | None:
    """The connection_init payload's Authorization value (the key in any case), None
    when absent; a value that is not one string is malformed."""
    values = [
        value
        for key, value in (payload or {}).items()
        if isinstance(key, str) and key.lower() == "authorization"
    ]
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], str):
        raise Unauthenticated(MALFORMED_HEADER)
    return values[0]


async def authenticate_connection(
    context: Any, websocket: Any, payload: Mapping[str, object] | None
) -> str | None:
    """Set the connection's viewer from the payload's credentials (the same rules
    as the Authorization header over HTTP); the refusal message, or None when the
    connection may go on."""
    if not isinstance(context, Context) or context.authenticator is None:
        return None
    if context.client_host is None:
        client = getattr(getattr(websocket, "ws", None), "client", None)
        context.client_host = client.host if client else None
    try:
        authorization = authorization_param(payload)
        context.viewer = await context.authenticator.authenticate(
            authorization, context.client_host
        )
    except Unauthenticated as exc:
        return str(exc)
    return None


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with a server keep-alive ping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_alive_task: asyncio.Task[None] | None = None
        _attach(self.context, self.websocket)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload")
        # Strawberry answers a second init (4429), a late one and a payload that is
        # not an object (4400); the first well-formed one is authenticated here.
        if (
            not self.connection_init_received
            and not self.connection_timed_out
            and (payload is None or isinstance(payload, dict))
        ):
            refusal = await authenticate_connection(
                self.context, self.websocket, payload
            )
            if refusal is not None:
                self.connection_init_received = True
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(FORBIDDEN_CODE, FORBIDDEN_REASON)
                return
            if payload is None:  # the protocol allows null; Strawberry would 4400
                message = ConnectionInitMessage(type="connection_init", payload={})
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

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Query limits: a query or mutation stops after OPERATION_TIMEOUT_S with an
        OPERATION_TIMEOUT error, as over HTTP; a subscription runs until it ends."""
        documents = getattr(self.schema, "documents", None)
        limit = (
            documents.timeout_for(operation.query, operation.operation_name)
            if documents is not None
            else None
        )
        if limit is None:
            await super().run_operation(operation)
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                await super().run_operation(operation)
        except TimeoutError:
            error = timeout_error(limit, time.perf_counter() - started)
            if request_id := getattr(self.context, "request_id", None):
                error.extensions["requestId"] = request_id  # type: ignore[index]
            await operation.send_initial_errors([error])

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
        if self.init_received:
            # A second init would swap the connection's viewer (and start another
            # keep-alive task in Strawberry's handler).
            await self.websocket.close(TOO_MANY_INITS_CODE, TOO_MANY_INITS_REASON)
            return
        self.init_received = True
        payload = message.get("payload")
        if payload is None or isinstance(payload, dict):
            refusal = await authenticate_connection(
                self.context, self.websocket, payload
            )
            if refusal is not None:
                await self.send_message(
                    {
                        "type": "connection_error",
                        "payload": {
                            "message": refusal,
                            "extensions": _extensions(self.context, "UNAUTHENTICATED"),
                        },
                    }
                )
                await self.websocket.close(FORBIDDEN_CODE, FORBIDDEN_REASON)
                return
        await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        operation_id = message.get("id")
        if self.connection_acknowledged and operation_id in self.tasks:
            await self.send_message(
                {
                    "type": "error",
                    "id": str(operation_id),
                    "payload": {
                        "message": f"an operation with id {operation_id!r} is "
                        "already running; stop it first or use another id",
                        "extensions": _extensions(self.context, "BAD_USER_INPUT"),
                    },
                }
            )
            return
        if self.connection_acknowledged:
            _refresh(self.context)
        await super().handle_start(message)


def _extensions(context: Any, code: str) -> dict[str, object]:
    extensions: dict[str, object] = {"code": code}
    if request_id := getattr(context, "request_id", None):
        extensions["requestId"] = request_id
    return extensions
