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
class Budgets:
    """What one client may take of a worker's shared resources (server.* settings; defaults as
    in config.ServerSettings; docs/security.md, "Resource budgets")."""

    max_response_size: int = 4 * 1024 * 1024  # bytes of one response message
    undo_lock_seconds: float = 2.0  # SQLite: how long an Undo batch may hold the write lock
    # Multi-part streams live in the database: these hold across every worker and node on it.
    max_streams: int = 1024  # open multi-part streams in all
    max_streams_per_identity: int = 32
    max_stream_bytes: int = 4 * 1024 * 1024  # buffered input of one stream
    max_stream_bytes_per_identity: int = 16 * 1024 * 1024
    max_stream_bytes_total: int = 256 * 1024 * 1024  # every open stream
    stream_idle_timeout: float = 600.0  # seconds without a part after which a stream ends


@dataclass(frozen=True)
class Services:
    """Long-lived, thread-safe collaborators shared by all requests of a worker process."""

    keyhsm: KeyHsm | RemoteKeyHsm
    store: Store
    policy: Policy
    # group -> KEK name for tenants with their own KEK
    tenant_keks: Mapping[str, str] = field(default_factory=dict)
    audit: AuditLog | None = None  # the hash-chained audit file; None when audit.enabled is false
    max_request_work: int = 4_000_000  # server.max_request_work: HMAC calls one request may cost
    budgets: Budgets = field(default_factory=Budgets)
    max_located_items: int = 65535  # server.max_located_items: identifiers in one Locate answer
    bind_credential: bool = False  # policy.bind_credential: header usernames must be the identity
    unique_names: bool = False  # policy.unique_names: Names unique at Create/Register too


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
    work_spent: int = 0  # CPU work charged so far to this message (see charge_work)

    def charge_work(self, units: int, what: str) -> None:
        """Charges slow, client-sized work (HMAC calls) to this message's budget *before* doing
        it: the budget is per request, so a batch of many cheap-looking items cannot add up to
        minutes of CPU. Over budget, the item fails and nothing of it is done."""
        if self.work_spent + units > self.services.max_request_work:
            raise KmipError(ResultReason.INVALID_FIELD,
                            f"{what} would exceed this request's work budget (server.max_request_work = "
                            f"{self.services.max_request_work} HMAC calls; {self.work_spent} already spent)")
        self.work_spent += units

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

    def limit_exceeded(self, message: str) -> KmipError:
        # A resource budget (Budgets) is spent: KMIP 2.0 has a reason for it, 1.x a General Failure.
        reason = ResultReason.SERVER_LIMIT_EXCEEDED if self.v2 else ResultReason.GENERAL_FAILURE
        return KmipError(reason, message)

    def wrong_state(self, message: str) -> KmipError:
        # KMIP 2.0 added a precise reason; 1.x servers answer Permission Denied.
        reason = ResultReason.WRONG_KEY_LIFECYCLE_STATE if self.v2 else ResultReason.PERMISSION_DENIED
        return KmipError(reason, message)
