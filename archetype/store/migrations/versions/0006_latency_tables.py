"""Latency tables: operator instances and whole architectures measured on a target and device.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "latency_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("instance_key", sa.String(length=64), nullable=False),
        sa.Column("instance", sa.JSON(), nullable=False),
        sa.Column("median_ms", sa.Double(), nullable=False),
        sa.Column("spread", sa.Double(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_latency_entries")),
        sa.UniqueConstraint(
            "target", "device", "instance_key", name=op.f("uq_latency_entries_target_device_instance_key")
        ),
    )
    op.create_table(
        "latency_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("space", sa.String(length=255), nullable=False),
        sa.Column("arch_key", sa.String(length=16), nullable=False),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("median_ms", sa.Double(), nullable=False),
        sa.Column("spread", sa.Double(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_latency_samples")),
        sa.UniqueConstraint(
            "target", "device", "space", "arch_key", name=op.f("uq_latency_samples_target_device_space_arch_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("latency_samples")
    op.drop_table("latency_entries")
