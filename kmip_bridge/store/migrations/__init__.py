"""Alembic environment and revisions (package data of kmip_bridge.store)."""
