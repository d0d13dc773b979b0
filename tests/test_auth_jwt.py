"""Authenticator and JWTs: claims, secret, algorithm, expiry, audience."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import warnings
from typing import Any

import pytest

from db.engine import Database
from resolvers.viewer import Viewer
from tests.factories import (
    TEST_JWT_SECRET,
    jwt_token,
)
from tests.factories.auth import START, STUDENT, Clock, claims, make_auth, refused

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
            {"role": "teacher"},
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
        ({"iat": START + 60}, "token issued in the future"),
        ({"iat": "x"}, "token iat claim must be a number"),
    ]
    + [
        (
            {"role": "teacher", "grade_levels": levels},
            "token grade_levels, when present, must be a non-empty list of grade "
            "levels from 1 to 12",
        )
        # [] named no level, and once meant every level: an issuer writing "none"
        # as [] must not grant them all.
        for levels in ([], [13], [0], [9, "10"], [True], [9.5], "9", 9)
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


def _signed_raw(header: str, payload: str) -> str:
    """A token of these exact JSON texts, signed with the test secret (PyJWT
    would not write a duplicated name or a NaN)."""

    def part(text: str) -> bytes:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=")

    signing_input = part(header) + b"." + part(payload)
    mac = hmac.new(TEST_JWT_SECRET.encode(), signing_input, hashlib.sha256)
    signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


HS256 = '{"alg": "HS256", "typ": "JWT"}'
EXP = START + 600


MALFORMED = "malformed token"


@pytest.mark.parametrize(
    ("header", "payload", "message"),
    [
        # The last name would win: a student token read as an admin one.
        (
            HS256,
            f'{{"sub": "u", "role": "student", "student_id": "S1", "exp": {EXP}, '
            '"role": "admin"}',
            MALFORMED,
        ),
        (
            '{"alg": "none", "alg": "HS256"}',
            f'{{"sub": "u", "role": "admin", "exp": {EXP}}}',
            MALFORMED,
        ),
        # Tokens that would never expire.
        (HS256, '{"sub": "u", "role": "admin", "exp": NaN}', MALFORMED),
        (HS256, '{"sub": "u", "role": "admin", "exp": Infinity}', MALFORMED),
        (
            HS256,
            '{"sub": "u", "role": "admin", "exp": 1e400}',
            "token exp claim must be a number",
        ),
        # An explicit null grade_levels, like [], names no level.
        (
            HS256,
            f'{{"sub": "u", "role": "teacher", "grade_levels": null, "exp": {EXP}}}',
            "token grade_levels, when present, must be a non-empty list of grade "
            "levels from 1 to 12",
        ),
        (HS256, f'[{{"sub": "u", "role": "admin", "exp": {EXP}}}]', MALFORMED),
    ],
)
async def test_jwt_that_a_lenient_parser_would_read_is_refused(
    offline_database: Database, header: str, payload: str, message: str
) -> None:
    token = _signed_raw(header, payload)

    assert await refused(make_auth(offline_database), f"Bearer {token}") == message


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
