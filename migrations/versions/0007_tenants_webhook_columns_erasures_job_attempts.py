"""tenants, webhook columns, erasures, job attempts, batch idempotency

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 17:40:37

- Every API key, evaluation and batch belongs to a tenant; what exists belongs to `default`.
  The list's index leads with the tenant.
- Webhook deliveries get columns of their own (`url`, `signing_key_id`, `payload`) instead of
  the email columns they borrowed (the URL in `recipient`, the key id in `subject`, the event in
  `text_body`), and an evaluation's delivery is linked to it so that erasing it cancels it.
- `erasure` tells every process what another erased (service/evaluations/erasures.py).
- A background evaluation counts its attempts and the last one's failure.
- An Idempotency-Key may name a batch's answer.

Downgrading merges the tenants (0006 has none: every key sees everything again), moves webhook
deliveries back into the email columns, unlinked, and forgets batch idempotency records.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.database

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_outbox = sa.table(
    "outbox_message",
    sa.column("id", sa.String),
    sa.column("channel", sa.String),
    sa.column("kind", sa.String),
    sa.column("evaluation_id", sa.String),
    sa.column("recipient", sa.String),
    sa.column("subject", sa.String),
    sa.column("text_body", sa.Text),
    sa.column("url", sa.String),
    sa.column("signing_key_id", sa.String),
    sa.column("payload", sa.Text),
)
_WEBHOOK = _outbox.c.channel == "webhook"


def upgrade() -> None:
    op.create_table(
        "erasure",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("evaluation_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("result_key", sa.String(length=64), nullable=True),
        sa.Column("erased_at", service.database.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure")),
    )
    with op.batch_alter_table("erasure", schema=None) as batch_op:
        batch_op.create_index("ix_erasure_erased_at", ["erased_at"], unique=False)

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tenant", sa.String(length=64), server_default="default", nullable=False)
        )

    with op.batch_alter_table("evaluation", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tenant", sa.String(length=64), server_default="default", nullable=False)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.String(length=300), nullable=True))
        batch_op.drop_index("ix_evaluation_created_at_id")
        batch_op.create_index(
            "ix_evaluation_tenant_created_at_id", ["tenant", "created_at", "id"], unique=False
        )

    with op.batch_alter_table("evaluation_batch", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tenant", sa.String(length=64), server_default="default", nullable=False)
        )

    with op.batch_alter_table("idempotency_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_idempotency_key_batch_id", ["batch_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_idempotency_key_batch_id_evaluation_batch"),
            "evaluation_batch",
            ["batch_id"],
            ["id"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("signing_key_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("payload", sa.Text(), nullable=True))
        batch_op.alter_column("recipient", existing_type=sa.String(length=320), nullable=True)
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_message_signing_key_id_api_key"),
            "api_key",
            ["signing_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
    _move_webhooks_to_their_columns()


def _move_webhooks_to_their_columns() -> None:
    connection = op.get_bind()
    api_key = sa.table("api_key", sa.column("id", sa.String))
    evaluation = sa.table("evaluation", sa.column("id", sa.String))
    keys = set(connection.scalars(sa.select(api_key.c.id)))
    rows = connection.execute(
        sa.select(_outbox.c.id, _outbox.c.kind, _outbox.c.subject, _outbox.c.text_body).where(
            _WEBHOOK
        )
    ).all()
    # An evaluation's delivery names it in its event: linked, so that erasing it cancels it.
    named: dict[str, str] = {}
    for row_id, kind, _, body in rows:
        if kind.startswith("evaluation.") and body:
            evaluation_id = json.loads(body).get("data", {}).get("id")
            if isinstance(evaluation_id, str):
                named[row_id] = evaluation_id
    existing = set(
        connection.scalars(sa.select(evaluation.c.id).where(evaluation.c.id.in_(named.values())))
        if named
        else ()
    )
    connection.execute(
        _outbox.update()
        .where(_WEBHOOK)
        .values(url=_outbox.c.recipient, payload=_outbox.c.text_body)
    )
    for row_id, _, key_id, _ in rows:
        linked = named.get(row_id)
        connection.execute(
            _outbox.update()
            .where(_outbox.c.id == row_id)
            .values(
                signing_key_id=key_id if key_id in keys else None,
                evaluation_id=linked if linked in existing else None,
            )
        )
    connection.execute(
        _outbox.update().where(_WEBHOOK).values(recipient=None, subject=None, text_body=None)
    )


def downgrade() -> None:
    # 0006's code reads a webhook from the email columns and must not find it among an
    # evaluation's emails; its emails always have a recipient.
    op.execute(
        _outbox.update()
        .where(_WEBHOOK)
        .values(
            recipient=sa.func.coalesce(_outbox.c.url, ""),
            subject=sa.func.coalesce(_outbox.c.signing_key_id, ""),
            text_body=sa.func.coalesce(_outbox.c.payload, ""),
            evaluation_id=None,
        )
    )
    op.execute(_outbox.update().where(_outbox.c.recipient.is_(None)).values(recipient=""))
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_message_signing_key_id_api_key"), type_="foreignkey"
        )
        batch_op.alter_column("recipient", existing_type=sa.String(length=320), nullable=False)
        batch_op.drop_column("payload")
        batch_op.drop_column("signing_key_id")
        batch_op.drop_column("url")

    # 0006 would replay a batch's record as an evaluation's.
    idempotency = sa.table("idempotency_key", sa.column("batch_id", sa.String))
    op.execute(idempotency.delete().where(idempotency.c.batch_id.is_not(None)))
    with op.batch_alter_table("idempotency_key", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_idempotency_key_batch_id_evaluation_batch"), type_="foreignkey"
        )
        batch_op.drop_index("ix_idempotency_key_batch_id")
        batch_op.drop_column("batch_id")

    with op.batch_alter_table("evaluation_batch", schema=None) as batch_op:
        batch_op.drop_column("tenant")

    with op.batch_alter_table("evaluation", schema=None) as batch_op:
        batch_op.drop_index("ix_evaluation_tenant_created_at_id")
        batch_op.create_index("ix_evaluation_created_at_id", ["created_at", "id"], unique=False)
        batch_op.drop_column("last_error")
        batch_op.drop_column("attempts")
        batch_op.drop_column("tenant")

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("tenant")

    with op.batch_alter_table("erasure", schema=None) as batch_op:
        batch_op.drop_index("ix_erasure_erased_at")
    op.drop_table("erasure")
