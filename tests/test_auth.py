"""Authenticator: API keys (expiry, revocation, the verified-key cache), JWTs, the
loopback rule for anonymous callers, the failure budget per client address, the
re-check schedule, and the WebSocket connection_init payload."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import event
from websockets.asyncio.client import connect

from db.engine import Database, create_database, create_tables
from db.keys import insert_key, new_key, revoke_key
from resolvers import auth
from resolvers.auth import Authenticator, is_loopback
from resolvers.cache import LocalCache
from resolvers.context import Limits, Services
from resolvers.errors import TooManyFailedAuthentications, Unauthenticated
from resolvers.loaders import CACHE_NAMES
from resolvers.ratelimit import MemoryRateStore
from resolvers.viewer import Viewer
from server.websocket import ConnectionGuard, ConnectionRefusal, authorization_param
from tests.conftest import StatementCounter
from tests.factories import (
    DB_STUDENT,
    LEGACY_WS,
    METRICS_QUERY,
    METRICS_SUBSCRIPTION,
    TEST_JWT_SECRET,
    TRANSPORT_WS,
    Server,
    add_key,
    frames_until_closed,
    jwt_token,
    live_server,
    subscribe_frame,
)

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STUDENT = DB_STUDENT  # the one student of the `database` fixture


class Clock:
    """Epoch seconds that only move when a test moves them."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float = 0.0) -> datetime:
        """Naive UTC, as the database stores times."""
        moment = datetime.fromtimestamp(self.now + seconds, UTC)
        return moment.replace(tzinfo=None)


@pytest.fixture
def offline_database(tmp_path: Path) -> Database:
    """For rules that never reach the database (JWTs, anonymous): no tables at all,
    so a lookup would fail loudly."""
    return create_database(f"sqlite+aiosqlite:///{tmp_path / 'never.db'}")


def make_auth(database: Database, **overrides: Any) -> Authenticator:
    values: dict[str, Any] = {
        "jwt_secret": TEST_JWT_SECRET,
        "jwt_audience": None,
        "auth_required": True,
        "key_cache_ttl_s": 5.0,
        "clock": Clock(),
    }
    values.update(overrides)
    return Authenticator(database, **values)


async def refused(
    authenticator: Authenticator, header: str | None, host: str | None = "127.0.0.1"
) -> str:
    """The refusal message; it must never repeat the credentials."""
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(header, host)
    assert caught.value.code == "UNAUTHENTICATED"
    message = str(caught.value)
    if header:
        token = header.partition(" ")[2].strip()
        assert not token or token not in message
    return message


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"sub": "u-17", "role": "admin", "exp": START + 600}
    values.update(overrides)
    return values  # jwt_token leaves out the claims given as None


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


# --- JWTs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"role": "admin"},
            {"role": "admin", "student_id": None, "grade_levels": None},
        ),
        (
            {"role": "teacher", "grade_levels": [9, 10]},
            {"role": "teacher", "student_id": None, "grade_levels": frozenset({9, 10})},
        ),
        (
            {"role": "teacher", "grade_levels": []},
            {"role": "teacher", "student_id": None, "grade_levels": None},
        ),
        (
            {"role": "student", "student_id": STUDENT, "grade_levels": [9]},
            {"role": "student", "student_id": STUDENT, "grade_levels": None},
        ),
        (
            {"role": "admin", "student_id": STUDENT, "grade_levels": [9]},
            {"role": "admin", "student_id": None, "grade_levels": None},
        ),
    ],
)
async def test_jwt_gives_the_viewer_of_its_claims(
    offline_database: Database, extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    header = f"Bearer {jwt_token(**claims(**extra))}"

    viewer = await make_auth(offline_database).authenticate(header, None)

    assert viewer == Viewer(
        identity="user:u-17", anonymous=False, expires_at=START + 600, **expected
    )


async def test_jwt_signed_with_another_secret_is_refused(
    offline_database: Database,
) -> None:
    forged = jwt_token(**claims(), secret="another-secret-that-is-long-enough-too!!")

    message = await refused(make_auth(offline_database), f"Bearer {forged}")

    assert message == "invalid token signature"


def _unsigned(payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(_unsigned(claims()), id="alg-none"),
        pytest.param(jwt_token(**claims(), algorithm="HS512"), id="hs512"),
    ],
)
async def test_jwt_with_another_algorithm_is_refused(
    offline_database: Database, forged: str
) -> None:
    message = await refused(make_auth(offline_database), f"Bearer {forged}")

    assert message == "token algorithm not allowed: HS256 only"


