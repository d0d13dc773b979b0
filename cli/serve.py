"""`gradepulse serve`: what `python app.py` does, with HOST, PORT and WORKERS as
options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli.parsing import Parser, positive

PROG = "gradepulse serve"


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (1-65535): {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = Parser(
        prog=prog,
        description="Serve /graphql, /dashboard, /metrics and /health on HOST:PORT "
        "with WORKERS worker processes, as `python app.py` does: the settings and "
        "the database are checked once (development migrates it to the latest "
        "migration; staging and production refuse one that is not there), then "
        "the workers start. SIGTERM drains requests in flight and stops.",
    )
    parser.add_argument("--host", help="overrides HOST (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="overrides PORT (default 8000)")
    parser.add_argument(
        "--workers",
        type=positive,
        help="overrides WORKERS (default 1; above 1 needs REDIS_URL)",
    )
    args = parser.parse_args(argv)
    # The worker processes build their settings from the environment
    # (app:create_app): the options reach them as the variables they override.
    for name, value in (
        ("HOST", args.host),
        ("PORT", args.port),
        ("WORKERS", args.workers),
    ):
        if value is not None:
            os.environ[name] = str(value)
    # Imported here: the composition root and the settings, for this command only.
    import app
    from settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)  # as `python app.py` says it
        return 1
    app.serve(settings)
    return 0
