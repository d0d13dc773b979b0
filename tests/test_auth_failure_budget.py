"""Authenticator: the failure budget per client address."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from db.engine import Database
from db.keys import new_key
from resolvers.auth import Authenticator
from resolvers.errors import TooManyFailedAuthentications, Unauthenticated
from resolvers.ratelimit import MemoryRateStore
from tests.conftest import StatementCounter
from tests.factories import (
    add_key,
    jwt_token,
)
from tests.factories.auth import Clock, claims, make_auth, refused

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

    assert len(counter.reads) == 3 + 1  # the live keys' prefixes, not the key
    assert error.code == "RATE_LIMITED"
    assert error.extensions == {"retryAfter": 20}  # one failure refills in 60/3 s
    assert str(error) == (
        "too many failed authentications from this address: retry in 20 s"
    )


async def test_a_spent_address_looks_up_only_keys_with_a_live_prefix(
    database: Database,
) -> None:
    """Guesses from a spent address cost no key lookup; a live key is looked up
    all the same, so that its owner behind the same address (a school's NAT) is
    not locked out by someone guessing."""
    clock = Clock()
    key, key_id = await add_key(database, created_at=clock.at())
    authenticator = make_auth(database, clock=clock, max_failures=2)
    counter = StatementCounter()
    event.listen(database.engine.sync_engine, "before_cursor_execute", counter)
    for _ in range(2):
        await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")
    reads = len(counter.reads)

    guesses = [await spent(authenticator, f"Bearer {new_key()}") for _ in range(5)]
    prefix_reads = len(counter.reads) - reads
    owner = await authenticator.authenticate(f"Bearer {key}", "203.0.113.5")
    near_guess = key[:11] + new_key()[11:]  # a live key's prefix, then anything
    near = await refused(authenticator, f"Bearer {near_guess}", "203.0.113.5")
    fresh, fresh_id = await add_key(database, created_at=clock.at())
    too_new = await spent(authenticator, f"Bearer {fresh}")
    clock.now += 5  # API_KEY_CACHE_TTL_S: the prefixes are read again
    newcomer = await authenticator.authenticate(f"Bearer {fresh}", "203.0.113.5")

    assert [g.extensions for g in guesses] == [{"retryAfter": 30}] * 5
    assert prefix_reads == 1  # the live prefixes, once; no key lookup
    assert owner.identity == f"key:{key_id}"
    assert near == "unknown or revoked API key"
    assert too_new.code == "RATE_LIMITED"  # its prefix was not read yet
    assert newcomer.identity == f"key:{fresh_id}"


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
    assert (await spent(authenticator, f"Bearer {new_key()}")).code == "RATE_LIMITED"


async def test_a_recheck_is_outside_the_failure_budget(database: Database) -> None:
    clock = Clock()
    key, key_id = await add_key(database, created_at=clock.at())
    authenticator = make_auth(database, clock=clock, max_failures=1, key_cache_ttl_s=0)
    await refused(authenticator, f"Bearer {new_key()}", "203.0.113.5")

    viewer = await authenticator.recheck(f"Bearer {key}", "203.0.113.5")
    with pytest.raises(Unauthenticated, match="^unknown or revoked API key$"):
        await authenticator.recheck(f"Bearer {new_key()}", "203.0.113.5")

    assert viewer.identity == f"key:{key_id}"
    assert (await spent(authenticator, f"Bearer {new_key()}")).extensions == {
        "retryAfter": 60
    }


def test_a_failure_budget_below_one_is_refused(offline_database: Database) -> None:
    with pytest.raises(ValueError, match="^max_failures must be at least 1$"):
        make_auth(offline_database, max_failures=0)
