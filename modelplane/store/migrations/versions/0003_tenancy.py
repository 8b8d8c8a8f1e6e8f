"""Teams; keys, endpoints and routes belong to a team and may be shared.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("team_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=False, server_default="[]"))
    for table in ("endpoints", "routes"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("team_id", sa.String(32), nullable=True))
            batch.add_column(
                sa.Column("shared_with", sa.JSON(), nullable=False, server_default='["*"]')
            )


def downgrade() -> None:
    for table in ("routes", "endpoints"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("shared_with")
            batch.drop_column("team_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
        batch.drop_column("team_id")
    op.drop_table("teams")
