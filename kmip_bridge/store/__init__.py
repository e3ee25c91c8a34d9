"""Persistence: SQLAlchemy tables, migrations and queries. Sees only sealed blobs."""

from .store import (
    AttrRow,
    ConcurrentUpdate,
    ObjectRow,
    Store,
    StoreError,
    StoreUnavailable,
)

__all__ = ["AttrRow", "ConcurrentUpdate", "ObjectRow", "Store", "StoreError", "StoreUnavailable"]
