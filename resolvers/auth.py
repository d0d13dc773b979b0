"""Authentication: a bearer API key or JWT, or a loopback client, becomes a Viewer."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NoReturn, cast

import jwt
from cachetools import TTLCache
from jwt.utils import base64url_decode
from sqlalchemy.exc import SQLAlchemyError

from db.engine import Database
from db.keys import (
    KEY_PREFIX,
    ApiKeyRecord,
    active_prefixes,
    find_active_key,
    hash_key,
    key_prefix,
)
from resolvers.errors import TooManyFailedAuthentications, Unauthenticated
from resolvers.ratelimit import MemoryRateStore, RateStore
from resolvers.viewer import ROLES, Role, Viewer

log = logging.getLogger("gradepulse.auth")

MISSING = "missing credentials"
MISSING_REMOTE = "missing credentials: anonymous access is only for loopback clients"
MALFORMED_HEADER = "malformed Authorization header: expected Bearer <token>"
UNKNOWN_KEY = "unknown or revoked API key"
EXPIRED_KEY = "expired API key"
NO_JWT_SECRET = "JWTs are not accepted: no JWT_SECRET is configured"
MALFORMED_TOKEN = "malformed token"
BAD_SIGNATURE = "invalid token signature"
BAD_ALGORITHM = "token algorithm not allowed: HS256 only"
EXPIRED_TOKEN = "expired token"
NOT_YET_VALID = "token not yet valid"
AUDIENCE_MISMATCH = "token audience mismatch"
BAD_SUB = "token sub claim must be a non-empty string"
BAD_ROLE = "token role must be one of admin, teacher, student"
BAD_EXP = "token exp claim must be a number"
BAD_IAT = "token iat claim must be a number"
ISSUED_IN_FUTURE = "token issued in the future"
NO_STUDENT_ID = "a student token needs a student_id claim"
BAD_LEVELS = (
    "token grade_levels, when present, must be a non-empty list of grade levels "
    "from 1 to 12"
)
INVALID_TOKEN = "invalid token"
TOO_MANY_FAILURES = "too many failed authentications from this address"

ALGORITHMS = ["HS256"]
# Longer than any key or sane JWT; nothing bigger is hashed or parsed.
MAX_TOKEN_CHARS = 8192
GRADE_LEVELS = range(1, 13)
# PyJWT warns below this many bytes of HMAC key; the settings refuse shorter
# secrets outside development, where a short one is allowed on purpose.
HMAC_MIN_BYTES = 32
# Refused credentials a client address may present per minute before its next ones
# are refused unchecked (each check of a gp_ key is a database lookup).
MAX_FAILURES_PER_MINUTE = 30
# A connection re-checks its API key no more often than this, whatever the cache.
MIN_RECHECK_S = 1.0


class Authenticator:
    """Turns credentials into a Viewer or raises Unauthenticated. Built by the app
    from plain values; `clock` (epoch seconds) drives key and token expiry, the
    verified-key cache and the failure budget, so tests can move time.

    Each refused credential charges its client address's bucket of `max_failures`
    per minute (in `failure_store`, in process by default); while that bucket is
    empty the address's credentials are refused with TooManyFailedAuthentications
    before they are looked at. Accepted credentials are not charged."""

    def __init__(
        self,
        database: Database,
        *,
        jwt_secret: str | None = None,
        jwt_audience: str | None = None,
        auth_required: bool = True,
        key_cache_ttl_s: float = 5.0,
        key_cache_size: int = 1024,
        max_failures: int = MAX_FAILURES_PER_MINUTE,
        failure_store: RateStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._jwt_secret = jwt_secret or None
        self._jwt_audience = jwt_audience or None
        self._short_secret = len((jwt_secret or "").encode()) < HMAC_MIN_BYTES
        self._auth_required = auth_required
        self._clock = clock
        self._key_recheck_s = max(MIN_RECHECK_S, key_cache_ttl_s)
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self._max_failures = max_failures
        # Not `or`: an empty MemoryRateStore is falsy (it has a length).
        self._failures = (
            MemoryRateStore(clock=clock) if failure_store is None else failure_store
        )
        # The live keys' prefixes, read while an address's failure budget is spent.
        self._prefixes: frozenset[str] | None = None
        self._prefixes_at = 0.0
        # Verified keys only: an unknown key is looked up every time, so that a key
        # created a moment ago works at once and misses cannot flood the cache.
        self._keys: TTLCache[str, ApiKeyRecord] | None = (
            TTLCache(maxsize=key_cache_size, ttl=key_cache_ttl_s, timer=clock)
            if key_cache_ttl_s > 0
            else None
        )

    @property
    def auth_required(self) -> bool:
        return self._auth_required

    async def authenticate(
        self, authorization: str | None, client_host: str | None
    ) -> Viewer:
        """The viewer for an Authorization header value (None when absent) from a
        client at `client_host`. A header that is present but bad is refused even
        where credentials are optional.

        The address's failure budget guards only what costs a database lookup: an
        API key that is not in the verified-key cache. A JWT (checked by its
        signature) or a cached key is never refused for the budget, so that
        clients sharing an address (a school's NAT) cannot lock each other out;
        an unknown key is charged, and an address whose budget is spent gets
        TooManyFailedAuthentications (code RATE_LIMITED, extensions retryAfter)
        before the lookup."""
        if authorization is None:
            return self._anonymous(client_host)
        token = bearer_token(authorization)
        if not token.startswith(KEY_PREFIX):
            return self._from_jwt(token)
        return await self._from_api_key(
            token, budget=f"authfail:{client_host or 'unknown'}"
        )

    async def recheck(
        self, authorization: str | None, client_host: str | None
    ) -> Viewer:
        """authenticate() again for a credential that a WebSocket connection was
        admitted with: the same rules, outside the failure budget (the client
        cannot choose what is re-checked, so a refusal here is no guess)."""
        if authorization is None:
            return self._anonymous(client_host)
        return await self._check(authorization)

    def recheck_in(self, viewer: Viewer) -> float | None:
        """Seconds until a connection authenticated as `viewer` must re-check its
        credential: when it expires and, for an API key (which can be revoked),
        every key cache TTL (at least MIN_RECHECK_S), so that a revoked key is
        refused within about twice the TTL. None: nothing can end it."""
        delays = []
        if viewer.expires_at is not None:
            delays.append(max(0.0, viewer.expires_at - self._clock()))
        if viewer.identity.startswith("key:"):
            delays.append(self._key_recheck_s)
        return min(delays, default=None)

    async def _check(self, authorization: str) -> Viewer:
        token = bearer_token(authorization)
        if token.startswith(KEY_PREFIX):
            return await self._from_api_key(token)
        return self._from_jwt(token)

    async def _within_failure_budget(self, bucket: str, key: str) -> bool:
        """Refuse when the address has no failure left, unless the key starts as
        a live key does; True when this attempt was charged already (so that a
        failure does not cost it twice)."""
        # A charge of 0 reads the bucket without touching it.
        if (await self._failures.take(bucket, self._max_failures, 0)).remaining >= 1:
            return False
        # Empty: a charge of 1 is refused (charging nothing) and tells the wait.
        state = await self._failures.take(bucket, self._max_failures, 1)
        if state.allowed:  # refilled in between: this attempt is charged up front
            return True
        # A key with a live key's prefix is looked up all the same: guessing the
        # rest of a key is hopeless, and the address's other clients (a school's
        # NAT) must not be locked out by someone guessing.
        if await self._live_prefix(key_prefix(key)):
            return True
        log.debug("credentials refused unchecked: %s (%s)", TOO_MANY_FAILURES, bucket)
        raise TooManyFailedAuthentications(
            f"{TOO_MANY_FAILURES}: retry in {state.retry_after_s} s",
            retryAfter=state.retry_after_s,
        )

    async def _live_prefix(self, prefix: str) -> bool:
        """Whether a live key has this prefix: the prefixes are read again when a
        key cache TTL old (so a new key passes within one), at most that often
        however many guesses come."""
        now = self._clock()
        if self._prefixes is None or now - self._prefixes_at >= self._key_recheck_s:
            self._prefixes_at = now
            try:
                async with self._database.sessions() as session:
                    self._prefixes = await active_prefixes(session)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                # No answer: the address stays refused, as it was before asking.
                log.debug("live key prefixes unread: %s", type(exc).__name__)
        return self._prefixes is not None and prefix in self._prefixes

    def _anonymous(self, client_host: str | None) -> Viewer:
        if self._auth_required:
            raise _refuse(MISSING, client_host)
        if not is_loopback(client_host):
            raise _refuse(MISSING_REMOTE, client_host)
        return Viewer(identity=f"ip:{client_host}", role="admin", anonymous=True)

    async def _from_api_key(self, key: str, *, budget: str | None = None) -> Viewer:
        """`budget`: the failure bucket charged for a key that is looked up and
        not found (None: a re-check of an admitted credential, never charged)."""
        digest = hash_key(key)
        record = self._keys.get(digest) if self._keys is not None else None
        if record is None:
            charged = budget is not None and await self._within_failure_budget(
                budget, key
            )
            async with self._database.sessions() as session:
                record = await find_active_key(session, digest)
            if record is None:
                if budget is not None and not charged:
                    await self._failures.take(budget, self._max_failures, 1)
                raise _refuse(UNKNOWN_KEY)
            if self._keys is not None:
                self._keys[digest] = record
        if record.expires_at is not None and record.expires_at <= self._utcnow():
            raise _refuse(EXPIRED_KEY, f"key:{record.id}")
        role = cast(Role, record.role)
        return Viewer(
            identity=f"key:{record.id}",
            role=role,
            student_id=record.student_id if role == "student" else None,
            grade_levels=record.grade_levels if role == "teacher" else None,
            anonymous=False,
            expires_at=_epoch(record.expires_at) if record.expires_at else None,
        )

    def _from_jwt(self, token: str) -> Viewer:
        if self._jwt_secret is None:
            raise _refuse(NO_JWT_SECRET)
        claims = self._decode(token)
        now = self._clock()
        exp = claims["exp"]
        if not _is_number(exp):
            raise _refuse(BAD_EXP)
        if exp <= now:
            raise _refuse(EXPIRED_TOKEN)
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_number(nbf) or nbf > now):
            raise _refuse(NOT_YET_VALID)
        if "iat" in claims:
            iat = claims["iat"]
            if not _is_number(iat):
                raise _refuse(BAD_IAT)
            if iat > now:
                raise _refuse(ISSUED_IN_FUTURE)
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.strip():
            raise _refuse(BAD_SUB)
        role = claims["role"]
        if role not in ROLES:
            raise _refuse(BAD_ROLE)
        student_id = claims.get("student_id")
        if role == "student" and (
            not isinstance(student_id, str) or not student_id.strip()
        ):
            raise _refuse(NO_STUDENT_ID)
        # Absent: every level. Present, it names at least one: an issuer that
        # writes "no levels" as [] or null must not grant them all.
        levels = claims.get("grade_levels") if role == "teacher" else None
        if role == "teacher" and "grade_levels" in claims and not _are_levels(levels):
            raise _refuse(BAD_LEVELS)
        return Viewer(
            identity=f"user:{sub}",
            role=role,
            student_id=student_id if role == "student" else None,
            grade_levels=frozenset(levels) if levels else None,
            anonymous=False,
            expires_at=float(exp),
        )

    def _decode(self, token: str) -> dict[str, Any]:
        assert self._jwt_secret is not None
        # Expiry and nbf are checked against our clock afterwards, not PyJWT's.
        options: Any = {
            "require": ["sub", "role", "exp"],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_sub": False,  # checked below, with our message
            "verify_aud": self._jwt_audience is not None,
        }
        try:
            _strict_json(token)
            with warnings.catch_warnings():
                if self._short_secret:
                    warnings.filterwarnings(
                        "ignore", message="The HMAC key is", category=UserWarning
                    )
                claims: dict[str, Any] = jwt.decode(
                    token,
                    self._jwt_secret,
                    algorithms=ALGORITHMS,
                    audience=self._jwt_audience,
                    options=options,
                )
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise _refuse(AUDIENCE_MISMATCH) from None
            raise _refuse(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise _refuse(AUDIENCE_MISMATCH) from None
        except jwt.InvalidAlgorithmError:
            raise _refuse(BAD_ALGORITHM) from None
        except jwt.InvalidSignatureError:
            raise _refuse(BAD_SIGNATURE) from None
        except jwt.DecodeError:
            raise _refuse(MALFORMED_TOKEN) from None
        except jwt.InvalidTokenError:
            raise _refuse(INVALID_TOKEN) from None
        return claims

    def _utcnow(self) -> datetime:
        # Stored times are naive UTC (db.validation.utcnow).
        return datetime.fromtimestamp(self._clock(), UTC).replace(tzinfo=None)


def bearer_token(authorization: str) -> str:
    """The token of `Bearer <token>` (the scheme in any case); anything else is
    malformed."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if (
        scheme.lower() != "bearer"
        or not token
        or len(token) > MAX_TOKEN_CHARS
        or any(char.isspace() for char in token)
    ):
        raise _refuse(MALFORMED_HEADER)
    return token


