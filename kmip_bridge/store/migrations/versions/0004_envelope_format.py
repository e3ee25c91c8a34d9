"""Envelope format per row: 1 = material bound to its KEK (older rows), 2 = bound to its object.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every row written before this revision is format 1; the code writes the format explicitly.
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("envelope_format", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("envelope_format")
