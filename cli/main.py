"""`gradepulse`: the operator's one command, a subcommand per task, each with its
--help; `python app.py`, `python -m cli.migrate`, `python -m db.seed`,
`python -m db.importer` and `python -m resolvers.keys` remain as aliases."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.parsing import Parser

PROG = "gradepulse"
# name: (module, function, what it does). A subcommand's module is imported only
# when it runs: `gradepulse --help` need not load Strawberry or SQLAlchemy.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("cli.serve", "main", "serve the API (what python app.py does)"),
    "migrate": (
        "cli.migrate",
        "main",
        "upgrade the database to the latest migration",
    ),
    "seed": ("cli.seed", "main", "fill an empty database with demo data"),
    "import": ("cli.importer", "main", "import students and grades from CSV files"),
    "keys": ("cli.keys", "main", "create, list and revoke API keys"),
    "export-schema": ("cli.schema", "main", "print the GraphQL schema (SDL)"),
    "check": (
        "cli.check",
        "main",
        "check the settings, the database and Redis",
    ),
    "costs": ("cli.costs", "main", "costs.csv totals per day, week or month"),
    "backup": ("cli.backup", "backup_main", "copy the database (SQLite, online)"),
    "restore": (
        "cli.backup",
        "restore_main",
        "replace the database with a backup (SQLite)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS) + 2
    listing = "\n".join(
        f"  {name.ljust(width)}{summary}" for name, (_, _, summary) in COMMANDS.items()
    )
    parser = Parser(
        prog=PROG,
        usage="%(prog)s [-h] <command> [arguments]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="GradePulse: a GraphQL API server for student grade analytics. "
        "Settings come from the environment (and .env), as for the server.",
        epilog=f"commands:\n{listing}\n\n"
        f"`{PROG} <command> --help` describes each command.",
    )
    parser.add_argument(
        "command", choices=COMMANDS, metavar="command", help=argparse.SUPPRESS
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script `gradepulse`; returns the exit code."""
    _project_first_on_path()
    parser = build_parser()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args:
            parser.error(f"give a command: {', '.join(COMMANDS)} (or --help)")
        parsed = parser.parse_args(args)
        module, function, _ = COMMANDS[parsed.command]
        run = getattr(importlib.import_module(module), function)
        return int(run(parsed.arguments, prog=f"{PROG} {parsed.command}"))
    except SystemExit as exc:  # --help, a usage error, or a refusal to start
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        return exc.code or 0


def _project_first_on_path() -> None:
    """The project's packages before any installed distribution of the same name
    (there is a `schema` on PyPI): the directory holding `cli` goes first on
    sys.path, as when running from the project root. Installed from a wheel, that
    is site-packages, already on the path."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
