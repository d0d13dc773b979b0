"""WebSocket transport: the two subscription protocols' handlers and a text adapter.

graphql-transport-ws: Strawberry closes with 4408 when no connection_init arrives in
time, 4409 on a duplicate operation id and 4401 on subscribe before ack, and answers
pings; this handler adds a server ping every KEEP_ALIVE_S. The legacy graphql-ws
protocol has no such codes: its handler closes a connection that sends no
connection_init in time and refuses a duplicate operation id with an error for that
id (Strawberry would silently replace the running operation); the view sends its
keep-alive ("ka") messages. Both run each operation on a context of its own (fresh
DataLoaders, its audit record) that shares the connection's, and let resolvers close
the connection (1013 for a subscriber that fell behind).

Both authenticate the connection_init payload `{"Authorization": "Bearer <token>"}`
by the rules of the HTTP header and set the connection's viewer before the ack;
refused credentials close with 4403 (graphql-transport-ws) or get a
`connection_error` and then the 4403 close (graphql-ws); an address that spent its
budget of failed attempts gets 4429 "Too many requests" the same way. The credential
is checked again before every operation and, while the connection is open, when it
expires and (an API key, which can be revoked) every key cache TTL: a refusal then
ends the connection the same way. A second connection_init closes with 4429 on
both: it must not swap the viewer of a running connection.

Both run queries and mutations as well as subscriptions, with the same limits,
audit and rate budget as over HTTP, and stop a query or mutation after
OPERATION_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

# What Strawberry's handler raises after closing the socket for a refused operation
# (4400); its run_operation, which _run_stream repeats, ends quietly on it. Strawberry
# 0.341 names it privately: this is the one place that reads it.
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    _OperationStreamClosed as OperationStreamClosed,
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
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from monitoring.middleware import assigned_request_id
from resolvers.auth import MALFORMED_HEADER
from resolvers.context import Context, Services
from resolvers.errors import ClientError, ErrorCode, Unauthenticated
from server.envelope import Refusal, parse_operation
from server.errors import (
    DB_UNAVAILABLE_ERRORS,
    DB_UNAVAILABLE_MESSAGE,
    coded_error,
    timeout_error,
)
from server.fanout import FanOut
from server.persisted import PersistedOperations

log = logging.getLogger("gradepulse.websocket")

CONNECTION_INIT_TIMEOUT = timedelta(seconds=3)
KEEP_ALIVE_S = 15.0
INIT_TIMEOUT_CODE = 4408
INIT_TIMEOUT_REASON = "Connection initialisation timeout"
FORBIDDEN_CODE = 4403
FORBIDDEN_REASON = "Forbidden"
TOO_MANY_INITS_CODE = 4429
TOO_MANY_INITS_REASON = "Too many initialisation requests"
RATE_LIMITED_CODE = 4429
RATE_LIMITED_REASON = "Too many requests"
TRY_AGAIN_CODE = 1013
TRY_AGAIN_REASON = "Try again later"
NOT_CONFIGURED = "authentication is not configured"
# After a re-check that failed for another reason than the credential (the
# database, most likely), the next try waits this long.
RECHECK_RETRY_S = 1.0


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends JSON as text frames (the view's encoder gives bytes, which Starlette
    would send as binary frames), and nothing once the socket is closed or the client
    has gone: the receive loop sees the disconnect and ends the operations, so there
    is nothing to report (Strawberry would log each operation's failed send)."""

    closing = False

    async def send_json(self, message: Mapping[str, object]) -> None:
        if self.ws.application_state is WebSocketState.DISCONNECTED:
            return  # e.g. closed by us with 1013: the operation's last words go nowhere
        encoded = self.view.encode_json(message)
        text = encoded.decode() if isinstance(encoded, bytes) else encoded
        with contextlib.suppress(WebSocketDisconnect):
            await self.ws.send_text(text)

    async def send_text(self, text: str) -> None:
        """A frame already encoded (server/fanout.py), with send_json's guards."""
        if self.ws.application_state is WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect):
            await self.ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        """Once: a second close while the first waits for a full socket to take
        it (resolvers.live closes a subscriber that fell behind) does nothing."""
        if self.closing or self.ws.application_state is WebSocketState.DISCONNECTED:
            return
        self.closing = True
        with contextlib.suppress(WebSocketDisconnect):  # dropped while it waited
            await self.ws.close(code=code, reason=reason)


