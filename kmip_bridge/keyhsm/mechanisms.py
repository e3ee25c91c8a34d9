"""Wrap mechanisms: how a DEK is wrapped under a KEK, chosen from what the token really does.

Each sealed row records its mechanism by name in ``kek_kind`` (at most 16 characters), so rows keep
opening after the choice changes (a new token, a new KEK, ``keyhsm.wrap_mechanisms``). The name is
also part of the wrap's binding (``envelope.wrap_aad``), so a row cannot be re-labelled to another
mechanism. The choice for a KEK is the first mechanism, in preference order, that the token lists
with the needed flags *and* that survives a round trip with that KEK (a token may list OAEP yet
refuse SHA-256, or list GCM yet ignore the host's IV); see ``choose``.

Binding the object: GCM takes the binding as AAD. RSA-OAEP (SoftHSM2 takes no OAEP label) and the
AES key wraps (RFC 3394 / 5649 have no AAD) wrap ``DEK || SHA-256(binding)`` instead, and opening
checks the second half: the wrap is authenticated (OAEP padding check, the key wrap's integrity
check value), so the binding cannot be altered without the KEK, and a wrapped DEK moved to another
object or KEK unwraps to a binding that does not match. The binding (``envelope.wrap_aad``) holds
object id, KEK label, mechanism name and context.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams

from .errors import IntegrityError, KeyHsmError
from .kek import AES, RSA

DEK_BYTES = 32
NONCE_BYTES = 12
_ED = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
_WU = MechanismFlag.WRAP | MechanismFlag.UNWRAP


@dataclass(frozen=True)
class WrapMechanism:
    name: str  # recorded per row (kek_kind, String(16))
    kek_type: str  # AES or RSA: the KEK kind it needs
    ckm: Mechanism  # the PKCS#11 mechanism on the token
    flags: MechanismFlag  # what the token must list for it (and the KEK allow)
    what: str  # one line for humans
    nonce_bytes: int = 0  # IV stored per row (wrap_nonce)
    hash_name: str = ""  # OAEP hash ("sha1", "sha256")
    writes: bool = True  # False: a former name, opened but never written
    bound_inside: bool = True  # the binding travels inside the wrap (not as AAD)


AES_GCM = WrapMechanism(
    "aes-gcm", AES, Mechanism.AES_GCM, _ED, "CKM_AES_GCM, 96-bit IV from the host, binding as AAD",
    nonce_bytes=NONCE_BYTES, bound_inside=False,
)
AES_WRAP_KWP = WrapMechanism(
    "aes-wrap-kwp", AES, Mechanism.AES_KEY_WRAP_KWP, _WU, "CKM_AES_KEY_WRAP_KWP (RFC 5649) of DEK||binding",
)
AES_WRAP_PAD = WrapMechanism(
    "aes-wrap-pad", AES, Mechanism.AES_KEY_WRAP_PAD, _WU,
    "CKM_AES_KEY_WRAP_PAD (RFC 5649 or padded RFC 3394, per vendor) of DEK||binding",
)
AES_WRAP = WrapMechanism(
    "aes-wrap", AES, Mechanism.AES_KEY_WRAP, _WU, "CKM_AES_KEY_WRAP (RFC 3394) of DEK||binding",
)
RSA_OAEP_SHA256 = WrapMechanism(
    "rsa-oaep-sha256", RSA, Mechanism.RSA_PKCS_OAEP, MechanismFlag.DECRYPT,
    "CKM_RSA_PKCS_OAEP, SHA-256/MGF1-SHA-256, of DEK||binding", hash_name="sha256",
)
RSA_OAEP_SHA1 = WrapMechanism(
    "rsa-oaep-sha1", RSA, Mechanism.RSA_PKCS_OAEP, MechanismFlag.DECRYPT,
    "CKM_RSA_PKCS_OAEP, SHA-1/MGF1-SHA-1, of DEK||binding", hash_name="sha1",
)
# Rows written before the choice existed: "aes-kwp" was always AES-GCM with a host IV, "rsa-oaep"
# OAEP with SHA-1 (the binding inside from envelope format 2 on, see hsm.KeyHsm._unwrap).
LEGACY_AES_KWP = WrapMechanism(
    "aes-kwp", AES, Mechanism.AES_GCM, _ED, "former name of aes-gcm rows (CKM_AES_GCM)",
    nonce_bytes=NONCE_BYTES, writes=False, bound_inside=False,
)
LEGACY_RSA_OAEP = WrapMechanism(
    "rsa-oaep", RSA, Mechanism.RSA_PKCS_OAEP, MechanismFlag.DECRYPT,
    "former name of rsa-oaep-sha1 rows", hash_name="sha1", writes=False,
)

# Preference per KEK kind: GCM first (one call each way, AAD, measured 4x faster than KWP on
# SoftHSM2), then the RFC 5649 wraps, RFC 3394 last; OAEP with SHA-1 only where SHA-256 fails.
PREFERENCE = {
    AES: (AES_GCM, AES_WRAP_KWP, AES_WRAP_PAD, AES_WRAP),
    RSA: (RSA_OAEP_SHA256, RSA_OAEP_SHA1),
}
ALL = {m.name: m for m in (*PREFERENCE[AES], *PREFERENCE[RSA], LEGACY_AES_KWP, LEGACY_RSA_OAEP)}
WRITABLE = tuple(m.name for m in (*PREFERENCE[AES], *PREFERENCE[RSA]))


def get(name: str) -> WrapMechanism | None:
    return ALL.get(name)


def check_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validates a configured preference list (``keyhsm.wrap_mechanisms``)."""
    out = tuple(names)
    for n in out:
        if n not in WRITABLE:
            raise KeyHsmError(f"unknown wrap mechanism {n!r}: use some of {', '.join(WRITABLE)}")
    return out


