"""tag index carries task_seq, so a tag-filtered page walks the index in order

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_task_tags_key_value")
        batch_op.create_index(
            "ix_task_tags_key_value_seq", ["key", "value", "task_seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("task_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_task_tags_key_value_seq")
        batch_op.create_index("ix_task_tags_key_value", ["key", "value"], unique=False)