def _attach(context: Any, websocket: Any) -> None:
    if isinstance(context, Context):
        context.connection.close = websocket.close


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


@dataclass(frozen=True, slots=True)
class ConnectionRefusal:
    """Refused credentials: how the connection closes, and the message and
    extensions that the legacy protocol's connection_error carries first."""

    close_code: int
    close_reason: str
    message: str
    extensions: dict[str, object]

    @classmethod
    def of(cls, error: ClientError) -> ConnectionRefusal:
        extensions = {"code": error.code, **error.extensions}
        if error.code is ErrorCode.RATE_LIMITED:
            return cls(RATE_LIMITED_CODE, RATE_LIMITED_REASON, str(error), extensions)
        return cls(FORBIDDEN_CODE, FORBIDDEN_REASON, str(error), extensions)


class ConnectionGuard:
    """One connection's credentials: checked at connection_init, again before each
    operation, and while the connection is open by a watch task that refuses them
    once they expire or (an API key) are revoked. It keeps the Authorization value
    for that, and never logs it. `refuse` ends the connection (each protocol in its
    own way)."""

    def __init__(
        self,
        context: Any,
        websocket: Any,
        refuse: Callable[[ConnectionRefusal], Awaitable[None]],
    ) -> None:
        self.context = context
        self.websocket = websocket
        self.refuse = refuse
        self.admitted = False
        self._authorization: str | None = None
        self._watch: asyncio.Task[None] | None = None

    async def admit(
        self, payload: Mapping[str, object] | None
    ) -> ConnectionRefusal | None:
        """Set the connection's viewer from the connection_init payload (the rules
        of the Authorization header over HTTP); the refusal, or None when the
        connection may go on."""
        context = self.context
        if not isinstance(context, Context) or context.services.authenticator is None:
            # A wiring mistake must not leave the default viewer, an admin.
            return ConnectionRefusal(
                FORBIDDEN_CODE,
                FORBIDDEN_REASON,
                NOT_CONFIGURED,
                {"code": Unauthenticated.code},
            )
        if context.client_host is None:
            client = getattr(getattr(self.websocket, "ws", None), "client", None)
            context.client_host = client.host if client else None
        try:
            authorization = authorization_param(payload)
            context.viewer = await context.services.authenticator.authenticate(
                authorization, context.client_host
            )
        except ClientError as error:
            return ConnectionRefusal.of(error)
        except DB_UNAVAILABLE_ERRORS as error:
            # The key lookup could not reach the database: 1013 (try again later),
            # which graphql-ws clients reconnect on.
            log.warning("credential check failed: %s", type(error).__name__)
            return ConnectionRefusal(
                TRY_AGAIN_CODE,
                TRY_AGAIN_REASON,
                DB_UNAVAILABLE_MESSAGE,
                {"code": ErrorCode.DB_UNAVAILABLE},
            )
        self._authorization = authorization
        self.admitted = True
        return None

    async def recheck(self) -> ConnectionRefusal | None:
        """The admitted credential again, by the same rules (and the viewer it
        gives now); the refusal, or None when the connection may go on."""
        context = self.context
        authenticator = context.services.authenticator
        assert self.admitted and authenticator is not None
        try:
            context.viewer = await authenticator.recheck(
                self._authorization, context.client_host
            )
        except ClientError as error:
            return ConnectionRefusal.of(error)
        except DB_UNAVAILABLE_ERRORS as error:
            # No answer is no refusal: the credential passed its last check (at
            # most a key cache TTL ago), and the operation meets the same outage
            # with a coded DB_UNAVAILABLE error of its own.
            log.warning("credential re-check failed: %s", type(error).__name__)
        return None

    def watch(self) -> None:
        """Watch an acknowledged connection whose credential can end (anonymous
        loopback connections have none)."""
        if self._watch is not None or not self.admitted:
            return
        authenticator = self.context.services.authenticator
        if authenticator.recheck_in(self.context.viewer) is not None:
            self._watch = asyncio.create_task(self._run_watch())

    async def _run_watch(self) -> None:
        authenticator = self.context.services.authenticator
        while (delay := authenticator.recheck_in(self.context.viewer)) is not None:
            await asyncio.sleep(delay)
            try:
                refusal = await self.recheck()
            except Exception as error:
                # No answer is no refusal: the connection goes on until one comes.
                log.warning("credential re-check failed: %s", type(error).__name__)
                await asyncio.sleep(RECHECK_RETRY_S)
                continue
            if refusal is not None:
                await self.refuse(refusal)
                return

    async def stop(self) -> None:
        """End the watch (the connection is closing)."""
        watch, self._watch = self._watch, None
        if watch is None:
            return
        watch.cancel()
        try:
            await watch
        except asyncio.CancelledError:
            pass
        except Exception:  # its own failure must not stop the connection's shutdown
            log.exception("the credential watch failed")


