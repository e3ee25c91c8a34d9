"""Per-request state. Nothing an operation learns about one request lives anywhere shared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kmip.core.enums import ResultReason

from ..protocol.errors import KmipError

if TYPE_CHECKING:
    from ..keyhsm import KeyHsm
    from ..policy import Identity, Policy
    from ..store import Store


@dataclass(frozen=True)
class Services:
    """Long-lived, thread-safe collaborators shared by all requests of a worker process."""

    keyhsm: KeyHsm
    store: Store
    policy: Policy


@dataclass
class RequestContext:
    """One request message: who sent it, in which protocol version, and the batch's ID
    placeholder (KMIP scopes it to one message; a new message starts without one)."""

    services: Services
    identity: Identity
    peer: str
    version: tuple[int, int] = (1, 0)
    id_placeholder: str | None = None

    @property
    def v2(self) -> bool:
        return self.version >= (2, 0)

    def wrong_state(self, message: str) -> KmipError:
        # KMIP 2.0 added a precise reason; 1.x servers answer Permission Denied.
        reason = ResultReason.WRONG_KEY_LIFECYCLE_STATE if self.v2 else ResultReason.PERMISSION_DENIED
        return KmipError(reason, message)
