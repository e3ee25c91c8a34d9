"""Per-request state. Nothing an operation learns about one request lives anywhere shared."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kmip.core.enums import ResultReason

from ..protocol.errors import KmipError

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..keyhsm import KeyHsm
    from ..keyhsm.remote import RemoteKeyHsm
    from ..policy import Identity, Policy
    from ..store import Store


@dataclass(frozen=True)
class Services:
    """Long-lived, thread-safe collaborators shared by all requests of a worker process."""

    keyhsm: KeyHsm | RemoteKeyHsm
    store: Store
    policy: Policy
    # group -> KEK name for tenants with their own KEK
    tenant_keks: Mapping[str, str] = field(default_factory=dict)
    audit: AuditLog | None = None  # the hash-chained audit file; None when audit.enabled is false
    max_located_items: int = 65535  # server.max_located_items: identifiers in one Locate answer
    bind_credential: bool = False  # policy.bind_credential: header usernames must be the identity


@dataclass
class RequestContext:
    """One request message: who sent it, in which protocol version, and the batch's ID
    placeholder (KMIP scopes it to one message; a new message starts without one)."""

    services: Services
    identity: Identity
    peer: str
    version: tuple[int, int] = (1, 0)
    id_placeholder: str | None = None
    operation: int | None = None  # of the batch item being processed
    # Set while a read-modify-write item runs in its own unit of work: the target's row is then
    # read FOR UPDATE (dispatch._call), so concurrent changes of one object queue, not collide.
    lock_target: bool = False

    def kek_for_identity(self) -> str | None:
        """The tenant KEK of the caller's groups (first by name), or None for the default KEK."""
        for group in sorted(self.identity.groups):
            kek = self.services.tenant_keks.get(group)
            if kek is not None:
                return kek
        return None

    @property
    def v2(self) -> bool:
        return self.version >= (2, 0)

    def wrong_state(self, message: str) -> KmipError:
        # KMIP 2.0 added a precise reason; 1.x servers answer Permission Denied.
        reason = ResultReason.WRONG_KEY_LIFECYCLE_STATE if self.v2 else ResultReason.PERMISSION_DENIED
        return KmipError(reason, message)
