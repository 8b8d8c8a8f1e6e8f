"""Endpoints declare resources, autoscaling bounds and LoRA adapters.

Existing endpoints get none of them: no resources asked for, no autoscaling, no
adapters.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("resources", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("autoscaling", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("adapters", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("adapters")
        batch.drop_column("autoscaling")
        batch.drop_column("resources")
