"""`gradepulse`: the installed console script runs from any directory; every command
has --help; bad arguments are one line and exit 2; migrate, seed, import, keys and
export-schema do what their `python -m` aliases do, which keep working."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from strawberry.printer import print_schema

from app import build_schema_for
from cli.main import COMMANDS, main
from cli.schema import schema_sdl
from db.migrations import head
from tests.conftest import make_settings
from tests.factories.commands import (
    GRADEPULSE,
    ROOT,
    TIMEOUT_S,
    environment,
    gradepulse,
    sqlite_counts,
)
from tests.factories.importer import GOOD_GRADES, GOOD_STUDENTS

HELP_LINES = [
    "commands:",
    "  serve          serve the API (what python app.py does)",
    "  migrate        upgrade the database to the latest migration",
    "  seed           fill an empty database with demo data",
    "  import         import students and grades from CSV files",
    "  keys           create, list and revoke API keys",
    "  export-schema  print the GraphQL schema (SDL)",
    "  check          check the settings, the database and Redis",
    "  costs          costs.csv totals per day, week or month",
    "  backup         copy the database (SQLite, online)",
    "  restore        replace the database with a backup (SQLite)",
    "",
    "`gradepulse <command> --help` describes each command.",
]


def counts(url: str) -> tuple[int, int]:
    return sqlite_counts(Path(url.split(":///", 1)[1]))


# --- the installed script -----------------------------------------------------------


def test_installed_script_works_from_another_directory(tmp_path: Path) -> None:
    """From a directory that is not the project root, with no PYTHONPATH."""
    assert tmp_path.resolve() != ROOT
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"

    helped = gradepulse("--help", cwd=tmp_path)
    migrated = gradepulse("migrate", "--database-url", url, cwd=tmp_path)
    again = gradepulse("migrate", cwd=tmp_path, DATABASE_URL=url)

    assert (helped.returncode, helped.stderr) == (0, ""), helped.stderr
    assert (
        helped.stdout.splitlines()[0] == "usage: gradepulse [-h] <command> [arguments]"
    )
    assert helped.stdout.splitlines()[-len(HELP_LINES) :] == HELP_LINES
    assert (migrated.returncode, migrated.stderr) == (0, ""), migrated.stderr
    assert migrated.stdout == f"migrated from an empty database to {head()}\n"
    assert again.stdout == (
        f"already at the latest migration ({head()}): nothing to do\n"
    ), again.stderr


def test_installed_script_imports_the_project_not_a_namesake(tmp_path: Path) -> None:
    """`schema`, `db` and `settings` are also names of PyPI packages: a directory
    named like one, first on PYTHONPATH, must not shadow the project's."""
    shadow = tmp_path / "shadow"
    (shadow / "schema").mkdir(parents=True)
    (shadow / "schema" / "__init__.py").write_text("raise ImportError('namesake')\n")

    done = gradepulse("export-schema", cwd=tmp_path, PYTHONPATH=str(shadow))

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == schema_sdl()


def test_export_schema_prints_what_the_server_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export-schema"])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out == schema_sdl()
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert "\ntype Query {\n" in out and "\ntype Mutation {\n" in out
    assert "\ntype Subscription {\n" in out


@pytest.mark.parametrize("environment", ["development", "staging", "production"])
def test_schema_sdl_is_the_schema_app_py_builds_in_every_profile(
    environment: str,
) -> None:
    settings = make_settings(
        "sqlite:///unused.db",
        environment=environment,
        jwt_secret="x" * 32,
    )

    served = build_schema_for(settings, None, audit=True)

    assert schema_sdl() == print_schema(served) + "\n"


# --- help and usage errors ----------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([command, "--help"])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: gradepulse {command} [-h]"), out
    assert "\noptions:\n  -h, --help" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [],
            "gradepulse: error: give a command: serve, migrate, seed, import, keys, "
            "export-schema, check, costs, backup, restore (or --help)",
        ),
        (
            ["sevre"],
            "gradepulse: error: argument command: invalid choice: 'sevre' (choose "
            "from 'serve', 'migrate', 'seed', 'import', 'keys', 'export-schema', "
            "'check', 'costs', 'backup', 'restore')",
        ),
        (
            ["serve", "--port", "70000"],
            "gradepulse serve: error: argument --port: not a port (1-65535): '70000'",
        ),
        (
            ["serve", "--workers", "0"],
            "gradepulse serve: error: argument --workers: must be a whole number of "
            "at least 1: '0'",
        ),
        (
            ["seed", "--students", "0"],
            "gradepulse seed: error: argument --students: must be at least 1, not 0",
        ),
        (
            ["migrate", "--bogus"],
            "gradepulse migrate: error: unrecognized arguments: --bogus",
        ),
        (["import"], "gradepulse import: error: give --students, --grades or both"),
        (
            ["keys", "create", "--role", "admin"],
            "error: the following arguments are required: --name",
        ),
        (
            ["export-schema", "extra"],
            "gradepulse export-schema: error: unrecognized arguments: extra",
        ),
        (
            ["check", "--explain=yes"],
            "gradepulse check: error: argument --explain: "
            "ignored explicit argument 'yes'",
        ),
        (
            ["costs"],
            "gradepulse costs: error: the following arguments are required: report",
        ),
        (
            ["backup"],
            "gradepulse backup: error: the following arguments are required: PATH",
        ),
        (["restore", "a", "b"], "gradepulse restore: error: unrecognized arguments: b"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)

    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == message + "\n"
    assert list(tmp_path.iterdir()) == []  # no database made, nothing written


