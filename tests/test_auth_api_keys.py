"""Authenticator and API keys: expiry, revocation, the verified-key cache."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from db.engine import Database
from db.keys import insert_key, new_key, revoke_key
from resolvers.viewer import Viewer
from tests.conftest import StatementCounter
from tests.factories import (
    add_key,
)
from tests.factories.auth import START, STUDENT, Clock, make_auth, refused

# --- API keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "fields", "expected"),
    [
        ("admin", {}, {"role": "admin", "student_id": None, "grade_levels": None}),
        (
            "teacher",
            {"grade_levels": [10, 9]},
            {"role": "teacher", "student_id": None, "grade_levels": frozenset({9, 10})},
        ),
        ("teacher", {}, {"role": "teacher", "student_id": None, "grade_levels": None}),
        (
            "student",
            {"student_id": STUDENT},
            {"role": "student", "student_id": STUDENT, "grade_levels": None},
        ),
    ],
)
async def test_api_key_gives_the_viewer_it_was_made_for(
    database: Database, role: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    key, key_id = await add_key(database, role, **fields)

    viewer = await make_auth(database).authenticate(f"Bearer {key}", "203.0.113.9")

    assert viewer == Viewer(identity=f"key:{key_id}", anonymous=False, **expected)


async def test_bearer_scheme_is_case_insensitive(database: Database) -> None:
    key, key_id = await add_key(database)
    authenticator = make_auth(database)

    for scheme in ("bearer", "BEARER", "Bearer"):
        viewer = await authenticator.authenticate(f"{scheme} {key}", None)
        assert viewer.identity == f"key:{key_id}"


async def test_unknown_key_is_refused(database: Database) -> None:
    await add_key(database)

    message = await refused(make_auth(database), f"Bearer {new_key()}")

    assert message == "unknown or revoked API key"


async def test_expired_key_is_refused_even_while_cached(database: Database) -> None:
    clock = Clock()
    key, _ = await add_key(database, created_at=clock.at(), expires_at=clock.at(60))
    authenticator = make_auth(database, clock=clock, key_cache_ttl_s=3600)
    await authenticator.authenticate(f"Bearer {key}", None)

    clock.now += 60

    assert await refused(authenticator, f"Bearer {key}") == "expired API key"


async def test_key_expiring_later_is_accepted(database: Database) -> None:
    clock = Clock()
    key, key_id = await add_key(
        database, created_at=clock.at(), expires_at=clock.at(60)
    )

    clock.now += 59
    viewer = await make_auth(database, clock=clock).authenticate(f"Bearer {key}", None)

    assert viewer.identity == f"key:{key_id}"
    assert viewer.expires_at == START + 60  # when a WebSocket connection must end


async def test_revoked_key_is_refused_at_once_without_cache(
    database: Database,
) -> None:
    key, key_id = await add_key(database)
    authenticator = make_auth(database, key_cache_ttl_s=0)
    await authenticator.authenticate(f"Bearer {key}", None)

    async with database.writing() as session:
        await revoke_key(session, key_id, Clock().at())

    assert await refused(authenticator, f"Bearer {key}") == "unknown or revoked API key"


async def test_verified_key_is_trusted_for_the_cache_ttl(database: Database) -> None:
    clock = Clock()
    key, key_id = await add_key(database, created_at=clock.at())
    authenticator = make_auth(database, clock=clock, key_cache_ttl_s=5)
    await authenticator.authenticate(f"Bearer {key}", None)
    async with database.writing() as session:
        await revoke_key(session, key_id, clock.at())
    counter = StatementCounter()
    event.listen(database.engine.sync_engine, "before_cursor_execute", counter)

    clock.now += 4.9
    viewer = await authenticator.authenticate(f"Bearer {key}", None)
    assert viewer.identity == f"key:{key_id}"
    assert counter.statements == []  # answered from the cache

    clock.now += 0.2
    assert await refused(authenticator, f"Bearer {key}") == "unknown or revoked API key"
    assert len(counter.reads) == 1


async def test_unknown_key_is_not_cached_so_a_new_key_works_at_once(
    database: Database,
) -> None:
    key = new_key()
    authenticator = make_auth(database, key_cache_ttl_s=3600)
    assert await refused(authenticator, f"Bearer {key}") == "unknown or revoked API key"

    async with database.writing() as session:
        record = await insert_key(
            session, key=key, name="late", role="admin", created_at=Clock().at()
        )

    viewer = await authenticator.authenticate(f"Bearer {key}", None)
    assert viewer.identity == f"key:{record.id}"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token gp_abc",
        "gp_abc",
        "Bearer gp_abc extra",
        "Bearer " + "a" * 8193,
    ],
)
async def test_malformed_header_is_refused(
    offline_database: Database, header: str
) -> None:
    message = await refused(make_auth(offline_database, auth_required=False), header)

    assert message == "malformed Authorization header: expected Bearer <token>"
