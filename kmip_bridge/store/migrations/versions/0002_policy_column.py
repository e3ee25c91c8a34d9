"""Operation Policy Name as a column, so authorization needs no attribute read.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("policy", sa.String(128), nullable=False, server_default="default"))


def downgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("policy")
