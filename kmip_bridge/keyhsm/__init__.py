"""Key HSM: envelope encryption of managed-object material under KEKs held on a PKCS#11 token.

A fresh 256-bit DEK encrypts the material in software (AES-256-GCM, AAD binding object id and
context); the KEK on the token wraps the DEK, bound to object and KEK version (aes-kwp: AES-GCM on
the token; rsa-oaep: OAEP in software with the public key, unwrapped on the token). A KEK rotation
rewraps the DEK alone. The plaintext DEK only lives in locals.
"""

from .envelope import Sealed
from .errors import IntegrityError, KekExists, KekNotFound, KekRevoked, KeyHsmError, TokenUnavailable
from .hsm import KeyHsm
from .kek import AES_KWP, KINDS, RSA_OAEP, KekInfo
from .token import TokenSettings

__all__ = [
    "AES_KWP",
    "KINDS",
    "RSA_OAEP",
    "IntegrityError",
    "KekExists",
    "KekInfo",
    "KekNotFound",
    "KekRevoked",
    "KeyHsm",
    "KeyHsmError",
    "Sealed",
    "TokenSettings",
    "TokenUnavailable",
]
