"""An index on (study, state) of trials: trial counts by state and state filters read the index, not every row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_trials_study_id_state", "trials", ["study_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_trials_study_id_state", table_name="trials")
