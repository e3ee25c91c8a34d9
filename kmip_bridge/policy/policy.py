"""Ownership: the creator owns an object; the admin group may manage every object."""

from __future__ import annotations

from dataclasses import dataclass

from .identity import Identity


@dataclass(frozen=True)
class Policy:
    admin_group: str = "admin"

    def is_admin(self, identity: Identity) -> bool:
        return self.admin_group in identity.groups

    def can_access(self, identity: Identity, owner: str) -> bool:
        return owner == identity.name or self.is_admin(identity)

    def owner_filter(self, identity: Identity) -> str | None:
        """The owner Locate restricts to; None for admins, who see everything."""
        return None if self.is_admin(identity) else identity.name
