"""Key HSM: envelope encryption of managed-object material under KEKs held on a PKCS#11 token.

A fresh 256-bit DEK encrypts the material in software (AES-256-GCM, AAD binding object id and
context); the KEK on the token wraps the DEK, bound to object and KEK version, with the mechanism
chosen from what the token does and recorded per row (mechanisms.py: AES-GCM or an AES key wrap
on the token for aes KEKs; OAEP in software with the public key, unwrapped on the token, for rsa). A KEK rotation
rewraps the DEK alone. The plaintext DEK only lives in locals.
"""

from .envelope import Sealed
from .errors import IntegrityError, KekExists, KekNotFound, KekRevoked, KeyHsmError, TokenUnavailable
from .hsm import KeyHsm
from .kek import AES, AES_KWP, KINDS, RSA, RSA_OAEP, KekInfo
from .token import TokenSettings

__all__ = [
    "AES",
    "AES_KWP",
    "KINDS",
    "RSA",
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
