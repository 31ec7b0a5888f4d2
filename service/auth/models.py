"""The api_key table."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from service.database import Base, UTCDateTime, new_id, utcnow

# Every key belongs to a tenant; one team needs no other than this one.
DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash; the key itself is shown once at creation."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))
    # What the key may see: the evaluations, batches and idempotency records of its tenant.
    tenant: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Signs this key's webhooks (HMAC-SHA256); stored as is, since signing needs it.
    webhook_secret: Mapped[str | None] = mapped_column(
        String(64), default=lambda: "whsec_" + secrets.token_urlsafe(32)
    )

    @property
    def scope_set(self) -> frozenset[str]:
        """The key's scopes."""
        return frozenset(self.scopes.split())
