"""Authorization: identity resolution, ownership and operation policies, reloadable on SIGHUP.

The creator owns an object. An object's Operation Policy Name selects the policy that governs it
(``default`` otherwise). Members of the admin group may do everything to every object. An object
the caller may do nothing with is *invisible*: it is reported exactly like a missing object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from kmip.core.enums import Operation

from .identity import Identity
from .rules import DEFAULT, OperationPolicy, PolicyError, load_directory

_NOTHING = OperationPolicy(name="<unknown policy>", source="", rules=())


class AccessDenied(Exception):
    """The identity may not use this server at all (unknown or disabled)."""


@dataclass(frozen=True)
class IdentityEntry:
    groups: frozenset[str]
    disabled: bool = False


def load_identities(path: Path | None) -> dict[str, IdentityEntry] | None:
    """``identities.yaml``: ``identities: {NAME: {groups: [...], disabled: bool}}``."""
    if path is None or not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML ({exc})") from None
    entries = raw.get("identities") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise PolicyError(f"{path}:1: needs a mapping 'identities: {{NAME: {{groups: [...]}}}}'")
    out = {}
    for name, spec in entries.items():
        spec = spec or {}
        groups = spec.get("groups", []) if isinstance(spec, dict) else None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise PolicyError(f"{path}: identity '{name}': 'groups' must be a list of names")
        out[str(name)] = IdentityEntry(frozenset(groups), bool(spec.get("disabled", False)))
    return out


@dataclass(frozen=True)
class _State:
    policies: dict[str, OperationPolicy]
    identities: dict[str, IdentityEntry] | None


@dataclass(frozen=True)
class LocateScope:
    owner: str | None  # None: every owner
    other_types: frozenset[int] | None  # object types of other owners also reachable; None = all
    exact: bool  # True when SQL alone decides (no per-object policy can change the answer)


class Policy:
    def __init__(
        self,
        admin_group: str = "admin",
        directory: Path | None = None,
        groups_from: str = "ou",
        require_known: bool = False,
        derive_from_pre_active: bool = False,
    ) -> None:
        self.admin_group = admin_group
        self.derive_from_pre_active = derive_from_pre_active
        self.directory = directory
        self.groups_from = groups_from
        self.require_known = require_known
        self._lock = threading.Lock()
        self._state = self._load()

    def _load(self) -> _State:
        identities_file = self.directory / "identities.yaml" if self.directory else None
        return _State(load_directory(self.directory), load_identities(identities_file))

    def reload(self) -> None:
        """Re-reads the policy directory; on error the old policies stay and the error is raised."""
        state = self._load()
        with self._lock:
            self._state = state

    def policy_names(self) -> frozenset[str]:
        return frozenset(self._state.policies)

    # -- identity -------------------------------------------------------------------------------
    def resolve(self, cert: Identity) -> Identity:
        identities = self._state.identities
        entry = identities.get(cert.name) if identities is not None else None
        if entry is not None and entry.disabled:
            raise AccessDenied(f"identity '{cert.name}' is disabled")
        if entry is None and self.require_known:
            raise AccessDenied(f"identity '{cert.name}' is not known to this server")
        if self.groups_from == "ou" or entry is None:
            return cert
        groups = entry.groups if self.groups_from == "map" else entry.groups | cert.groups
        return Identity(cert.name, groups)

    # -- decisions ------------------------------------------------------------------------------
    def is_admin(self, identity: Identity) -> bool:
        return self.admin_group in identity.groups

    def _policy(self, name: str | None) -> OperationPolicy:
        policies = self._state.policies
        if not name or name == DEFAULT.name:
            return policies.get(DEFAULT.name, DEFAULT)
        # An object naming a policy that no longer exists is reachable by admins only.
        return policies.get(name, _NOTHING)

    def visible(self, identity: Identity, object_type: int, owner: str, policy_name: str | None) -> bool:
        if self.is_admin(identity):
            return True
        return self._policy(policy_name).sees(identity.groups, object_type, owner == identity.name)

    def allowed(
        self, identity: Identity, operation: int, object_type: int | None, owner: str | None,
        policy_name: str | None,
    ) -> bool:
        """``owner`` None means a new object the caller would own."""
        if self.is_admin(identity):
            return True
        owned = owner is None or owner == identity.name
        return self._policy(policy_name).allows(identity.groups, operation, object_type, owned)

    def locate_scope(self, identity: Identity) -> LocateScope:
        if self.is_admin(identity):
            return LocateScope(None, None, True)
        others: set[int] = set()
        for policy in self._state.policies.values():
            types = policy.any_scope_types(identity.groups, Operation.LOCATE.value)
            if types is None:
                return LocateScope(identity.name, None, False)
            others |= types
        single = len(self._state.policies) == 1
        return LocateScope(identity.name, frozenset(others), single and not others)
