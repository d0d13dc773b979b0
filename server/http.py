"""POST and GET /graphql as the GraphQL-over-HTTP specification asks: media types,
status codes, body limits, batching, authentication and the rate-limit headers, and
the offline GraphiQL page.

server/websocket.py answers the WebSocket side; this endpoint answers HTTP itself, so
that every refusal is a JSON body with an `extensions.code` and the right status."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from strawberry.file_uploads.utils import replace_placeholders_with_files
from strawberry.schema.exceptions import (
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from monitoring.middleware import assigned_request_id
from resolvers.auth import MALFORMED_HEADER
from resolvers.context import Context, Services
from resolvers.errors import (
    REQUEST_ERROR_CODES,
    ClientError,
    ErrorCode,
    Unauthenticated,
)
from resolvers.ratelimit import RateState
from resolvers.viewer import Viewer
from server.deadlines import Deadlines
from server.envelope import Operation, Refusal, parse_operation
from server.errors import (
    DB_UNAVAILABLE_ERRORS,
    DB_UNAVAILABLE_MESSAGE,
    coded_error,
    timeout_error,
)
from server.gate import rate_limit_extension
from server.persisted import PersistedOperations
from server.pipeline import Pipeline

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
UPLOAD_HEADER = "X-GradePulse-Upload"
_UPLOAD_NAME = UPLOAD_HEADER.lower().encode()
_ALLOWED = {
    "GET": frozenset({OperationType.QUERY}),
    "POST": frozenset({OperationType.QUERY, OperationType.MUTATION}),
}


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Plain values from the settings, handed down by the composition root."""

    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 64 * 1_048_576
    operation_timeout_s: float = 5.0
    batching_enabled: bool = False
    max_batch_operations: int = 10


