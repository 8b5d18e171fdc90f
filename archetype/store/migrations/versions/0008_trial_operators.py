"""The operators of each trial's architecture, in slot order, stored beside it: listings and the dashboard
show them without decoding every architecture.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000


def _operators(arch: Any) -> str:
    """As ``archetype.store.storage.arch_operators`` at this revision (a migration keeps its own copy)."""
    slots = arch.get("slots") if isinstance(arch, Mapping) else None
    if not isinstance(slots, list):
        return ""
    return " ".join(str(slot["op"]) for slot in slots if isinstance(slot, Mapping) and "op" in slot)


def upgrade() -> None:
    op.add_column("trials", sa.Column("operators", sa.Text(), nullable=False, server_default=""))
    trials = sa.table("trials", sa.column("id", sa.Integer()), sa.column("arch", sa.JSON()),
                      sa.column("operators", sa.Text()))
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(trials.c.id, trials.c.arch).where(trials.c.id > last).order_by(trials.c.id).limit(_BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            trials.update().where(trials.c.id == sa.bindparam("trial_id")).values(operators=sa.bindparam("ops")),
            [{"trial_id": trial_id, "ops": _operators(arch)} for trial_id, arch in rows],
        )
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("operators")