def test_installed_script_exits_2_on_a_bad_argument(tmp_path: Path) -> None:
    done = gradepulse("seed", "--students", "many", cwd=tmp_path)

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "gradepulse seed: error: argument --students: not a whole number: 'many'\n"
    )


# --- migrate, seed, import, keys through the command -------------------------------


def test_seed_then_seed_if_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'seeded.db'}"

    first = gradepulse(
        "seed",
        "--students",
        "12",
        "--grades-per-student",
        "3",
        "--database-url",
        url,
        cwd=tmp_path,
    )
    second = gradepulse("seed", "--if-empty", cwd=tmp_path, DATABASE_URL=url)

    assert first.returncode == 0, first.stderr
    assert re.fullmatch(
        r"seeded 12 students and 36 grades \(seed 42\) in \d+\.\d\d s\n", first.stdout
    ), first.stdout
    assert second.returncode == 0, second.stderr
    assert second.stdout == "the database already has 12 students: nothing seeded\n"
    assert counts(url) == (12, 36)


def test_import_loads_the_csv_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'import.db'}"
    (tmp_path / "students.csv").write_text(GOOD_STUDENTS)
    # GOOD_GRADES' S00001 row needs a student the files do not hold.
    grades = "".join(
        line + "\n" for line in GOOD_GRADES.splitlines() if "S00001" not in line
    )
    (tmp_path / "grades.csv").write_text(grades)

    done = gradepulse(
        "import",
        "--students",
        "students.csv",
        "--grades",
        "grades.csv",
        cwd=tmp_path,
        DATABASE_URL=url,
    )

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"imported 2 students and 3 grades in \d+\.\d\d s\n", done.stdout
    ), done.stdout
    assert done.stderr == ""  # no terminal: no progress bar
    assert counts(url) == (2, 3)


def test_import_shows_its_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'import.db'}"
    (tmp_path / "students.csv").write_text(GOOD_STUDENTS)
    controller, terminal = pty.openpty()
    termios.tcsetwinsize(terminal, (24, 100))  # a new pty is 0 columns wide
    try:
        process = subprocess.Popen(
            [str(GRADEPULSE), "import", "--students", "students.csv"],
            cwd=tmp_path,
            env=environment(DATABASE_URL=url),
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
        )
        out, _ = process.communicate(timeout=TIMEOUT_S)
        os.close(terminal)
        terminal = -1
        shown = _read_all(controller)
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)

    assert process.returncode == 0
    assert out.startswith("imported 2 students and 0 grades in ")
    assert re.search(r"100%\|█+\| 2/2 \[", shown), shown
    assert counts(url) == (2, 0)


def _read_all(fd: int) -> str:
    chunks = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"

    created = gradepulse(
        "keys",
        "create",
        "--role",
        "admin",
        "--name",
        "ops",
        cwd=tmp_path,
        DATABASE_URL=url,
    )
    revoked = gradepulse("keys", "revoke", "1", cwd=tmp_path, DATABASE_URL=url)
    listed = gradepulse("keys", "list", cwd=tmp_path, DATABASE_URL=url)

    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"gp_[A-Za-z0-9_-]{43}", key), created.stdout
    assert created.stderr.startswith(f"created API key 1 (gp_{key[3:11]}) for admin")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked API key 1 (gp_{key[3:11]}, 'ops') at ")
    [header, row] = listed.stdout.splitlines()
    assert header.split() == [
        "id",
        "prefix",
        "name",
        "role",
        "levels",
        "student",
        "created",
        "expires",
        "revoked",
    ]
    assert row.split()[:6] == ["1", f"gp_{key[3:11]}", "ops", "admin", "-", "-"]


# --- the aliases --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "prog"),
    [
        ("cli.migrate", "python -m cli.migrate"),
        ("db.seed", "python -m db.seed"),
        ("db.importer", "python -m db.importer"),
        ("resolvers.keys", "python -m resolvers.keys"),
    ],
)
def test_python_m_aliases_still_work(module: str, prog: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.startswith(f"usage: {prog} [-h]"), done.stdout


def test_python_m_alias_and_command_migrate_alike(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alias.db'}"

    alias = subprocess.run(
        [sys.executable, "-m", "cli.migrate", "--database-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    command = gradepulse("migrate", "--database-url", url, cwd=tmp_path)

    assert (alias.returncode, alias.stdout) == (
        0,
        f"migrated from an empty database to {head()}\n",
    ), alias.stderr
    assert (command.returncode, command.stdout) == (
        0,
        f"already at the latest migration ({head()}): nothing to do\n",
    ), command.stderr
