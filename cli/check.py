"""`gradepulse check`: the settings as the server would take them (secrets masked),
then the database and Redis as the server would find them."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from cli.parsing import Parser
from settings import Settings, SettingsError, load_settings

PROG = "gradepulse check"
MASK = "****"
# A check that gets no answer within this long fails (an unreachable host).
TIMEOUT_S = 5.0
# Parts of a setting's name that mark its value as a secret (`max_tokens` is not).
SECRET_WORDS = frozenset(
    {"secret", "token", "password", "passwd", "pwd", "credential", "credentials"}
)
# Settings left unset take their value from the profile: shown as it applies.
EFFECTIVE = {
    "auth_required": "requires_auth",
    "graphiql_enabled": "graphiql",
    "introspection_enabled": "introspection",
}


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = Parser(
        prog=prog,
        description="Load and validate the settings as the server does, print their "
        "effective values (secrets masked), then check the database (it answers; "
        "is it at the latest migration?) and Redis when REDIS_URL is set (PING). "
        "Exits 1 with the reasons when something would stop the server.",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="then print the query plan of each hot statement, with the index it "
        "reads its table with, on this database and its data",
    )
    args = parser.parse_args(argv)
    # Imported here, as in serve: the app costs start-up time --help can skip.
    from app import StartRefused, alert_rules, trusted_documents

    try:
        settings = load_settings()
        # What the server checks at start beyond the settings themselves.
        alert_rules(settings)
        trusted_documents(settings)
    except (SettingsError, StartRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in settings_lines(settings):
        print(line)
    problems = asyncio.run(_check_services(settings))
    if args.explain and not problems:
        problems = asyncio.run(_explain(settings))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def settings_lines(settings: Settings) -> list[str]:
    """`NAME=value` for every setting, as it applies (secrets masked)."""
    lines = []
    for name in type(settings).model_fields:
        value = getattr(settings, EFFECTIVE.get(name, name))
        lines.append(f"{name.upper()}={_show(name, value)}")
    return lines


def _show(name: str, value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr) or _secret(name):
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    return mask_url(str(value)) if name.endswith("_url") else str(value)


def mask_url(url: str) -> str:
    """The URL with its password, and query parameters named like secrets, masked
    (the rest as it was written)."""
    parts = urlsplit(url)
    masked = url
    if parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        user = userinfo.partition(":")[0]
        masked = masked.replace(f"{userinfo}@", f"{user}:{MASK}@", 1)
    if parts.query:
        query = "&".join(
            f"{key}={MASK}" if _secret(key) and sep else f"{key}{sep}{value}"
            for key, sep, value in (
                pair.partition("=") for pair in parts.query.split("&")
            )
        )
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def _secret(name: str) -> bool:
    return bool(SECRET_WORDS & set(name.lower().split("_")))


async def _check_services(settings: Settings) -> list[str]:
    """Prints what is ok; returns what is not, one line each."""
    problems = []
    for check in (_check_database, _check_redis):
        ok, problem = await check(settings)
        if ok is not None:
            print(ok)
        if problem is not None:
            problems.append(problem)
    return problems


async def _check_database(settings: Settings) -> tuple[str | None, str | None]:
    from db.backup import sqlite_file
    from db.engine import create_database
    from db.migrations import revision

    url = settings.database_url
    development = settings.environment == "development"
    path = sqlite_file(url)
    if path is not None and not path.exists():  # connecting would create it
        if development:
            return (
                f"database: {path} does not exist yet: the server creates it at "
                "start (development)",
                None,
            )
        return None, f"database: {path} does not exist: run gradepulse migrate"
    if path is not None and (problem := _not_sqlite(path)):
        return None, f"database: {path}: {problem}"
    database = create_database(
        url, pool_size=1, max_overflow=0, busy_timeout_ms=settings.db_busy_timeout_ms
    )
    try:
        state = await asyncio.wait_for(revision(database), TIMEOUT_S)
    except TimeoutError:
        return None, f"database: no answer within {TIMEOUT_S:g} s ({mask_url(url)})"
    # Whatever the driver raises (refused, unknown host, bad password, not a
    # database file) is the answer this command exists to give, in one line.
    except Exception as exc:
        return None, f"database: {_failure(exc, url)} ({mask_url(url)})"
    finally:
        await database.dispose()
    where = f"{database.dialect}, {path or mask_url(url)}"
    if state.at_head:
        return f"database: ok ({where}, at the latest migration {state.head})", None
    current = state.current or "none"
    if development:
        return (
            f"database: ok ({where}, at migration {current}: development migrates "
            f"it to the latest, {state.head}, at start)",
            None,
        )
    return None, (
        f"database: at migration {current}, not at the latest ({state.head}): "
        f"{settings.environment} refuses to start; run gradepulse migrate first"
    )


def _not_sqlite(path: Path) -> str | None:
    """Why the file is no SQLite database, at once (the engine's connection would
    retry for the busy timeout first)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=TIMEOUT_S)) as connection:
            connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


async def _check_redis(settings: Settings) -> tuple[str | None, str | None]:
    url = settings.redis_url
    if url is None:
        return "redis: not configured (REDIS_URL unset: one worker only)", None
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(
        url,
        socket_connect_timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        await asyncio.wait_for(client.ping(), TIMEOUT_S)
    except TimeoutError:
        return None, f"redis: no answer within {TIMEOUT_S:g} s ({mask_url(url)})"
    except Exception as exc:  # as for the database: any failure, in one line
        return None, f"redis: {_failure(exc, url)} ({mask_url(url)})"
    finally:
        await client.aclose()
    return f"redis: ok (PING answered, {mask_url(url)})", None


async def _explain(settings: Settings) -> list[str]:
    """Prints each hot statement's plan; returns the problem, if explaining fails."""
    from db.backup import sqlite_file
    from db.engine import create_database
    from db.plans import explain_hot_statements

    path = sqlite_file(settings.database_url)
    if path is not None and not path.exists():
        return [f"explain: {path} does not exist yet: nothing to explain"]
    database = create_database(
        settings.database_url,
        pool_size=1,
        max_overflow=0,
        busy_timeout_ms=settings.db_busy_timeout_ms,
    )
    try:
        plans = await explain_hot_statements(database)
    except Exception as exc:  # as for the checks: any failure, in one line
        return [f"explain: {_failure(exc, settings.database_url)}"]
    finally:
        await database.dispose()
    print(f"query plans ({database.dialect}):")
    for plan in plans:
        print(f"{plan.name}: {plan.index or 'no index (reads the table whole)'}")
        for line in plan.plan:
            print(f"    {line}")
    return []


def _failure(exc: BaseException, url: str) -> str:
    """The exception in one line, without the URL's password should it quote it."""
    reason = str(exc).splitlines()[0] if str(exc) else ""
    password = urlsplit(url).password
    if password:
        for spelling in {password, unquote(password)}:
            reason = reason.replace(spelling, MASK)
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
