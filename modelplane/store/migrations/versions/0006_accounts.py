"""Users and service accounts; a key may act for one.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("email", sa.String(254), nullable=True, unique=True),
        sa.Column(
            "team_id",
            sa.String(32),
            sa.ForeignKey("teams.id", name="fk_accounts_team_id"),
            nullable=True,
        ),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("disabled_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))
        batch.create_foreign_key(
            "fk_api_keys_account_id", "accounts", ["account_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_api_keys_account_id", ["account_id"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_account_id")
        batch.drop_constraint("fk_api_keys_account_id", type_="foreignkey")
        batch.drop_column("account_id")
    op.drop_table("accounts")
