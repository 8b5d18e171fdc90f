"""Studies, trials and their metrics.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("space", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("objectives", sa.JSON(), nullable=False),
        sa.Column("constraints", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_studies_name")),
        sa.CheckConstraint(
            "status IN ('running', 'complete', 'failed', 'interrupted')", name=op.f("ck_studies_status")
        ),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("arch_key", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_trials_study_id_studies"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("study_id", "number", name=op.f("uq_trials_study_id_number")),
        sa.CheckConstraint(
            "state IN ('running', 'complete', 'failed', 'pruned')", name=op.f("ck_trials_state")
        ),
    )
    op.create_index(op.f("ix_trials_study_id"), "trials", ["study_id"])
    op.create_index(op.f("ix_trials_study_id_arch_key"), "trials", ["study_id", "arch_key"])
    op.create_table(
        "trial_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trial_metrics")),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_trial_metrics_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("trial_id", "name", name=op.f("uq_trial_metrics_trial_id_name")),
    )
    op.create_index(op.f("ix_trial_metrics_trial_id"), "trial_metrics", ["trial_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_trial_metrics_trial_id"), table_name="trial_metrics")
    op.drop_table("trial_metrics")
    op.drop_index(op.f("ix_trials_study_id_arch_key"), table_name="trials")
    op.drop_index(op.f("ix_trials_study_id"), table_name="trials")
    op.drop_table("trials")
    op.drop_table("studies")