async def read_payload(
    message: Any, context: Any, persisted: PersistedOperations
) -> dict[str, Any] | None:
    """Check an operation message's payload as HTTP checks a request, and put the
    operation back as the envelope reads it (an empty operationName is none), with
    its document when it names one by hash (persisted operations); the coded error
    for a payload HTTP would refuse too, else None."""
    request_id = _request_id(context)
    try:
        operation = parse_operation(
            message.get("payload"), where="an operation's payload"
        )
        operation = await persisted.resolve(operation, context.viewer)
    except Refusal as refusal:
        return refusal.error(request_id)
    except ClientError as error:  # PERSISTED_QUERY_NOT_FOUND and _REQUIRED
        return coded_error(error.code, str(error), request_id)
    message["payload"] = operation.payload()
    return None


def _timeout_for(schema: Any, query: str, operation_name: str | None) -> float | None:
    """OPERATION_TIMEOUT_S for a query or a mutation, None for a subscription."""
    documents = getattr(schema, "documents", None)
    if documents is None or not isinstance(query, str):
        return None  # a malformed operation: Strawberry answers it with an error
    limit: float | None = documents.timeout_for(query, operation_name)
    return limit


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with a server keep-alive ping and credentials checked
    before each operation and while the connection is open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_alive_task: asyncio.Task[None] | None = None
        self.guard = ConnectionGuard(self.context, self.websocket, self._refuse)
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
            refusal = await self.guard.admit(payload)
            if refusal is not None:
                self.connection_init_received = True
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(refusal.close_code, refusal.close_reason)
                return
            if payload is None:  # the protocol allows null; Strawberry would 4400
                message = ConnectionInitMessage(type="connection_init", payload={})
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.keep_alive_task is None:
            self.keep_alive_task = asyncio.create_task(self._keep_alive())
            self.guard.watch()

    async def _keep_alive(self) -> None:
        # The view's interval, which also paces the legacy protocol's "ka" messages.
        interval = self.view.keep_alive_interval or KEEP_ALIVE_S
        while True:
            await asyncio.sleep(interval)
            await self.send_message({"type": "ping"})

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged:
            # The credential may have expired or been revoked since the last check:
            # nothing of the operation is read (or registered) under it.
            if (refusal := await self.guard.recheck()) is not None:
                await self._refuse(refusal)
                return
            error = await read_payload(message, self.context, self.view.persisted)
            if error is not None:
                await self.send_message(
                    {"type": "error", "id": str(message.get("id")), "payload": [error]}
                )
                return
        await super().handle_subscribe(message)

    async def _refuse(self, refusal: ConnectionRefusal) -> None:
        """End the connection: nothing more runs or is sent under the refused
        credential."""
        self.connection_acknowledged = False  # Strawberry refuses what follows
        await self.websocket.close(refusal.close_code, refusal.close_reason)
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Query limits: a query or mutation stops after OPERATION_TIMEOUT_S with an
        OPERATION_TIMEOUT error, as over HTTP; a subscription runs until it ends."""
        limit = _timeout_for(self.schema, operation.query, operation.operation_name)
        if limit is None:
            fanout: FanOut | None = getattr(self.view, "fanout", None)
            if fanout is None:
                await super().run_operation(operation)
                return
            context = await fanout.serve(
                self.context,
                operation.id,
                operation.query,
                operation.variables,
                operation.operation_name,
                self.websocket.send_text,
                legacy=False,
            )
            if context is not None:
                await self._run_stream(operation, context)
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                await super().run_operation(operation)
        except TimeoutError:
            error = timeout_error(limit, started, _request_id(self.context))
            await operation.send_initial_errors([error])

    async def _run_stream(
        self, operation: Operation[Context, None], context: Context
    ) -> None:
        """Strawberry's run_operation, on the operation's own context (one the
        fan-out handed back, with its charge)."""
        try:
            source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            async with aclosing(source):
                await self._send_result_stream(operation, source)
            await operation.send_operation_message(
                {"id": operation.id, "type": "complete"}
            )
        except OperationStreamClosed:
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message(
                    {"id": operation.id, "type": "complete"}
                )
            self.operations.pop(operation.id, None)
            raise

    async def shutdown(self) -> None:
        await self.guard.stop()
        if self.keep_alive_task is not None:
            self.keep_alive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keep_alive_task
        await super().shutdown()


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws (subscriptions-transport-ws) with an init timeout, no silent
    replacement of a running operation, queries and mutations, and credentials
    checked before each operation and while the connection is open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_received = False
        self.guard = ConnectionGuard(self.context, self.websocket, self._refuse)
        _attach(self.context, self.websocket)

    async def handle(self) -> None:
        timeout = asyncio.create_task(self._init_timeout())
        try:
            await super().handle()
        finally:
            timeout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timeout
            await self.guard.stop()

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
            refusal = await self.guard.admit(payload)
            if refusal is not None:
                await self._refuse(refusal)
                return
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self.guard.watch()

    async def _refuse(self, refusal: ConnectionRefusal) -> None:
        """A connection_error, then the close; nothing more runs or is sent under
        the refused credential."""
        self.connection_acknowledged = False  # Strawberry refuses what follows
        extensions = dict(refusal.extensions)
        code = ErrorCode(extensions.pop("code"))
        error = coded_error(
            code, refusal.message, _request_id(self.context), **extensions
        )
        await self.send_message({"type": "connection_error", "payload": error})
        await self.websocket.close(refusal.close_code, refusal.close_reason)
        await self.cleanup()

    async def handle_start(self, message: StartMessage) -> None:
        operation_id = message.get("id")
        if self.connection_acknowledged:
            # The credential may have expired or been revoked since the last check:
            # nothing of the operation is read (or registered) under it.
            if (refusal := await self.guard.recheck()) is not None:
                await self._refuse(refusal)
                return
            # Strawberry would fail on a bad payload and drop the operation or the
            # connection, and would silently replace a running operation.
            request_id = _request_id(self.context)
            error = await read_payload(message, self.context, self.view.persisted)
            if error is None and operation_id in self.tasks:
                error = coded_error(
                    ErrorCode.BAD_USER_INPUT,
                    f"an operation with id {operation_id!r} is already running; "
                    "stop it first or use another id",
                    request_id,
                )
            if error is not None:
                await self.send_message(
                    {"type": "error", "id": str(operation_id), "payload": error}
                )
                return
        await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """Any operation, not only subscriptions (Strawberry's handler would refuse
        a query as an unexpected error): `data` for each result, then `complete`;
        a query or mutation stops after OPERATION_TIMEOUT_S with an
        OPERATION_TIMEOUT error, as over graphql-transport-ws."""
        limit = _timeout_for(self.schema, query, operation_name)
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(limit):
                    ended = await self._send_results(
                        operation_id, query, operation_name, variables
                    )
            except TimeoutError:
                assert limit is not None
                error = timeout_error(limit, started, _request_id(self.context))
                await self.send_message(
                    {"type": "error", "id": operation_id, "payload": error.formatted}
                )
                return
            if ended:
                await self.send_message({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:
            # Stopped by the client or at shutdown: Strawberry's handler says so.
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            # Its id is free again and it no longer counts as running.
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def _send_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> bool:
        """Send the operation's results; False when it ended with an error
        message (which ends an operation in this protocol)."""
        context: Context | None = self.context
        fanout: FanOut | None = getattr(self.view, "fanout", None)
        if (
            fanout is not None
            and _timeout_for(self.schema, query, operation_name) is None
        ):
            context = await fanout.serve(
                self.context,
                operation_id,
                query,
                variables,
                operation_name,
                self.websocket.send_text,
                legacy=True,
            )
            if context is None:
                return True
        source = await self.schema.stream(
            query,
            variable_values=variables,
            context_value=context,
            root_value=self.root_value,
            operation_name=operation_name,
        )
        self.subscriptions[operation_id] = source
        first = True
        async with aclosing(source):
            async for result in source:
                if first and isinstance(result, PreExecutionError):
                    assert result.errors
                    await self.send_message(
                        {
                            "type": "error",
                            "id": operation_id,
                            "payload": result.errors[0].formatted,
                        }
                    )
                    return False
                if not isinstance(result, ExecutionResult):
                    # @defer/@stream frames have no form in this protocol.
                    await self.send_message(
                        {
                            "type": "error",
                            "id": operation_id,
                            "payload": coded_error(
                                ErrorCode.BAD_USER_INPUT,
                                "incremental delivery is not supported over graphql-ws",
                                _request_id(self.context),
                            ),
                        }
                    )
                    return False
                await self.send_data_message(result, operation_id)
                first = False
        return True


def _request_id(context: Any) -> str | None:
    return getattr(context, "request_id", None)


class GraphQLWebSocket(GraphQL[Context, None]):
    """Strawberry's ASGI view, for the WebSocket side of /graphql only (server/http.py
    answers HTTP): both protocols with the handlers above and text frames."""

    websocket_adapter_class = TextWebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        services: Services,
        *,
        schema: Any,
        allowed_origins: list[str],
        fanout: FanOut | None = None,
        persisted: PersistedOperations,
    ) -> None:
        super().__init__(
            schema=schema,
            graphql_ide=None,
            # Browser pages on the CORS allow-list may open subscriptions too.
            allowed_origins=allowed_origins,
            connection_init_wait_timeout=CONNECTION_INIT_TIMEOUT,
            keep_alive=True,  # graphql-ws "ka" messages; graphql-transport-ws pings
            keep_alive_interval=KEEP_ALIVE_S,
            # resolvers/live.py counts subscriptions (not queries) against the limits
            max_subscriptions_per_connection=None,
        )
        self.services = services
        # Shares the work of `metrics` subscribers' events (server/fanout.py).
        self.fanout = fanout
        # Documents named by hash, and the PERSISTED_OPERATIONS mode.
        self.persisted = persisted

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        client = request.client.host if request.client else None
        return self.services.context(
            request_id=assigned_request_id(request.scope),
            over_http=False,
            request_state=request.scope["state"],
            client_host=client,
        )

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        """A message whose objects name a member twice is malformed (4400), as
        JSON parsers disagree on which one counts: `{"Authorization": <a student's
        key>, "Authorization": <an admin's>}` read as the last."""
        return json.loads(data, object_pairs_hook=_unique_members)


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise json.JSONDecodeError("a member is named twice", "", 0)
    return members
