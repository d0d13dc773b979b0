"""A WebSocket client that talks to the ASGI app in process (no server, no port):
for protocol tests that need monkeypatched code on the server side."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class AsgiWebSocket:
    def __init__(
        self,
        app: Any,
        *,
        subprotocol: str = "graphql-transport-ws",
        client: tuple[str, int] = ("127.0.0.1", 50000),
        headers: list[tuple[bytes, bytes]] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", host.encode()),
                (b"sec-websocket-protocol", subprotocol.encode()),
                *(headers or []),
            ],
            "subprotocols": [subprotocol],
            "client": client,
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        self.app = app
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    async def __aenter__(self) -> AsgiWebSocket:
        await self.incoming.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(
            self.app(self.scope, self.incoming.get, self.outgoing.put)
        )
        accepted = await self._next()
        if accepted["type"] != "websocket.accept":
            raise ConnectionError(f"handshake refused: {accepted}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except TimeoutError:
                self.task.cancel()

    async def _next(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.outgoing.get(), timeout)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.incoming.put(
            {"type": "websocket.receive", "text": json.dumps(message)}
        )

    async def send_text(self, text: str) -> None:
        """A frame as it stands (JSON that json.dumps would not write)."""
        await self.incoming.put({"type": "websocket.receive", "text": text})

    async def receive_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message that is not a ping; ConnectionError once closed."""
        while True:
            event = await self._next(timeout)
            if event["type"] == "websocket.close":
                self.close_code = event.get("code", 1000)
                raise ConnectionError(f"closed with {self.close_code}")
            text = event.get("text") or event.get("bytes", b"").decode()
            message: dict[str, Any] = json.loads(text)
            if message.get("type") not in ("ping", "ka"):
                return message
