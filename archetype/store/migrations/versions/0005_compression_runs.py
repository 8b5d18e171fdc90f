"""Compression runs and their steps.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "compression_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_trial_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("pipeline", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("out_dir", sa.Text(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_trial_id"], ["trials.id"], name=op.f("fk_compression_runs_source_trial_id_trials"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compression_runs")),
        sa.UniqueConstraint("name", name=op.f("uq_compression_runs_name")),
        sa.CheckConstraint(
            "status IN ('running', 'complete', 'unmet', 'failed')", name=op.f("ck_compression_runs_status")
        ),
    )
    op.create_index(op.f("ix_compression_runs_source_trial_id"), "compression_runs", ["source_trial_id"])
    op.create_table(
        "compression_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["compression_runs.id"], name=op.f("fk_compression_steps_run_id_compression_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compression_steps")),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_compression_steps_run_id_position")),
    )
    op.create_index(op.f("ix_compression_steps_run_id"), "compression_steps", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_compression_steps_run_id"), table_name="compression_steps")
    op.drop_table("compression_steps")
    op.drop_index(op.f("ix_compression_runs_source_trial_id"), table_name="compression_runs")
    op.drop_table("compression_runs")
