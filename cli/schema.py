"""`gradepulse export-schema`: the GraphQL schema the server serves, as SDL."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from strawberry.printer import print_schema

from cli.parsing import Parser
from server.build import build_schema

PROG = "gradepulse export-schema"


def schema_sdl() -> str:
    """The SDL of the schema the server serves, ending with a newline: the exact
    content of schema.graphql. Built by build_schema as app.py builds it; the
    settings choose its limits and extensions, never its types, so none are read
    (tests/test_cli.py holds the two equal in every profile)."""
    return print_schema(build_schema()) + "\n"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = Parser(
        prog=prog,
        description="Print the GraphQL schema the server serves, in SDL, on stdout: "
        "`gradepulse export-schema > schema.graphql` updates the committed file.",
    )
    parser.parse_args(argv)
    sys.stdout.write(schema_sdl())
    return 0