async def test_jwt_expiry_follows_the_clock(offline_database: Database) -> None:
    clock = Clock()
    header = f"Bearer {jwt_token(**claims(exp=START + 10))}"
    authenticator = make_auth(offline_database, clock=clock)

    clock.now = START + 9
    assert (await authenticator.authenticate(header, None)).identity == "user:u-17"
    clock.now = START + 10
    assert await refused(authenticator, header) == "expired token"


@pytest.mark.parametrize("missing", ["sub", "role", "exp"])
async def test_jwt_without_a_required_claim_is_refused(
    offline_database: Database, missing: str
) -> None:
    header = f"Bearer {jwt_token(**claims(**{missing: None}))}"

    message = await refused(make_auth(offline_database), header)

    assert message == f"token lacks the {missing} claim"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"role": "superuser"}, "token role must be one of admin, teacher, student"),
        ({"role": "Admin"}, "token role must be one of admin, teacher, student"),
        ({"role": "student"}, "a student token needs a student_id claim"),
        (
            {"role": "student", "student_id": " "},
            "a student token needs a student_id claim",
        ),
        (
            {"role": "student", "student_id": 7},
            "a student token needs a student_id claim",
        ),
        ({"sub": ""}, "token sub claim must be a non-empty string"),
        ({"sub": 17}, "token sub claim must be a non-empty string"),
        ({"exp": "tomorrow"}, "token exp claim must be a number"),
        ({"nbf": START + 60}, "token not yet valid"),
    ]
    + [
        (
            {"role": "teacher", "grade_levels": levels},
            "token grade_levels must be a list of grade levels from 1 to 12",
        )
        for levels in ([13], [0], [9, "10"], [True], [9.5], "9", 9)
    ],
)
async def test_jwt_with_a_bad_claim_is_refused(
    offline_database: Database, extra: dict[str, Any], message: str
) -> None:
    header = f"Bearer {jwt_token(**claims(**extra))}"

    assert await refused(make_auth(offline_database), header) == message


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        ("gradepulse", True),
        (["other", "gradepulse"], True),
        ("other", False),
        (None, False),
    ],
)
async def test_jwt_audience_is_checked_when_configured(
    offline_database: Database, aud: Any, accepted: bool
) -> None:
    header = f"Bearer {jwt_token(**claims(aud=aud))}"
    authenticator = make_auth(offline_database, jwt_audience="gradepulse")

    if accepted:
        assert (await authenticator.authenticate(header, None)).role == "admin"
    else:
        assert await refused(authenticator, header) == "token audience mismatch"


async def test_jwt_audience_is_ignored_when_not_configured(
    offline_database: Database,
) -> None:
    header = f"Bearer {jwt_token(**claims(aud='anyone'))}"

    viewer = await make_auth(offline_database).authenticate(header, None)

    assert viewer.identity == "user:u-17"


async def test_every_jwt_is_refused_without_a_secret(
    offline_database: Database,
) -> None:
    header = f"Bearer {jwt_token(**claims())}"

    message = await refused(make_auth(offline_database, jwt_secret=None), header)

    assert message == "JWTs are not accepted: no JWT_SECRET is configured"


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "eyJhbGciOi.x.y"])
async def test_garbage_token_is_malformed(
    offline_database: Database, garbage: str
) -> None:
    message = await refused(make_auth(offline_database), f"Bearer {garbage}")

    assert message == "malformed token"


async def test_short_development_secret_works_without_warnings(
    offline_database: Database,
) -> None:
    # pytest turns warnings into errors here: PyJWT's key-length warning would fail.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the issuer's side, not ours
        header = f"Bearer {jwt_token(**claims(), secret='dev')}"

    viewer = await make_auth(offline_database, jwt_secret="dev").authenticate(
        header, None
    )

    assert viewer.identity == "user:u-17"