def preference(kek_type: str, configured: tuple[str, ...] = ()) -> tuple[WrapMechanism, ...]:
    """The candidates for a KEK kind: the configured ones of that kind, in order, else all."""
    mine = tuple(ALL[n] for n in configured if ALL[n].kek_type == kek_type)
    return mine or PREFERENCE[kek_type]


def binding(associated: bytes) -> bytes:
    return hashlib.sha256(associated).digest()


def split_bound(plain: bytes, associated: bytes) -> bytes:
    """The DEK of an unwrapped DEK||binding, after checking the binding."""
    dek, bound = plain[:DEK_BYTES], plain[DEK_BYTES:]
    if not hmac.compare_digest(bound, binding(associated)):
        raise IntegrityError("the wrapped data key belongs to another object or KEK (tampered with, or moved)")
    return dek


def _oaep(m: WrapMechanism) -> tuple[padding.OAEP, tuple[Any, Any, None]]:
    if m.hash_name == "sha256":
        return (padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
                (Mechanism.SHA256, MGF.SHA256, None))
    return (padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
            (Mechanism.SHA_1, MGF.SHA1, None))


# -- the operations; `key` is the KEK's key object (private half for RSA) on some session ------------

def rsa_wrap(m: WrapMechanism, public: rsa.RSAPublicKey, dek: bytes, associated: bytes) -> bytes:
    """OAEP in software with the public key: the token is only needed to unwrap."""
    return public.encrypt(dek + binding(associated), _oaep(m)[0])


def aes_wrap(m: WrapMechanism, key: Any, dek: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """(wrapped, wrap nonce) on the token."""
    if m.ckm == Mechanism.AES_GCM:
        nonce = os.urandom(NONCE_BYTES)
        return key.encrypt(dek, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, associated)), nonce
    # Key wraps take a key object: the DEK||binding travels as a short-lived session object
    # (SoftHSM2 refuses C_Encrypt with its key-wrap mechanisms, measured).
    session = key.session
    carrier = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: False,
        Attribute.EXTRACTABLE: True, Attribute.VALUE: dek + binding(associated),
    })
    try:
        return key.wrap_key(carrier, mechanism=m.ckm), b""
    finally:
        carrier.destroy()


def token_unwrap(m: WrapMechanism, key: Any, wrapped: bytes, nonce: bytes, associated: bytes) -> bytes:
    """The plaintext of a wrap (DEK, or DEK||binding when ``m.bound_inside``), on the token."""
    if m.ckm == Mechanism.AES_GCM:
        return bytes(key.decrypt(wrapped, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, associated)))
    if m.kek_type == RSA:
        return bytes(key.decrypt(wrapped, mechanism=m.ckm, mechanism_param=_oaep(m)[1]))
    carrier = key.unwrap_key(
        ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped, mechanism=m.ckm, store=False,
        template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.PRIVATE: True},
    )
    try:
        return bytes(carrier[Attribute.VALUE])
    finally:
        carrier.destroy()


