"""Creating, listing, revoking and checking API keys."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import DEFAULT_TENANT, TENANT_PATTERN, ApiKey
from service.database import utcnow

SCOPES = ("write", "read", "delete")
KEY_PREFIX = "isk_"


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are 256 random bits, so a fast hash is enough.

    Keys are found by this hash (an index lookup, and a dict lookup in the process's cache),
    never compared as they were sent: whatever time a lookup takes depends on the hash of the
    presented key, which tells an attacker nothing about any stored key's value (finding a key
    from its hash is a SHA-256 preimage), so no constant-time comparison is needed.
    """
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession,
    *,
    name: str,
    scopes: Sequence[str] = SCOPES,
    tenant: str = DEFAULT_TENANT,
) -> tuple[ApiKey, str]:
    """A new key of `tenant`: the row, and the key itself, which is never stored."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise ValueError(
            "a tenant is 1 to 64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        prefix=key[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(key),
        scopes=" ".join(s for s in SCOPES if s in scopes),
        tenant=tenant,
    )
    session.add(row)
    await session.flush()
    return row, key


async def list_api_keys(session: AsyncSession) -> Sequence[ApiKey]:
    """Every key, oldest first."""
    return (await session.scalars(select(ApiKey).order_by(ApiKey.created_at))).all()


async def find_key(session: AsyncSession, *, key: str) -> ApiKey | None:
    """The key named by the key itself, its id or its display prefix, revoked or not."""
    return await session.scalar(
        select(ApiKey).where(
            (ApiKey.key_hash == hash_key(key)) | (ApiKey.id == key) | (ApiKey.prefix == key)
        )
    )


async def revoke_api_key(session: AsyncSession, *, key: str) -> ApiKey | None:
    """Revoke the key named by the key itself, its id or its prefix; None when there is none."""
    row = await find_key(session, key=key)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def find_active_key(session: AsyncSession, *, key: str) -> ApiKey | None:
    """The unrevoked key matching `key`, or None."""
    return await find_active_key_by_hash(session, digest=hash_key(key))


async def find_active_key_by_hash(session: AsyncSession, *, digest: str) -> ApiKey | None:
    """The unrevoked key whose stored hash is `digest`, or None."""
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    return row if row is not None and row.revoked_at is None else None