async def test_refusals_are_logged_without_the_token(
    offline_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    forged = jwt_token(**claims(), secret="another-secret-that-is-long-enough-too!!")
    caplog.set_level(logging.DEBUG, logger="gradepulse.auth")

    await refused(make_auth(offline_database), f"Bearer {forged}")

    assert "credentials refused: invalid token signature" in caplog.text
    assert forged not in caplog.text
    assert forged.split(".")[2] not in caplog.text


# --- anonymous callers ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "::ffff:127.0.0.1"])
async def test_anonymous_loopback_client_is_admin_where_auth_is_optional(
    offline_database: Database, host: str
) -> None:
    viewer = await make_auth(offline_database, auth_required=False).authenticate(
        None, host
    )

    assert viewer == Viewer(
        identity=f"ip:{host}", role="admin", student_id=None, anonymous=True
    )


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.5",
        "192.168.1.20",
        "2001:db8::1",
        "::ffff:10.0.0.5",
        "localhost",
        "",
        None,
    ],
)
async def test_anonymous_remote_client_is_refused_where_auth_is_optional(
    offline_database: Database, host: str | None
) -> None:
    message = await refused(
        make_auth(offline_database, auth_required=False), None, host
    )

    assert (
        message == "missing credentials: anonymous access is only for loopback clients"
    )


async def test_anonymous_loopback_client_is_refused_where_auth_is_required(
    offline_database: Database,
) -> None:
    message = await refused(
        make_auth(offline_database, auth_required=True), None, "::1"
    )

    assert message == "missing credentials"


