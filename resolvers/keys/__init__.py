"""API keys for the keys command: create (shown once, kept hashed), list, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta

from db.engine import Database
from db.keys import (
    KEY_PREFIX,
    PREFIX_CHARS,
    ApiKeyRecord,
    insert_key,
    keys_by_id_or_prefix,
    list_keys,
    new_key,
    revoke_key,
)
from db.students import students_by_student_ids
from db.validation import utcnow
from resolvers.errors import BadUserInput
from resolvers.viewer import Role


async def create_api_key(
    database: Database,
    *,
    name: str,
    role: Role,
    grade_levels: list[int] | None = None,
    student_id: str | None = None,
    expires_at: datetime | None = None,
    expires_in_days: int | None = None,
) -> tuple[str, ApiKeyRecord]:
    """A new key and its stored record; the key itself is not kept (only its hash).
    It expires at `expires_at`, or `expires_in_days` from its creation, or never."""
    now = utcnow()
    if expires_in_days is not None:
        expires_at = now + timedelta(days=expires_in_days)
    key = new_key()
    async with database.writing() as session:
        if student_id is not None:
            [student] = await students_by_student_ids(session, [student_id])
            if student is None:
                raise BadUserInput(f"student {student_id!r} does not exist")
        record = await insert_key(
            session,
            key=key,
            name=name,
            role=role,
            created_at=now,
            grade_levels=grade_levels,
            student_id=student_id,
            expires_at=expires_at,
        )
    return key, record


async def list_api_keys(database: Database) -> list[ApiKeyRecord]:
    async with database.sessions() as session:
        return await list_keys(session)


async def revoke_api_key(database: Database, given: str) -> tuple[ApiKeyRecord, bool]:
    """Revoke the key with this id or prefix ("gp_" and 8 characters, as listed):
    its record, and whether this call revoked it (False: it was revoked already)."""
    key_id: int | None = None
    prefix: str | None = None
    if given.isdigit():
        key_id = int(given)
        what = f"id {given}"
    else:
        prefix = given.removeprefix(KEY_PREFIX)
        if len(prefix) != PREFIX_CHARS:
            raise BadUserInput(
                f"{given!r} is neither a key id nor a key prefix "
                f"({KEY_PREFIX} and {PREFIX_CHARS} characters, as listed)"
            )
        what = f"prefix {KEY_PREFIX}{prefix}"
    async with database.writing() as session:
        found = await keys_by_id_or_prefix(session, key_id=key_id, prefix=prefix)
        if not found:
            raise BadUserInput(f"no API key with {what}")
        if len(found) > 1:
            ids = ", ".join(str(record.id) for record in found)
            raise BadUserInput(f"{what} matches keys {ids}: revoke by id")
        [record] = found
        if record.revoked_at is not None:
            return record, False
        revoked = await revoke_key(session, record.id, utcnow())
    assert revoked is not None and revoked.revoked_at is not None
    return revoked, True
