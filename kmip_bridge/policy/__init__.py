"""Who the client is (from its verified certificate) and what it may touch. Never sees key
material."""

from .identity import Identity, identity_from_certificate
from .policy import Policy

__all__ = ["Identity", "Policy", "identity_from_certificate"]