async def test_bad_credentials_are_refused_from_loopback_where_auth_is_optional(
    database: Database,
) -> None:
    authenticator = make_auth(database, auth_required=False)

    assert await refused(authenticator, f"Bearer {new_key()}") == (
        "unknown or revoked API key"
    )
    forged = jwt_token(**claims(), secret="another-secret-that-is-long-enough-too!!")
    assert await refused(authenticator, f"Bearer {forged}") == "invalid token signature"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("localhost", False),
        ("not an address", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- the WebSocket connection_init payload ---------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, None),
        ({}, None),
        ({"other": "x"}, None),
        ({"Authorization": "Bearer abc"}, "Bearer abc"),
        ({"authorization": "Bearer abc"}, "Bearer abc"),
        ({"AUTHORIZATION": "Bearer abc"}, "Bearer abc"),
    ],
)
def test_authorization_param_reads_the_key_in_any_case(
    payload: dict[str, Any] | None, expected: str | None
) -> None:
    assert authorization_param(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": 17},
        {"Authorization": None},
        {"Authorization": ["Bearer abc"]},
        {"Authorization": "Bearer a", "authorization": "Bearer b"},
    ],
)
def test_authorization_param_that_is_not_one_string_is_malformed(
    payload: dict[str, Any],
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authorization_param(payload)

    assert str(caught.value) == auth.MALFORMED_HEADER


def _socket_context(database: Database, authenticator: Authenticator | None) -> Any:
    services = Services(
        database=database,
        cache=LocalCache(CACHE_NAMES, maxsize=10, ttl=60),
        limits=Limits(),
        authenticator=authenticator,
    )
    return services.context(over_http=False)


async def _never_refused(refusal: ConnectionRefusal) -> None:
    raise AssertionError(f"refused: {refusal}")


def _guard(context: Any, host: str | None = "198.51.100.7") -> ConnectionGuard:
    client = SimpleNamespace(host=host, port=5555) if host else None
    websocket = SimpleNamespace(ws=SimpleNamespace(client=client))
    return ConnectionGuard(context, websocket, _never_refused)


async def test_connection_init_sets_the_viewer_and_the_client_host(
    database: Database,
) -> None:
    key, key_id = await add_key(database, "student", student_id=STUDENT)
    context = _socket_context(database, make_auth(database))
    guard = _guard(context)

    refusal = await guard.admit({"authorization": f"Bearer {key}"})

    assert refusal is None
    assert guard.admitted
    assert context.client_host == "198.51.100.7"
    assert context.viewer == Viewer(
        identity=f"key:{key_id}", role="student", student_id=STUDENT, anonymous=False
    )


async def test_connection_init_refusal_leaves_the_default_viewer(
    offline_database: Database,
) -> None:
    context = _socket_context(offline_database, make_auth(offline_database))
    guard = _guard(context, host=None)

    refusal = await guard.admit(None)

    assert refusal == ConnectionRefusal(
        4403, "Forbidden", "missing credentials", {"code": "UNAUTHENTICATED"}
    )
    assert not guard.admitted
    assert context.client_host is None
    assert context.viewer == Viewer()


async def test_connection_without_an_authenticator_is_refused(
    offline_database: Database,
) -> None:
    context = _socket_context(offline_database, None)
    guard = _guard(context)

    refusal = await guard.admit({"Authorization": f"Bearer {jwt_token(**claims())}"})

    assert refusal == ConnectionRefusal(
        4403,
        "Forbidden",
        "authentication is not configured",
        {"code": "UNAUTHENTICATED"},
    )
    assert not guard.admitted
    assert context.viewer == Viewer()  # still nobody: nothing may run


async def test_connection_recheck_refuses_a_credential_that_expired(
    offline_database: Database,
) -> None:
    clock = Clock()
    context = _socket_context(
        offline_database, make_auth(offline_database, clock=clock)
    )
    guard = _guard(context)
    assert (
        await guard.admit({"Authorization": f"Bearer {jwt_token(**claims())}"}) is None
    )

    clock.now = START + 599
    assert await guard.recheck() is None
    clock.now = START + 600

    assert await guard.recheck() == ConnectionRefusal(
        4403, "Forbidden", "expired token", {"code": "UNAUTHENTICATED"}
    )


async def test_connection_from_a_spent_address_is_refused_with_4429(
    offline_database: Database,
) -> None:
    clock = Clock()
    store = MemoryRateStore(clock=clock)
    authenticator = make_auth(
        offline_database, clock=clock, max_failures=1, failure_store=store
    )
    await store.take("authfail:198.51.100.7", 1, 1)  # the address's one failure
    guard = _guard(_socket_context(offline_database, authenticator))

    # An API key would need a lookup, which a spent address does not get.
    refusal = await guard.admit({"Authorization": f"Bearer {new_key()}"})

    assert refusal == ConnectionRefusal(
        4429,
        "Too many requests",
        "too many failed authentications from this address: retry in 60 s",
        {"code": "RATE_LIMITED", "retryAfter": 60},
    )


# --- the failure budget per client address ----------------------------------------


async def spent(
    authenticator: Authenticator, header: str, host: str = "203.0.113.5"
) -> TooManyFailedAuthentications:
    with pytest.raises(TooManyFailedAuthentications) as caught:
        await authenticator.authenticate(header, host)
    return caught.value


async def test_failed_attempts_spend_the_address_budget_then_nothing_is_looked_up(
    database: Database,
) -> None:
    clock = Clock()
    authenticator = make_auth(database, clock=clock, max_failures=3)
    counter = StatementCounter()
    event.listen(database.engine.sync_engine, "before_cursor_execute", counter)

    for _ in range(3):
        message = await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")
        assert message == "unknown or revoked API key"
    assert len(counter.reads) == 3
    error = await spent(authenticator, f"Bearer {new_key()}")

    assert len(counter.reads) == 3  # refused before the lookup
    assert error.code == "RATE_LIMITED"
    assert error.extensions == {"retryAfter": 20}  # one failure refills in 60/3 s
    assert str(error) == (
        "too many failed authentications from this address: retry in 20 s"
    )


async def test_a_spent_address_gets_no_key_lookups_until_it_refills(
    database: Database,
) -> None:
    clock = Clock()
    key, key_id = await add_key(database, created_at=clock.at())
    authenticator = make_auth(database, clock=clock, max_failures=2)
    for _ in range(2):
        await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")

    # An uncached key would need a lookup: refused for the budget.
    assert (await spent(authenticator, f"Bearer {key}")).extensions == {
        "retryAfter": 30
    }
    # Other addresses keep their own budget.
    other = await authenticator.authenticate(f"Bearer {key}", "203.0.113.6")
    assert other.identity == f"key:{key_id}"
    # Now cached: the same key passes from the spent address, with no lookup.
    cached = await authenticator.authenticate(f"Bearer {key}", "203.0.113.5")
    assert cached.identity == f"key:{key_id}"

    clock.now += 30
    fresh, fresh_id = await add_key(database, created_at=clock.at())
    viewer = await authenticator.authenticate(f"Bearer {fresh}", "203.0.113.5")
    assert viewer.identity == f"key:{fresh_id}"


async def test_a_spent_address_cannot_lock_out_tokens_or_cached_keys(
    database: Database,
) -> None:
    """Clients behind one address (a school's NAT) cannot lock each other out:
    the budget guards only database lookups of unknown keys."""
    clock = Clock()
    key, key_id = await add_key(database, created_at=clock.at())
    authenticator = make_auth(database, clock=clock, max_failures=1)
    await authenticator.authenticate(f"Bearer {key}", "203.0.113.5")  # cached now
    await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")
    await spent(authenticator, f"Bearer {new_key()}")

    # Bad JWTs are checked by signature alone, never charged nor refused unchecked.
    for _ in range(5):
        await refused(authenticator, "Bearer a.b.c", "203.0.113.5")
    good_jwt = await authenticator.authenticate(
        f"Bearer {jwt_token(**claims())}", "203.0.113.5"
    )
    good_key = await authenticator.authenticate(f"Bearer {key}", "203.0.113.5")

    assert good_jwt.identity == "user:u-17"
    assert good_key.identity == f"key:{key_id}"


async def test_accepted_credentials_and_missing_ones_are_not_charged(
    database: Database,
) -> None:
    key, _ = await add_key(database)
    store = MemoryRateStore(clock=Clock())
    authenticator = make_auth(
        database,
        failure_store=store,
        max_failures=1,
        auth_required=False,
        key_cache_ttl_s=0,
    )

    for _ in range(5):
        await authenticator.authenticate(f"Bearer {key}", "203.0.113.5")
        await authenticator.authenticate(None, "127.0.0.1")
    await refused(authenticator, None, "203.0.113.5")  # missing: no guess made

    assert len(store) == 0  # no bucket was charged
    await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")
    assert len(store) == 1
    assert (await spent(authenticator, f"Bearer {key}")).code == "RATE_LIMITED"


async def test_a_recheck_is_outside_the_failure_budget(database: Database) -> None:
    clock = Clock()
    key, key_id = await add_key(database, created_at=clock.at())
    authenticator = make_auth(database, clock=clock, max_failures=1, key_cache_ttl_s=0)
    await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")

    viewer = await authenticator.recheck(f"Bearer {key}", "203.0.113.5")
    with pytest.raises(Unauthenticated, match="^unknown or revoked API key$"):
        await authenticator.recheck(f"Bearer {new_key()}", "203.0.113.5")

    assert viewer.identity == f"key:{key_id}"
    assert (await spent(authenticator, f"Bearer {key}")).extensions == {
        "retryAfter": 60
    }


def test_a_failure_budget_below_one_is_refused(offline_database: Database) -> None:
    with pytest.raises(ValueError, match="^max_failures must be at least 1$"):
        make_auth(offline_database, max_failures=0)


# --- when a connection re-checks its credential ------------------------------------


async def test_recheck_in_follows_expiry_and_the_key_cache_ttl(
    offline_database: Database,
) -> None:
    clock = Clock()
    authenticator = make_auth(offline_database, clock=clock, key_cache_ttl_s=5)

    jwt_viewer = Viewer(identity="user:u", anonymous=False, expires_at=START + 60)
    key_viewer = Viewer(identity="key:1", anonymous=False)
    expiring_key = Viewer(identity="key:2", anonymous=False, expires_at=START + 2)

    assert authenticator.recheck_in(jwt_viewer) == 60
    assert authenticator.recheck_in(key_viewer) == 5
    assert authenticator.recheck_in(expiring_key) == 2
    assert authenticator.recheck_in(Viewer(identity="ip:127.0.0.1")) is None
    clock.now = START + 61
    assert authenticator.recheck_in(jwt_viewer) == 0


@pytest.mark.parametrize(("ttl", "every"), [(0, 1.0), (0.25, 1.0), (30, 30)])
def test_keys_are_rechecked_every_ttl_but_at_most_once_a_second(
    offline_database: Database, ttl: float, every: float
) -> None:
    authenticator = make_auth(offline_database, key_cache_ttl_s=ttl)

    assert authenticator.recheck_in(Viewer(identity="key:1")) == every


# --- WebSockets against a live server ---------------------------------------------


def _key_in_file(path: Path, role: str = "admin") -> str:
    """A key stored in the server's SQLite file before it starts (in a thread: the
    test's event loop must not be replaced)."""

    async def create() -> str:
        database = create_database(f"sqlite:///{path}")
        try:
            await create_tables(database)
            key, _ = await add_key(database, role, name=role, created_at=Clock().at())
            return key
        finally:
            await database.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


@dataclass(frozen=True)
class AuthServer:
    server: Server
    admin_key: str


@pytest.fixture(scope="module")
def required_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    workdir = tmp_path_factory.mktemp("auth-required")
    key = _key_in_file(workdir / "live.db")
    with live_server(
        workdir,
        AUTH_REQUIRED="true",
        JWT_SECRET=TEST_JWT_SECRET,
        API_KEY_CACHE_TTL_S="0",
    ) as server:
        yield AuthServer(server, key)


@pytest.fixture(scope="module")
def optional_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """The development profile, where credentials are optional; no JWT_SECRET."""
    workdir = tmp_path_factory.mktemp("auth-optional")
    key = _key_in_file(workdir / "live.db")
    with live_server(
        workdir, ENVIRONMENT="development", AUTH_REQUIRED="false", JWT_SECRET=""
    ) as server:
        yield AuthServer(server, key)


def _init_frame(payload: Any = ..., **fields: Any) -> str:
    message: dict[str, Any] = {"type": "connection_init", **fields}
    if payload is not ...:
        message["payload"] = payload
    return json.dumps(message)


async def _answer(url: str, protocol: str, *frames: str) -> tuple[list[Any], Any]:
    """Send the frames, then read until the server closes: (frames, close frame)."""
    async with connect(url, subprotocols=[protocol]) as ws:
        for frame in frames:
            await ws.send(frame)
        received = await frames_until_closed(ws)
    close = SimpleNamespace(code=ws.close_code, reason=ws.close_reason)
    return [json.loads(frame) for frame in received], close


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_ws_api_key_is_acknowledged_and_metrics_flow(
    required_server: AuthServer, protocol: str
) -> None:
    transport = WebsocketsTransport(
        url=required_server.server.ws_url,
        subprotocols=[protocol],
        init_payload={"Authorization": f"Bearer {required_server.admin_key}"},
    )
    async with Client(transport=transport) as session:
        request = GraphQLRequest(
            METRICS_SUBSCRIPTION, variable_values={"intervalMs": 1000}
        )
        stream = session.subscribe(request)
        event = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()

    assert event["metrics"]["activeSubscriptions"] >= 1
    assert event["metrics"]["at"].endswith("Z")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_ws_jwt_under_a_lower_case_key_is_acknowledged(
    required_server: AuthServer, protocol: str
) -> None:
    teacher = jwt_token(
        **claims(role="teacher", grade_levels=[9], exp=time.time() + 60)
    )

    async with connect(required_server.server.ws_url, subprotocols=[protocol]) as ws:
        await ws.send(_init_frame({"authorization": f"Bearer {teacher}"}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert ack == {"type": "connection_ack"}


REFUSED = [
    pytest.param({"Authorization": f"Bearer {new_key()}"}, id="unknown-key"),
    pytest.param(
        {"Authorization": "Bearer " + jwt_token(**claims(), secret="x" * 64)},
        id="forged-jwt",
    ),
    pytest.param({"Authorization": 17}, id="not-a-string"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
    pytest.param({}, id="empty-payload"),
    pytest.param(None, id="null-payload"),
    pytest.param(..., id="no-payload"),
]


@pytest.mark.parametrize("payload", REFUSED)
async def test_ws_refused_credentials_close_with_4403(
    required_server: AuthServer, payload: Any
) -> None:
    frames, close = await _answer(
        required_server.server.ws_url,
        TRANSPORT_WS,
        _init_frame(payload),
        # Pipelined: a refused connection must not run it.
        subscribe_frame(TRANSPORT_WS, "1", METRICS_QUERY),
    )

    assert frames == []
    assert (close.code, close.reason) == (4403, "Forbidden")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"Authorization": f"Bearer {new_key()}"}, "unknown or revoked API key"),
        ({"authorization": "Bearer not-a-jwt"}, "malformed token"),
        (..., "missing credentials"),
    ],
)
async def test_ws_legacy_refusal_is_a_connection_error_then_4403(
    required_server: AuthServer, payload: Any, message: str
) -> None:
    frames, close = await _answer(
        required_server.server.ws_url,
        LEGACY_WS,
        _init_frame(payload),
        subscribe_frame(LEGACY_WS, "1", METRICS_QUERY),
    )

    [error] = frames
    assert error["type"] == "connection_error"
    assert error["payload"]["message"] == message
    assert error["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    assert re.fullmatch(r"[0-9a-f]{32}", error["payload"]["extensions"]["requestId"])
    assert close.code == 4403


async def test_ws_legacy_second_connection_init_closes_with_4429(
    required_server: AuthServer,
) -> None:
    good = _init_frame({"Authorization": f"Bearer {required_server.admin_key}"})

    frames, close = await _answer(
        required_server.server.ws_url, LEGACY_WS, good, _init_frame(None)
    )

    assert frames[0] == {"type": "connection_ack"}
    assert all(frame == {"type": "ka"} for frame in frames[1:])
    assert (close.code, close.reason) == (4429, "Too many initialisation requests")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_ws_anonymous_loopback_is_acknowledged_where_auth_is_optional(
    optional_server: AuthServer, protocol: str
) -> None:
    async with connect(optional_server.server.ws_url, subprotocols=[protocol]) as ws:
        await ws.send(_init_frame())
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(subscribe_frame(protocol, "1", METRICS_QUERY))
        data = json.loads(await asyncio.wait_for(ws.recv(), 5))
        while data["type"] == "ka":
            data = json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert ack == {"type": "connection_ack"}
    assert data["type"] == ("next" if protocol == TRANSPORT_WS else "data")
    assert data["id"] == "1"
    assert type(data["payload"]["data"]["metrics"]["requestsTotal"]) is int


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"Authorization": f"Bearer {new_key()}"}, "unknown or revoked API key"),
        (
            {"Authorization": "Bearer " + jwt_token(**claims())},
            "JWTs are not accepted: no JWT_SECRET is configured",
        ),
    ],
)
async def test_ws_bad_credentials_are_refused_where_auth_is_optional(
    optional_server: AuthServer, payload: Any, message: str
) -> None:
    url = optional_server.server.ws_url
    frames, close = await _answer(url, TRANSPORT_WS, _init_frame(payload))
    assert (frames, close.code) == ([], 4403)

    frames, close = await _answer(url, LEGACY_WS, _init_frame(payload))
    assert [frame["payload"]["message"] for frame in frames] == [message]
    assert close.code == 4403


