"""evaluation_review: human reviews of evaluations, erased with them

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-23 22:31:11.316405
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.database

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluation_review",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("evaluation_id", sa.String(length=36), nullable=False),
        sa.Column("api_key_id", sa.String(length=36), nullable=True),
        sa.Column("decision", sa.String(length=32), nullable=True),
        sa.Column("criterion_scores", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("overall_score", sa.Float(), nullable=True),
        sa.Column("recommendation", sa.String(length=32), nullable=False),
        sa.Column("created_at", service.database.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_key.id"],
            name=op.f("fk_evaluation_review_api_key_id_api_key"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluation.id"],
            name=op.f("fk_evaluation_review_evaluation_id_evaluation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_review")),
    )
    with op.batch_alter_table("evaluation_review", schema=None) as batch_op:
        batch_op.create_index(
            "ix_evaluation_review_evaluation_id_created_at",
            ["evaluation_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluation_review", schema=None) as batch_op:
        batch_op.drop_index("ix_evaluation_review_evaluation_id_created_at")

    op.drop_table("evaluation_review")
