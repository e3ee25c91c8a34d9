"""KMIP operations: one module per operation family and a dispatch table (``dispatch.HANDLERS``)."""
