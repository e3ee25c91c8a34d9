"""Alembic environment: run against the connection handed over by kmip_bridge.store.migrate."""

from alembic import context

from kmip_bridge.store.models import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