class GraphQLHTTP:
    """The HTTP half of /graphql (an ASGI app for a Starlette Route)."""

    def __init__(
        self,
        *,
        schema: Any,
        services: Services,
        limits: HTTPLimits,
        ide_html: str | None = None,
        pipeline: Pipeline | None = None,
        persisted: PersistedOperations | None = None,
    ) -> None:
        self.schema = schema
        self.pipeline = pipeline
        self.persisted = persisted or PersistedOperations()
        self.services = services
        self.limits = limits
        self.deadlines = Deadlines(limits.operation_timeout_s)
        self.ide_html = ide_html  # GraphiQL, served offline; None when switched off

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response | JSONBody:
        state = request.scope["state"]
        request_id = assigned_request_id(request.scope)
        media_type = JSON
        context: Context | None = None
        viewer: Viewer | None = None
        client = request.client.host if request.client else None
        try:
            if request.method not in _ALLOWED:  # HEAD, which Starlette adds to GET
                raise Refusal(
                    405,
                    "GraphQL is served over GET (queries) and POST",
                    headers={"Allow": "GET, POST"},
                )
            if self.ide_html is not None and _wants_ide(request):
                return HTMLResponse(self.ide_html)
            media_type = _negotiate(_header(request, b"accept"))
            viewer = await self._authenticate(request, client)
            body = await self._operations(request)

            def make_context() -> Context:
                return self.services.context(
                    viewer=viewer,
                    request_id=request_id,
                    over_http=True,
                    request_state=state,
                    client_host=client,
                )

            if isinstance(body, list):
                payload: Any = []
                rate: RateState | None = None
                for operation in body:
                    context = make_context()
                    payload.append(
                        await self._batch_element(request.method, operation, context)
                    )
                    rate = context.rate or rate
                # The budget after the last element that was costed.
                return await self._respond(
                    payload, 200, media_type, rate, viewer, client
                )
            context = make_context()
            result = await self._execute(request.method, body, context)
            payload, status = _payload(result, media_type)
            return await self._respond(
                payload, status, media_type, context.rate, viewer, client
            )
        except Refusal as refusal:
            response = await self._respond(
                {"errors": [refusal.error(request_id)]},
                refusal.status,
                media_type,
                context.rate if context is not None else None,
                viewer,
                client,
            )
            response.headers.update(refusal.headers)
            return response

    async def _batch_element(
        self, method: str, operation: Operation, context: Context
    ) -> dict[str, Any]:
        """One operation of a batch: a refusal answers for that element only, so
        that the results of the others (writes included) are not lost."""
        try:
            result = await self._execute(method, operation, context)
        except Refusal as refusal:
            return {"errors": [refusal.error(context.request_id)]}
        return _payload(result, JSON)[0]

    async def _authenticate(self, request: Request, client: str | None) -> Viewer:
        authenticator = self.services.authenticator
        if authenticator is None:  # a wiring mistake must not open the door
            raise Refusal(
                401, "authentication is not configured", ErrorCode.UNAUTHENTICATED
            )
        try:
            return await authenticator.authenticate(_authorization(request), client)
        except DB_UNAVAILABLE_ERRORS:
            # The key lookup could not reach the database: the client may retry.
            raise Refusal(
                503,
                DB_UNAVAILABLE_MESSAGE,
                ErrorCode.DB_UNAVAILABLE,
                headers={"Retry-After": "1"},
            ) from None
        except ClientError as error:
            # Too many failed attempts from this address.
            if error.code == ErrorCode.RATE_LIMITED:
                retry = int(error.extensions.get("retryAfter") or 1)
                raise Refusal(
                    429,
                    str(error),
                    error.code,
                    headers={"Retry-After": str(max(1, retry))},
                    **error.extensions,
                ) from None
            raise Refusal(
                401,
                str(error),
                error.code,
                headers={"WWW-Authenticate": 'Bearer realm="gradepulse"'},
            ) from None

    async def _operations(self, request: Request) -> Operation | list[Operation]:
        if request.method == "GET":
            return parse_operation(_query_params(request))
        content_type = _header(request, b"content-type") or ""
        mime, _, params = content_type.partition(";")
        mime = mime.strip().lower()
        if mime == "multipart/form-data":
            data = await self._multipart(request)
        elif mime == JSON:
            charset = _charset(params)
            if charset not in (None, "utf-8", "utf8"):
                raise Refusal(415, f"request bodies must be UTF-8, not {charset}")
            data = _parse_json(await self._body(request, self.limits.max_body_bytes))
        else:
            raise Refusal(
                415,
                "POST bodies must be application/json (or multipart/form-data with "
                f"the header {UPLOAD_HEADER}: 1)",
                headers={"Accept-Post": f"{JSON}, multipart/form-data"},
            )
        if isinstance(data, list):
            return self._batch(data)
        return parse_operation(data)

    def _batch(self, data: list[Any]) -> list[Operation]:
        if not self.limits.batching_enabled:
            raise Refusal(400, "batched operations are switched off on this server")
        if not data:
            raise Refusal(400, "a batch needs at least one operation")
        if len(data) > self.limits.max_batch_operations:
            raise Refusal(
                400,
                f"a batch may hold at most {self.limits.max_batch_operations} "
                f"operations, not {len(data)}",
                ErrorCode.BATCH_TOO_LARGE,
                limit=self.limits.max_batch_operations,
                actual=len(data),
            )
        return [
            parse_operation(item, where="each operation of a batch") for item in data
        ]

    async def _body(self, request: Request, limit: int) -> bytes:
        declared = _header(request, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, int(declared))
        # Read from the ASGI channel itself: Starlette's stream() costs every request.
        chunks: list[bytes] = []
        size = 0
        receive = request.receive
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise Refusal(400, "the client closed the request body early")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, size)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _multipart(self, request: Request) -> Any:
        if _header(request, _UPLOAD_NAME) != "1":
            # Without the header a browser form could post it cross-site: this
            # content type is only taken together with it.
            raise Refusal(415, f"multipart uploads need the header {UPLOAD_HEADER}: 1")
        limit = self.limits.max_upload_bytes
        declared = _header(request, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, int(declared))
        # The declared length may be absent or wrong: count what actually arrives.
        counted = Request(request.scope, _counting(request.receive, limit))
        try:
            # Non-file parts (`operations`, `map`) are JSON held in memory: they get
            # the ordinary body limit; files are spooled to disk.
            form = await counted.form(max_part_size=self.limits.max_body_bytes)
        except Refusal:
            raise
        except Exception as error:  # python-multipart's and Starlette's parse errors
            raise Refusal(400, f"unreadable multipart body: {error}") from None
        try:
            operations = _parse_json(_form_text(form.get("operations")))
            files_map = _parse_json(_form_text(form.get("map")))
            if not isinstance(files_map, dict) or not isinstance(
                operations, (dict, list)
            ):
                raise TypeError
            files = {key: form[key] for key in files_map}
            return replace_placeholders_with_files(operations, files_map, files)
        except Refusal:
            raise
        except (KeyError, IndexError, TypeError, ValueError):
            raise Refusal(
                400,
                "a multipart body needs `operations` and `map` fields as the "
                "GraphQL multipart request specification gives, and every mapped file",
            ) from None

    async def _execute(
        self, method: str, operation: Operation, context: Context
    ) -> ExecutionResult:
        try:
            operation = await self.persisted.resolve(operation, context.viewer)
        except ClientError as error:
            # Not run: a request error (400 under application/graphql-response+json,
            # 200 under application/json, which Apollo's clients expect).
            coded = coded_error(error.code, str(error), context.request_id)
            return ExecutionResult(
                data=None,
                errors=[GraphQLError(coded["message"], extensions=coded["extensions"])],
            )
        timeout = self.limits.operation_timeout_s
        started = time.perf_counter()
        try:
            async with self.deadlines.limit():
                pipeline = self.pipeline
                if pipeline is not None:
                    ready = pipeline.ready(operation)
                    if ready is not None:
                        planned = await pipeline.run(ready, context)
                        if planned is not None:
                            return planned
                return await self.schema.execute(
                    operation.query,
                    variable_values=operation.variables,
                    context_value=context,
                    operation_name=operation.operation_name,
                    allowed_operation_types=_ALLOWED[method],
                    operation_extensions=operation.extensions,
                )
        except InvalidOperationTypeError as error:
            if error.operation_type is OperationType.MUTATION:
                raise Refusal(
                    405,
                    "mutations need POST",
                    headers={"Allow": "POST"},
                ) from None
            raise Refusal(
                400,
                "subscriptions need a WebSocket (graphql-transport-ws or graphql-ws)",
            ) from None
        except CannotGetOperationTypeError as error:
            raise Refusal(400, error.as_http_error_reason()) from None
        except TimeoutError:
            error = timeout_error(timeout, started, context.request_id)
            # The operation's own extensions went with it; its charge still shows.
            rate = context.rate
            extensions = {"rateLimit": rate_limit_extension(rate)} if rate else None
            return ExecutionResult(data=None, errors=[error], extensions=extensions)

    async def _respond(
        self,
        payload: Any,
        status: int,
        media_type: str,
        rate: RateState | None,
        viewer: Viewer | None,
        client: str | None,
    ) -> JSONBody:
        """The JSON response with the caller's budget in the RateLimit headers:
        after the operation's charge, or (refused before it was costed) as it
        stands; none when the caller is not known yet (401, 406, ...)."""
        headers: dict[str, str] = {}
        limiter = self.services.rate_limiter
        if rate is None and viewer is not None and limiter is not None:
            rate = await limiter.charge(viewer, client, 0)
        if rate is not None:
            headers.update(rate_headers(rate))
            if status == 200 and _rate_limited(payload):
                status = 429
                headers["Retry-After"] = str(max(1, rate.retry_after_s))
        charset = "; charset=utf-8" if media_type == GRAPHQL_RESPONSE else ""
        return JSONBody(orjson.dumps(payload), status, media_type + charset, headers)


