"""`python app.py` answers without a `server: uvicorn` header (production profile):
HTTP answers of every kind and the WebSocket handshake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.factories import ROOT, TEST_JWT_SECRET, TRANSPORT_WS, serve

MIGRATE_TIMEOUT_S = 60


def test_production_answers_carry_no_server_header(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    # given a production database at the latest migration (as `make migrate`)
    subprocess.run(
        [sys.executable, "-m", "cli.migrate", "--database-url", url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        timeout=MIGRATE_TIMEOUT_S,
    )
    command = [sys.executable, str(ROOT / "app.py")]
    with serve(
        command,
        tmp_path,
        ENVIRONMENT="production",
        DATABASE_URL=url,
        JWT_SECRET=TEST_JWT_SECRET,
        ACCESS_LOG="false",
    ) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            answers = {
                "live": client.get("/health/live"),
                "health": client.get("/health"),
                "graphql": client.post("/graphql", json={"query": "{ __typename }"}),
                "dashboard": client.get("/dashboard"),
                "missing": client.get("/nowhere"),
            }
        with connect(
            f"ws://127.0.0.1:{port}/graphql",
            subprotocols=[TRANSPORT_WS],  # type: ignore[list-item]
            open_timeout=10,
            close_timeout=5,
        ) as ws:
            handshake = ws.response.headers if ws.response is not None else None

    # production: the anonymous query is refused (401), the rest answers
    assert {name: r.status_code for name, r in answers.items()} == {
        "live": 200,
        "health": 200,
        "graphql": 401,
        "dashboard": 200,
        "missing": 404,
    }
    assert answers["health"].json()["environment"] == "production"
    for name, response in answers.items():
        assert "server" not in response.headers, (name, response.headers)
        assert "date" in response.headers, name  # uvicorn's own headers still go
    assert handshake is not None
    assert handshake["Sec-WebSocket-Protocol"] == TRANSPORT_WS
    assert "Server" not in handshake, handshake
