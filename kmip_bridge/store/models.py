"""Table definitions (SQLAlchemy Core: the hot path needs no ORM identity map).

``objects`` holds one row per managed object with its sealed material (never plaintext);
``attributes`` holds every attribute value as TTLV bytes, plus an indexable ``search`` key so that
Locate filters in SQL instead of loading objects.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

objects = Table(
    "objects",
    metadata,
    Column("uid", String(64), primary_key=True),
    Column("object_type", Integer, nullable=False),
    Column("state", Integer, nullable=False),
    Column("owner", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Operation Policy Name: selects the policy that governs access to the object.
    Column("policy", String(128), nullable=False, default="default"),
    # KMIP Fresh: true until the object's material is first served by Get.
    Column("fresh", Boolean, nullable=False, default=True),
    # Optimistic concurrency: every update bumps it and checks the old value.
    Column("row_version", Integer, nullable=False, default=1),
    # The sealed envelope; all NULL once the object is destroyed.
    Column("kek_label", String(128)),
    Column("kek_kind", String(16)),
    Column("nonce", LargeBinary),
    Column("ciphertext", LargeBinary),
    Column("wrapped_dek", LargeBinary),
    Column("wrap_nonce", LargeBinary),
    # Which AADs bind the sealed envelope (keyhsm/envelope.py): 1 for rows older than migration
    # 0004 (its server default), 2 for what KeyHsm.seal writes today.
    Column("envelope_format", Integer, nullable=False, default=2),
)
Index("ix_objects_owner_type", objects.c.owner, objects.c.object_type)
Index("ix_objects_kek_label", objects.c.kek_label)

attributes = Table(
    "attributes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(64), ForeignKey("objects.uid", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("value", LargeBinary, nullable=False),
    Column("search", String(512)),
)
# (uid, name): Get reads two dates by uid and name in its statement (store/hot.py); migration 0006
Index("ix_attributes_uid_name", attributes.c.uid, attributes.c.name)
Index("ix_attributes_name_search", attributes.c.name, attributes.c.search)

# Open multi-part (streaming) operations, shared by every worker and node on the database
# (operations/streams.py). ``sealed`` holds a stream's parameters and state, ``stream_chunks`` its
# buffered input (one row per part that brought some, merged now and then), all under a key
# derived from its Correlation Value, which is never stored: ``id`` is a one-way function of it.
streams = Table(
    "streams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("operation", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),  # buffered input bytes (quotas)
    Column("expires_ms", BigInteger, nullable=False),  # epoch milliseconds: idle streams end
    Column("version", Integer, nullable=False),  # bumped by every part: one part at a time
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
)
Index("ix_streams_owner", streams.c.owner)
Index("ix_streams_expires", streams.c.expires_ms)

stream_chunks = Table(
    "stream_chunks",
    metadata,
    Column("id", String(64), ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # the stream version that wrote it
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
)
