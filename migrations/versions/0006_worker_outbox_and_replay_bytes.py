"""the worker renders mail at delivery; replays are the bytes first sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:10:00

An outbox row of the email channel names the message (kind, recipient, language) and its
evaluation; the worker renders it when it sends it, so subject and bodies may be empty. The
idempotency record keeps the first response as the exact bytes that were sent.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
        batch_op.alter_column("subject", existing_type=sa.String(length=500), nullable=True)
        batch_op.alter_column("text_body", existing_type=sa.Text(), nullable=True)
    with op.batch_alter_table("idempotency_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_text", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_key", schema=None) as batch_op:
        batch_op.drop_column("response_text")
    # Mails still to be rendered cannot be kept by the older schema, which stored them
    # rendered: they are given up (the older code would send them empty).
    outbox = sa.table(
        "outbox_message",
        sa.column("subject", sa.String),
        sa.column("text_body", sa.Text),
        sa.column("status", sa.String),
        sa.column("next_attempt_at", sa.DateTime),
    )
    op.execute(
        outbox.update()
        .where(outbox.c.subject.is_(None))
        .values(subject="", text_body="", status="cancelled", next_attempt_at=None)
    )
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.alter_column("text_body", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("subject", existing_type=sa.String(length=500), nullable=False)
        batch_op.drop_column("language")
