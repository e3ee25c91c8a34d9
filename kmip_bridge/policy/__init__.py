"""Who the client is (from its verified certificate) and what it may touch. Never sees key
material."""

from .identity import Identity, identity_from_certificate
from .policy import AccessDenied, LocateScope, Policy
from .rules import PolicyError

__all__ = ["AccessDenied", "Identity", "LocateScope", "Policy", "PolicyError", "identity_from_certificate"]
