"""API key SQL and the key format: gp_ keys stored as their SHA-256, never in clear."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import models

K = models.ApiKey.__table__.c

KEY_PREFIX = "gp_"
PREFIX_CHARS = 8  # shown in listings; 48 bits, far too few to guess the rest from
# token_urlsafe(32): 32 random bytes, 43 characters.
KEY_BYTES = 32

_COLUMNS = (
    K.id,
    K.prefix,
    K.name,
    K.role,
    K.grade_levels,
    K.student_id,
    K.created_at,
    K.expires_at,
    K.revoked_at,
)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key without its hash: what listings and the authenticator need."""

    id: int
    prefix: str
    name: str
    role: str
    grade_levels: frozenset[int] | None
    student_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    """SHA-256 hex of the whole key: a key has 256 random bits, so no salt or slow
    hash is needed to resist guessing from a leaked table."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key.removeprefix(KEY_PREFIX)[:PREFIX_CHARS]


def _levels_text(levels: Iterable[int] | None) -> str | None:
    if not levels:
        return None
    return ",".join(str(level) for level in sorted(set(levels)))


def _levels(text: str | None) -> frozenset[int] | None:
    if not text:
        return None
    return frozenset(int(part) for part in text.split(","))


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        prefix=row.prefix,
        name=row.name,
        role=row.role,
        grade_levels=_levels(row.grade_levels),
        student_id=row.student_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


async def insert_key(
    session: AsyncSession,
    *,
    key: str,
    name: str,
    role: str,
    created_at: datetime,
    grade_levels: Iterable[int] | None = None,
    student_id: str | None = None,
    expires_at: datetime | None = None,
) -> ApiKeyRecord:
    """Store a new key's hash and prefix (never the key) and return the record."""
    result = await session.execute(
        insert(models.ApiKey)
        .values(
            key_hash=hash_key(key),
            prefix=key_prefix(key),
            name=name,
            role=role,
            grade_levels=_levels_text(grade_levels),
            student_id=student_id,
            created_at=created_at,
            expires_at=expires_at,
        )
        .returning(*_COLUMNS)
    )
    return _record(result.one())


async def list_keys(session: AsyncSession) -> list[ApiKeyRecord]:
    rows = await session.execute(select(*_COLUMNS).order_by(K.id))
    return [_record(row) for row in rows]


async def keys_by_id_or_prefix(
    session: AsyncSession, *, key_id: int | None = None, prefix: str | None = None
) -> list[ApiKeyRecord]:
    """The keys with this id (at most one) or this prefix (usually one)."""
    query = select(*_COLUMNS).order_by(K.id)
    if key_id is not None:
        query = query.where(K.id == key_id)
    if prefix is not None:
        query = query.where(K.prefix == prefix)
    return [_record(row) for row in await session.execute(query)]


async def revoke_key(
    session: AsyncSession, key_id: int, at: datetime
) -> ApiKeyRecord | None:
    """Mark a key revoked at `at`; a key revoked earlier keeps its first time.
    Returns the key as it now stands, None when there is no such key."""
    await session.execute(
        update(models.ApiKey)
        .where(K.id == key_id, K.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    found = await keys_by_id_or_prefix(session, key_id=key_id)
    return found[0] if found else None


async def find_active_key(session: AsyncSession, key_hash: str) -> ApiKeyRecord | None:
    """The unrevoked key with this hash; the caller checks `expires_at` against its
    own clock (so that it can tell an expired key from an unknown one)."""
    result = await session.execute(
        select(*_COLUMNS).where(K.key_hash == key_hash, K.revoked_at.is_(None))
    )
    row = result.first()
    return None if row is None else _record(row)


async def active_prefixes(session: AsyncSession) -> frozenset[str]:
    """The prefixes of the unrevoked keys (expired ones too: the caller tells)."""
    result = await session.execute(select(K.prefix).where(K.revoked_at.is_(None)))
    return frozenset(result.scalars())
