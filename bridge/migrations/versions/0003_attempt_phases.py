"""attempts carry their phase, when they were placed, why, an estimated cost and an outcome

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("phase", sa.String(length=16), nullable=False, server_default="submitted")
        )
        batch_op.add_column(
            sa.Column("placed_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("estimated_cost", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("outcome", sa.String(length=32), nullable=False, server_default="")
        )
        batch_op.create_index("ix_attempts_phase", ["phase"], unique=False)
    # attempts that existed before phases: finished ones are finished, others submitted
    op.execute("UPDATE attempts SET phase = 'finished' WHERE finished")


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_phase")
        for column in ("outcome", "estimated_cost", "reason", "placed_time", "phase"):
            batch_op.drop_column(column)
