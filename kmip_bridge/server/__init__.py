"""Network side: TLS listener, connections, worker processes. Knows nothing of keys or storage;
it hands each framed message to the application it was given."""

from .master import serve

__all__ = ["serve"]
