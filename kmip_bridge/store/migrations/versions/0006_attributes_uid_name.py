"""Attributes indexed by (uid, name) instead of uid alone.

Get reads an object's Activation and Deactivation Date in the same statement as its row
(store/hot.py): ``WHERE a.uid = ? AND a.name = 'Activation Date'``. With only ``ix_attributes_uid``
and ``ix_attributes_name_search`` to choose from, PostgreSQL picks the name index whenever its
statistics say that name is rare, and then walks every object's Activation Date to find one uid:
with 100,000 objects activated after the last ANALYZE (6% new rows, below autovacuum's threshold)
one Get read 99,999 index entries, 44 ms instead of 0.1, and 1,000,001 entries, 270 ms, at a
million objects (docs/performance.md, "Scale to 1,000,000 (PostgreSQL)"). The composite index
answers both conditions at once whatever the statistics say, and still serves every lookup by uid
alone (load_attributes, the foreign key's cascade), so it replaces ix_attributes_uid.

Revision ID: 0006_attributes_uid_name
Revises: 0005_streams
"""

from alembic import op

revision = "0006_attributes_uid_name"
down_revision = "0005_streams"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_attributes_uid_name", "attributes", ["uid", "name"])
    op.drop_index("ix_attributes_uid", table_name="attributes")


def downgrade() -> None:
    op.create_index("ix_attributes_uid", "attributes", ["uid"])
    op.drop_index("ix_attributes_uid_name", table_name="attributes")
