"""users and hashed API tokens; indexes the dashboard reads by

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=128), primary_key=True),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "user_name",
            sqlmodel.sql.sqltypes.AutoString(length=128),
            sa.ForeignKey("users.name"),
            nullable=False,
        ),
        sa.Column("token_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("created_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_api_tokens_user_name", "api_tokens", ["user_name"])
    op.create_index("ix_api_tokens_token_sha256", "api_tokens", ["token_sha256"], unique=True)
    op.create_index("ix_tasks_state_updated", "tasks", ["state", "updated_time"])
    op.create_index("ix_tasks_state_target", "tasks", ["state", "target"])
    op.create_index("ix_tasks_owner_state_updated", "tasks", ["owner", "state", "updated_time"])


def downgrade() -> None:
    op.drop_index("ix_tasks_owner_state_updated", table_name="tasks")
    op.drop_index("ix_tasks_state_target", table_name="tasks")
    op.drop_index("ix_tasks_state_updated", table_name="tasks")
    op.drop_table("api_tokens")
    op.drop_table("users")
