"""Multi-part (streaming) operations kept in the database, shared by every worker and node.

Revision ID: 0005_streams
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_streams"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("operation", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_streams_owner", "streams", ["owner"])
    op.create_index("ix_streams_expires", "streams", ["expires_ms"])
    op.create_table(
        "stream_chunks",
        sa.Column("id", sa.String(64), sa.ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_chunks")
    op.drop_table("streams")