# -- discovery --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Offered:
    """One mechanism as the token lists it (C_GetMechanismInfo)."""

    ckm: int
    flags: int
    min_key: int
    max_key: int

    @property
    def name(self) -> str:
        try:
            return Mechanism(self.ckm).name
        except ValueError:
            return f"0x{self.ckm:X}"

    def flag_names(self) -> str:
        return " ".join(f.name.lower() for f in (MechanismFlag.ENCRYPT, MechanismFlag.DECRYPT,
                                                 MechanismFlag.WRAP, MechanismFlag.UNWRAP) if self.flags & f)


def offered(slot: Any) -> dict[int, Offered]:
    """The token's mechanism list with flags and key sizes (unknown vendor codes included)."""
    out: dict[int, Offered] = {}
    for mech in slot.get_mechanisms():
        ckm = int(mech)
        try:
            info = slot.get_mechanism_info(mech)
            out[ckm] = Offered(ckm, int(info.flags), int(info.min_key_length), int(info.max_key_length))
        except (p11e.PKCS11Error, ValueError):
            out[ckm] = Offered(ckm, 0, 0, 0)
    return out


RELEVANT = (Mechanism.AES_KEY_GEN, Mechanism.AES_GCM, Mechanism.AES_KEY_WRAP, Mechanism.AES_KEY_WRAP_PAD,
            Mechanism.AES_KEY_WRAP_KWP, Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP)


def listed(m: WrapMechanism, token: dict[int, Offered]) -> str | None:
    """None if the token lists ``m`` with its flags, else why not."""
    o = token.get(int(m.ckm))
    if o is None:
        return f"{m.ckm.name} not offered"
    if o.flags & m.flags != m.flags:
        lacking = "/".join(f.name.lower() for f in MechanismFlag if f & m.flags and not f & o.flags)
        return f"{m.ckm.name} offered without {lacking}"
    return None


def key_allows(m: WrapMechanism, key: Any) -> str | None:
    """None if the KEK's attributes allow ``m`` (a KEK made for GCM may lack CKA_WRAP)."""
    attrs = [Attribute.WRAP, Attribute.UNWRAP] if m.flags & MechanismFlag.WRAP else [Attribute.DECRYPT]
    if m.flags & MechanismFlag.ENCRYPT:
        attrs.append(Attribute.ENCRYPT)
    for a in attrs:
        try:
            if not key[a]:
                return f"the KEK has CKA_{a.name} false"
        except p11e.PKCS11Error:
            pass  # unreadable: let the round trip decide
    return None


_NOT_ABOUT_THE_MECHANISM = (
    p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.DeviceRemoved, p11e.TokenNotPresent,
    p11e.DeviceError, p11e.DeviceMemory, p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid,
    p11e.UserNotLoggedIn,
)


def round_trip(m: WrapMechanism, key: Any, public: rsa.RSAPublicKey | None) -> str | None:
    """None if wrapping and unwrapping a random DEK under ``key`` with ``m`` gives it back."""
    dek, associated = os.urandom(DEK_BYTES), b"kmip-bridge/probe"
    try:
        if m.kek_type == RSA:
            assert public is not None
            wrapped, nonce = rsa_wrap(m, public, dek, associated), b""
        else:
            wrapped, nonce = aes_wrap(m, key, dek, associated)
        plain = token_unwrap(m, key, wrapped, nonce, associated)
    except _NOT_ABOUT_THE_MECHANISM:
        raise  # a dead session or a stale handle says nothing of the mechanism: the caller retries
    except p11e.PKCS11Error as exc:
        return f"refused by the token ({type(exc).__name__})"
    got = split_bound(plain, associated) if m.bound_inside and len(plain) == 2 * DEK_BYTES else plain
    if got != dek:
        return "round trip returned other bytes (the token may not use the host's IV)"
    return None


def choose(
    candidates: Iterable[WrapMechanism], token: dict[int, Offered], key: Any, public: rsa.RSAPublicKey | None,
    every: bool = False,
) -> tuple[WrapMechanism | None, list[tuple[str, str]]]:
    """(the first usable candidate or None, [(name, verdict)] for every candidate looked at;
    ``every``: look at all of them, as 'keyhsm probe' does)."""
    verdicts: list[tuple[str, str]] = []
    first = None
    for m in candidates:
        why = listed(m, token) or key_allows(m, key) or round_trip(m, key, public)
        verdicts.append((m.name, why or "ok"))
        if why is None and first is None:
            first = m
            if not every:
                break
    return first, verdicts


def none_usable(kind: str, label: str, verdicts: list[tuple[str, str]]) -> str:
    tried = "; ".join(f"{n}: {v}" for n, v in verdicts)
    return f"the token offers no usable wrap mechanism for {kind} KEK '{label}' ({tried})"
