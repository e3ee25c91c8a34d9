"""'kmip-bridge keyhsm probe': what the token offers and which wrap mechanism each KEK kind gets.

Each candidate is tried for real on throw-away session keys (never stored on the token), since a
mechanism list says nothing of, e.g., which OAEP hashes a token accepts.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, MechanismFlag
from pkcs11 import exceptions as p11e

from . import mechanisms
from .errors import KeyHsmError
from .hsm import KeyHsm
from .kek import AES, KINDS

_PROBE_RSA_BITS = 2048  # the mechanisms do not depend on the size; generating 3072 bits takes seconds


def _session_key(session: Any, kind: str) -> tuple[Any, rsa.RSAPublicKey | None, list[Any]]:
    """(key to unwrap with, public key for RSA, objects to destroy)."""
    if kind == AES:
        key = session.generate_key(
            KeyType.AES, 256, store=False,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        return key, None, [key]
    pub, priv = session.generate_keypair(
        KeyType.RSA, _PROBE_RSA_BITS, store=False, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    n, e = pub[Attribute.MODULUS], pub[Attribute.PUBLIC_EXPONENT]
    public = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    return priv, public, [priv, pub]


def probe(hsm: KeyHsm, preferred: tuple[str, ...] = ()) -> tuple[list[tuple[str, str]], dict[str, str | None]]:
    """(report lines as (topic, text), kind -> the mechanism new KEKs of that kind would use)."""
    token = hsm._token  # the probe is part of the Key HSM layer
    lines: list[tuple[str, str]] = [(k, v) for k, v in token.info().items()]
    offered = hsm.token_mechanisms()
    for ckm in mechanisms.RELEVANT:
        o = offered.get(int(ckm))
        lines.append(("offers", f"{ckm.name}: " + (
            "no" if o is None else f"{o.flag_names() or '-'} (key {o.min_key}-{o.max_key})")))
    others = sorted(o.name for c, o in offered.items() if c not in {int(m) for m in mechanisms.RELEVANT})
    lines.append(("offers", f"{len(offered)} mechanisms in all; others: {', '.join(others)}"))
    uses: dict[str, str | None] = {}
    for kind in KINDS:
        try:
            with token.admin() as session:
                key, public, made = _session_key(session, kind)
                try:
                    _, verdicts = mechanisms.choose(mechanisms.PREFERENCE[kind], offered, key, public, every=True)
                    chosen, _ = mechanisms.choose(mechanisms.preference(kind, preferred), offered, key, public)
                finally:
                    for obj in made:
                        obj.destroy()
        except p11e.PKCS11Error as exc:
            lines.append((kind, f"cannot make a session {kind} key to try mechanisms: {type(exc).__name__}"))
            uses[kind] = None
            continue
        for name, verdict in verdicts:
            lines.append((kind, f"{name}: {verdict}"))
        uses[kind] = chosen.name if chosen else None
        lines.append(("uses", f"{kind} KEKs: " + (
            f"{chosen.name} ({chosen.what})" if chosen else "none: kmip-bridge refuses to start with such a KEK")))
    for info in hsm.list_keks():
        try:
            found, why = hsm.choose_mechanism(info)
            text = found.name if found else "none usable (" + "; ".join(f"{n}: {v}" for n, v in why) + ")"
        except KeyHsmError as exc:
            text = f"cannot tell: {exc}"
        lines.append(("kek", f"{info.label} ({info.kind}): {text}"))
    return lines, uses

