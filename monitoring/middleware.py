"""Pure ASGI middleware: the request id (always on, HTTP and WebSocket), and for HTTP
timing, status, Server-Timing and one structured log line per request. RequestId
alone when nothing is monitored; RequestMonitor does both in one layer. AccessLines
is the access log's own handler, which writes its lines in batches."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from monitoring.registry import Registry

log = logging.getLogger("gradepulse.access")
# Request ids need to be unique, not secret: a generator seeded once from the OS
# instead of a getrandom() system call per request (5% of `{ __typename }`'s CPU in
# a VM where system calls are dear). Reseeded in each forked worker.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
# An access line waits at most this long to be written, with the others of its batch.
ACCESS_FLUSH_S = 0.05
ACCESS_BATCH_LINES = 256  # or is written once this many wait
REQUEST_ID = b"x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Scope = dict[str, Any]


class RequestId:
    """Gives every HTTP request and WebSocket connection its id (the client's
    X-Request-ID when it is a safe token) in `scope["state"]["request_id"]`, and
    sends it back in the X-Request-ID header of HTTP responses."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", ()),
                    (REQUEST_ID, request_id.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def assigned_request_id(scope: Mapping[str, Any]) -> str:
    """The id RequestId gave this request or connection."""
    return str(scope["state"]["request_id"])


class RequestMonitor:
    """RequestId's work and, for HTTP, the timing, status, Server-Timing header and
    access log line: one middleware layer, since each layer costs every request."""

    def __init__(self, app: Any, *, registry: Registry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        id_header = (REQUEST_ID, request_id.encode())

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                duration_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", ()))
                headers.append(id_header)
                headers.append((b"server-timing", b"app;dur=%.1f" % duration_ms))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - started
            self.registry.record_http(scope["method"], status, duration)
            if log.isEnabledFor(logging.INFO):
                line = orjson.dumps(
                    {
                        "requestId": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "operation": state.get("operation"),
                        "status": status,
                        "durationMs": round(duration * 1000, 3),
                    }
                ).decode()
                handlers = log.handlers
                if (
                    len(handlers) == 1
                    and type(handlers[0]) is AccessLines
                    and not log.filters
                ):
                    # Only our own handler listens: no LogRecord to build.
                    handlers[0].write(line)
                else:
                    # A record of our own: no caller lookup on every request.
                    log.handle(
                        log.makeRecord(log.name, logging.INFO, "", 0, line, (), None)
                    )


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is a safe token, else a new id."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID:
            candidate = value.decode("latin-1").strip()
            if _SAFE_ID.match(candidate):
                return candidate
            break
    return f"{_ids.getrandbits(128):032x}"


class AccessLines(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log's handler (app.py installs it unless the host configured the
    logger): a line per request, written in batches, one write for the lines of up
    to ACCESS_FLUSH_S (as nginx's `access_log ... buffer= flush=`). A write and a
    flush per line cost more than the rest of a small request's logging. A line
    logged outside the event loop's thread, or with no loop running, is written at
    once; what waits is written when the handler is flushed or closed (at exit)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)

    def write(self, line: str) -> None:
        """Queue one line (from the event loop's thread), or write it at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or (self._loop is not None and loop is not self._loop):
            self._lines.append(line)
            self.write_pending()
            return
        self._lines.append(line)
        if len(self._lines) >= ACCESS_BATCH_LINES:
            self.write_pending()
        elif self._timer is None:
            self._loop = loop
            self._timer = loop.call_later(ACCESS_FLUSH_S, self.write_pending)

    def write_pending(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._loop = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        self.acquire()
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except ValueError:
            pass  # the stream was closed (at exit, after its owner): nowhere to go
        except Exception:
            # As a StreamHandler would for each record: the request is served.
            self.handleError(logging.makeLogRecord({"msg": lines[0], "name": log.name}))
        finally:
            self.release()

    def flush(self) -> None:
        self.write_pending()
        super().flush()

    def close(self) -> None:
        self.write_pending()
        super().close()
