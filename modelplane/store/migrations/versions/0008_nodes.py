"""Nodes: the node that runs each endpoint's replicas, and the replicas it publishes.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Existing endpoints get no node: the first server to reconcile one claims it.
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("node", sa.String(63), nullable=True))
    op.create_table(
        "replicas",
        sa.Column("node", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("machine", sa.String(200), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_replicas_endpoint", "replicas", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_replicas_endpoint", "replicas")
    op.drop_table("replicas")
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("node")
