"""Failures of the Key HSM layer. Messages name labels and causes, never key material or PINs."""

from __future__ import annotations


class KeyHsmError(Exception):
    """Base class: anything the Key HSM layer refuses or cannot do."""


class TokenUnavailable(KeyHsmError):
    """The PKCS#11 module, token, login or a session cannot be used."""


class SessionBroken(TokenUnavailable):
    """A pooled session died (the pool has dropped it); the call may be repeated on another."""


class KekNotFound(KeyHsmError):
    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or f"no version of KEK '{name}' exists on the token")


class KekExists(KeyHsmError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"KEK '{name}' already exists on the token (use rotate for a new version)")


class KekRevoked(KeyHsmError):
    def __init__(self, label: str) -> None:
        self.label = label
        super().__init__(
            f"the key material is irretrievable because KEK '{label}' was revoked (destroyed) on the HSM"
            " or is absent from this token"
        )


class IntegrityError(KeyHsmError):
    def __init__(self, message: str = "sealed material failed its integrity check") -> None:
        super().__init__(message)