# --- over HTTP (the /graphql endpoint calls the authenticator) -------------------

TYPENAME = {"query": "{ __typename }"}


async def test_http_without_credentials_is_401_where_auth_is_required(
    make_api: Any, scratch_url: str
) -> None:
    api = await make_api(scratch_url, auth_required=True, jwt_secret=TEST_JWT_SECRET)

    response = await api.http.post("/graphql", json=TYPENAME)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="gradepulse"'
    [error] = response.json()["errors"]
    assert error["message"] == "missing credentials"
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()


async def test_http_api_key_and_jwt_are_accepted(
    make_api: Any, scratch_url: str
) -> None:
    api = await make_api(scratch_url, auth_required=True, jwt_secret=TEST_JWT_SECRET)
    key, _ = await add_key(api.services.database, "teacher", grade_levels=[9])
    user = jwt_token(**claims(role="student", student_id=STUDENT, exp=time.time() + 60))

    for credentials in (key, user):
        response = await api.http.post(
            "/graphql",
            json=TYPENAME,
            headers={"Authorization": f"Bearer {credentials}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (f"Bearer {new_key()}", "unknown or revoked API key"),
        ("Bearer " + jwt_token(**claims(exp=1_000)), "expired token"),
        ("Basic dXNlcjpwYXNz", auth.MALFORMED_HEADER),
    ],
)
async def test_http_bad_credentials_are_401_even_where_auth_is_optional(
    make_api: Any, scratch_url: str, header: str, message: str
) -> None:
    api = await make_api(scratch_url, auth_required=False, jwt_secret=TEST_JWT_SECRET)

    response = await api.http.post(
        "/graphql", json=TYPENAME, headers={"Authorization": header}
    )

    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert (error["message"], error["extensions"]["code"]) == (
        message,
        "UNAUTHENTICATED",
    )
    # Without the header the same loopback client is the anonymous admin.
    anonymous = await api.http.post("/graphql", json=TYPENAME)
    assert anonymous.status_code == 200
    assert anonymous.json()["data"] == {"__typename": "Query"}