class JSONBody:
    """A finished JSON response, sent as two ASGI messages: Starlette's Response
    would parse its headers back from a mutable list on every request. `headers`
    stay a dict until sent (a refusal adds its own)."""

    __slots__ = ("body", "headers", "media_type", "status_code")

    def __init__(
        self, body: bytes, status: int, media_type: str, headers: dict[str, str]
    ) -> None:
        self.body = body
        self.status_code = status
        self.media_type = media_type
        self.headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raw = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", self.media_type.encode()),
            # Answers depend on the caller and may hold student records: no cache
            # (a browser's, a shared proxy's) may keep one, GET answers included.
            (b"cache-control", b"no-store"),
        ]
        raw.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers.items()
        )
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": raw}
        )
        await send({"type": "http.response.body", "body": self.body})


def _header(request: Request, name: bytes) -> str | None:
    """The first value of a request header (ASGI gives names in lower case): what
    `request.headers.get` answers, without building Starlette's Headers and
    lower-casing every name on each lookup."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _authorization(request: Request) -> str | None:
    """The Authorization header; sent twice, it is malformed (which one would a
    proxy in front have checked?)."""
    values = [v for k, v in request.scope["headers"] if k == b"authorization"]
    if len(values) > 1:
        raise Unauthenticated(MALFORMED_HEADER)
    return values[0].decode("latin-1") if values else None


def _counting(receive: Any, limit: int) -> Any:
    """`receive` that refuses a body past `limit` bytes, however it is framed."""
    size = 0

    async def counted() -> Any:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise _too_large(limit, size)
        return message

    return counted


def rate_headers(rate: RateState) -> dict[str, str]:
    """The budget in the structured-field form of the IETF RateLimit headers draft."""
    return {
        "RateLimit-Policy": f'"default";q={rate.limit};w=60',
        "RateLimit": f'"default";r={rate.remaining};t={rate.full_in_s}',
    }


def _payload(result: ExecutionResult, media_type: str) -> tuple[dict[str, Any], int]:
    errors = result.errors or []
    formatted = [error.formatted for error in errors]
    body: dict[str, Any] = {}
    status = 200
    request_error = (
        result.data is None
        and formatted
        and all(
            "path" not in error
            and (error.get("extensions") or {}).get("code") in REQUEST_ERROR_CODES
            for error in formatted
        )
    )
    # The GraphQL specification: no `data` entry when execution never began.
    if not request_error:
        body["data"] = result.data
    elif media_type == GRAPHQL_RESPONSE:
        if any(_code(e) == ErrorCode.UNAUTHENTICATED for e in formatted):
            status = 401
        elif not any(_code(e) == ErrorCode.RATE_LIMITED for e in formatted):
            status = 400
    if formatted:
        body["errors"] = formatted
    if result.extensions:
        body["extensions"] = result.extensions
    return body, status


def _code(error: Mapping[str, Any]) -> Any:
    return (error.get("extensions") or {}).get("code")


def _rate_limited(payload: Any) -> bool:
    """A single operation refused for its budget is a 429 in either media type."""
    if not isinstance(payload, dict) or payload.get("data") is not None:
        return False
    errors = payload.get("errors") or []
    return bool(errors) and all(_code(e) == ErrorCode.RATE_LIMITED for e in errors)


def _negotiate(accept: str | None) -> str:
    """application/graphql-response+json when the client prefers it; application/json
    otherwise, including for `*/*` and no Accept at all."""
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    acceptable = False
    for position, part in enumerate(accept.split(",")):
        mime, _, params = part.partition(";")
        mime = mime.strip().lower()
        quality = _quality(params)
        if quality <= 0:
            continue
        if mime in (GRAPHQL_RESPONSE, JSON):
            candidate = (quality, -position, mime)
            if best is None or candidate > best:
                best = candidate
        elif mime in ("*/*", "application/*"):
            acceptable = True
    if best is not None:
        return best[2]
    if acceptable:
        return JSON
    raise Refusal(
        406,
        f"this endpoint answers {GRAPHQL_RESPONSE} or {JSON}; the Accept header "
        "lists neither",
    )


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _wants_ide(request: Request) -> bool:
    return (
        request.method == "GET"
        and "query" not in request.query_params
        and "text/html" in (_header(request, b"accept") or "")
    )


def _query_params(request: Request) -> dict[str, Any]:
    params = request.query_params
    data: dict[str, Any] = {"query": params.get("query")}
    for name in ("variables", "extensions"):
        raw = params.get(name)
        if raw not in (None, ""):
            data[name] = _parse_json(raw.encode())
    if params.get("operationName"):
        data["operationName"] = params.get("operationName")
    return data


def _parse_json(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            # NaN and Infinity are not JSON, but Python's parser reads them: the
            # variable then fails Float coercion with a coded BAD_USER_INPUT error.
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise Refusal(400, "the request body is not valid JSON") from None
        if _lone_surrogate(data):
            # "\ud800" alone is JSON, but not Unicode text: no database stores it.
            raise Refusal(
                400,
                "the request body holds a lone UTF-16 surrogate (such as \\ud800), "
                "which is not Unicode text",
            ) from None
        return data


def _lone_surrogate(value: Any) -> bool:
    """Whether a string (or key) anywhere in parsed JSON is not encodable text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _form_text(value: Any) -> str:
    if isinstance(value, UploadFile) or value is None:
        raise TypeError
    return str(value)


def _too_large(limit: int, actual: int) -> Refusal:
    return Refusal(
        413,
        f"the request body is larger than {limit} bytes",
        ErrorCode.BODY_TOO_LARGE,
        limit=limit,
        actual=actual,
    )
