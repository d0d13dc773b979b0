"""ErrorCode is the one list of `extensions.code` values: the README's Errors table
lists exactly its members (with the request-error flag), and no other module writes a
code as a string literal."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from resolvers.errors import REQUEST_ERROR_CODES, SERVER_ERROR_CODES, ErrorCode

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("app.py", "server", "schema", "resolvers", "monitoring", "db", "settings")
ROW = re.compile(r"^\| `([A-Z_]+)` \| (yes|no) \|", re.MULTILINE)


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_errors_table_lists_every_code_and_no_other() -> None:
    rows = dict(ROW.findall(readme_section("Errors")))

    assert set(rows) == {code.value for code in ErrorCode}
    assert {code for code, flag in rows.items() if flag == "yes"} == {
        code.value for code in REQUEST_ERROR_CODES
    }


def test_codes_named_elsewhere_in_the_readme_are_error_codes() -> None:
    # The query limits table's `code` column and the prose of the Examples section.
    limits = readme_section("Security")
    named = set(re.findall(r"\| `([A-Z_]+)` \|$", limits, re.MULTILINE))
    examples = readme_section("Examples")
    named |= set(re.findall(r"`([A-Z][A-Z_]{3,})`", examples.split("carries")[-1]))

    assert named
    assert named <= {code.value for code in ErrorCode}


def test_request_and_server_errors_are_derived_from_the_enum() -> None:
    assert ErrorCode.QUERY_TOO_COSTLY in REQUEST_ERROR_CODES
    assert ErrorCode.FORBIDDEN not in REQUEST_ERROR_CODES
    server_errors = set(SERVER_ERROR_CODES)
    assert server_errors == {ErrorCode.DB_UNAVAILABLE, ErrorCode.INTERNAL_SERVER_ERROR}
    assert not REQUEST_ERROR_CODES & SERVER_ERROR_CODES


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_no_module_writes_an_error_code_as_a_string() -> None:
    codes = {code.value for code in ErrorCode}
    # db/validation.py's InputErrorCode (typed mutation results) shares two names.
    allowed = {ROOT / "resolvers" / "errors.py": codes}
    allowed[ROOT / "db" / "validation.py"] = {"FORBIDDEN", "NOT_FOUND"}
    found = {}
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")) or [ROOT / source]:
            literals = _string_literals(path) & codes
            literals -= allowed.get(path, set())
            if literals:
                found[str(path.relative_to(ROOT))] = sorted(literals)

    assert found == {}