@lru_cache(maxsize=4096)
def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for names and for
    an unknown host."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _epoch(naive_utc: datetime) -> float:
    return naive_utc.replace(tzinfo=UTC).timestamp()


def _is_number(value: object) -> bool:
    """A finite JSON number (NaN, Infinity and 1e400 are no time)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _strict_json(token: str) -> None:
    """The header and the claims must be plain JSON objects, each name once: a
    duplicated name (`"role": "student", ..., "role": "admin"`) or a NaN would
    otherwise be read, the last one winning, by the JSON parser PyJWT uses."""
    parts = token.split(".")
    if len(parts) != 3:
        raise jwt.DecodeError("not three segments")
    for segment in parts[:2]:
        try:
            raw = base64url_decode(segment.encode("ascii"))
            value = json.loads(
                raw, object_pairs_hook=_unique_names, parse_constant=_no_constant
            )
        except (ValueError, UnicodeError) as exc:
            raise jwt.DecodeError(str(exc)) from None
        if not isinstance(value, dict):
            raise jwt.DecodeError("a segment is not a JSON object")


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("a name appears twice")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _are_levels(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(level, int)
            and not isinstance(level, bool)
            and level in GRADE_LEVELS
            for level in value
        )
    )


def _refuse(reason: str, who: str | None = None) -> Unauthenticated:
    # The reason and the caller's address or key id, never the token.
    log.debug("credentials refused: %s (%s)", reason, who or "-")
    return Unauthenticated(reason)
