"""Benchmark servers: uvicorn processes serving the bench app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """uvicorn serving bench.server:create_bench_app: one worker on the SQLite file
    `database` unless told otherwise (`database_url`, `workers`)."""

    def __init__(
        self,
        database: Path,
        *,
        factory: str = "bench.server:create_bench_app",
        database_url: str | None = None,
        workers: int = 1,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self._log = (database.parent / f"server-{self.port}.log").open("wb")
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url or f"sqlite:///{database}",
            "WORKERS": str(workers),
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "development",
            "ALERT_LOG_PATH": str(database.parent / "alert.log"),
            "COSTS_CSV_PATH": str(database.parent / "costs.csv"),
            # One anonymous client (admin) sends every request: a budget no load run
            # can spend, so that the figures measure serving, not the rate limiter.
            "RATE_LIMIT_ADMIN": str(10**12),
            # And every subscriber is that one client.
            "MAX_SUBSCRIPTIONS_PER_IDENTITY": str(10**6),
            **settings,
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                factory,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                "--ws",
                "websockets-sansio",
                "--ws-per-message-deflate",
                "false",
            ],
            cwd=ROOT,
            env=env,
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("bench server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
        self._log.close()


def graphql_body(query: str) -> bytes:
    return orjson.dumps({"query": query})
