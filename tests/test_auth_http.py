"""Authenticator over HTTP: anonymous loopback callers, 401s on /graphql."""

from __future__ import annotations

import time
from typing import Any

import pytest

from db.engine import Database
from db.keys import new_key
from resolvers import auth
from resolvers.auth import is_loopback
from resolvers.viewer import Viewer
from tests.factories import (
    TEST_JWT_SECRET,
    add_key,
    jwt_token,
)
from tests.factories.auth import STUDENT, claims, make_auth, refused

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
    # Fixed ids: the key is random, and parallel runs must collect the same tests.
    ids=["unknown-key", "expired-token", "basic"],
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


async def test_http_authorization_sent_twice_is_malformed(
    make_api: Any, scratch_url: str
) -> None:
    """Which one would a proxy in front have checked? Neither is used."""
    api = await make_api(scratch_url, auth_required=True, jwt_secret=TEST_JWT_SECRET)
    student = jwt_token(**claims(role="student", student_id=STUDENT))
    admin = jwt_token(**claims(role="admin"))

    for first, second in ((student, admin), (admin, student)):
        response = await api.http.post(
            "/graphql",
            json=TYPENAME,
            headers=[
                ("Authorization", f"Bearer {first}"),
                ("Authorization", f"Bearer {second}"),
            ],
        )
        assert response.status_code == 401
        [error] = response.json()["errors"]
        assert error["message"] == auth.MALFORMED_HEADER
