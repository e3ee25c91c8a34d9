"""Initial schema: objects and attributes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("uid", sa.String(64), primary_key=True),
        sa.Column("object_type", sa.Integer, nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("row_version", sa.Integer, nullable=False),
        sa.Column("kek_label", sa.String(128)),
        sa.Column("kek_kind", sa.String(16)),
        sa.Column("nonce", sa.LargeBinary),
        sa.Column("ciphertext", sa.LargeBinary),
        sa.Column("wrapped_dek", sa.LargeBinary),
        sa.Column("wrap_nonce", sa.LargeBinary),
    )
    op.create_index("ix_objects_owner_type", "objects", ["owner", "object_type"])
    op.create_index("ix_objects_kek_label", "objects", ["kek_label"])
    op.create_table(
        "attributes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "uid", sa.String(64), sa.ForeignKey("objects.uid", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("search", sa.String(512)),
    )
    op.create_index("ix_attributes_uid", "attributes", ["uid"])
    op.create_index("ix_attributes_name_search", "attributes", ["name", "search"])


def downgrade() -> None:
    op.drop_table("attributes")
    op.drop_table("objects")
