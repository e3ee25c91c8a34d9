"""Key-encryption keys as token objects: naming, discovery, generation, destruction.

A KEK version is labelled f"{name}-v{version}" (CKA_LABEL, and CKA_ID holds the same bytes). An
"aes" KEK is one AES-256 secret key; an "rsa" KEK is an RSA-3072 key pair whose halves share the
label. Anything else on the token is ignored. Which mechanism wraps a DEK under a KEK is chosen
per token and recorded per row (mechanisms.py); the kind only says what the key is. The kinds were
called "aes-kwp" and "rsa-oaep" before (the first never used key wrap): both names stay accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.types import Session

from .errors import KeyHsmError

T = TypeVar("T")

AES = "aes"
RSA = "rsa"
KINDS = (AES, RSA)
# Former kind names, still accepted wherever a kind is given (configs, CLI, the service protocol).
AES_KWP = "aes-kwp"
RSA_OAEP = "rsa-oaep"
KIND_ALIASES = {AES_KWP: AES, RSA_OAEP: RSA}
RSA_BITS = 3072
_SEARCH_ATTEMPTS = 3

_LABEL = re.compile(r"^([A-Za-z0-9_.]+)-v([0-9]+)$")
_NAME = re.compile(r"^[A-Za-z0-9_.]{1,64}$")

# The object that unwraps, per kind: its class decides which finds see the KEK.
KEK_CLASS = {AES: ObjectClass.SECRET_KEY, RSA: ObjectClass.PRIVATE_KEY}
_KEY_TYPE = {AES: KeyType.AES, RSA: KeyType.RSA}


@dataclass(frozen=True)
class KekInfo:
    label: str
    name: str
    version: int
    kind: str


def make_label(name: str, version: int) -> str:
    return f"{name}-v{version}"


def parse_label(label: str) -> tuple[str, int] | None:
    """(name, version) of a canonical KEK label, else None ("x-v01" is not canonical)."""
    m = _LABEL.match(label)
    if m is None or make_label(m[1], int(m[2])) != label:
        return None
    return m[1], int(m[2])


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise KeyHsmError(f"invalid KEK name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ .")


def check_kind(kind: str) -> str:
    """The canonical kind ("aes" or "rsa") of a kind or former kind name."""
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise KeyHsmError(f"invalid KEK kind {kind!r}: must be one of {', '.join(KINDS)}")
    return kind


def _vanishing(search: Callable[[], T]) -> T:
    """Runs a search again when an object it found was destroyed (by another process) before its
    attributes could be read; python-pkcs11 reads some of every object it yields."""
    for _ in range(_SEARCH_ATTEMPTS - 1):
        try:
            return search()
        except p11e.ObjectHandleInvalid:
            continue
    return search()


def find_one(session: Session, label: str, object_class: ObjectClass) -> Any:
    """The token object of this class and label; NoSuchKey if none."""
    template = {Attribute.CLASS: object_class, Attribute.LABEL: label, Attribute.TOKEN: True}
    found = _vanishing(lambda: list(session.get_objects(template)))
    if not found:
        raise p11e.NoSuchKey(label)
    if len(found) > 1:
        raise KeyHsmError(
            f"{len(found)} objects of class {object_class.name} are labelled '{label}' on the token"
        )
    return found[0]


def list_keks(session: Session) -> list[KekInfo]:
    return _vanishing(lambda: _list_keks(session))


def _list_keks(session: Session) -> list[KekInfo]:
    keks: dict[str, KekInfo] = {}
    for kind in KINDS:
        template = {
            Attribute.CLASS: KEK_CLASS[kind],
            Attribute.KEY_TYPE: _KEY_TYPE[kind],
            Attribute.TOKEN: True,
        }
        for obj in session.get_objects(template):
            label = obj[Attribute.LABEL]
            parsed = parse_label(label)
            if parsed is not None:
                keks[label] = KekInfo(label, parsed[0], parsed[1], kind)
    return sorted(keks.values(), key=lambda k: (k.name, k.version, k.kind))


def generate(session: Session, name: str, version: int, kind: str) -> KekInfo:
    """Creates the KEK on the token: sensitive, never extractable, usable only to en/decrypt (an
    AES KEK also to wrap/unwrap, for tokens whose only AES mechanism is a key wrap)."""
    kind = check_kind(kind)
    label = make_label(name, version)
    ident = label.encode()
    locked = {Attribute.MODIFIABLE: False}
    if kind == AES:
        session.generate_key(
            KeyType.AES, 256, id=ident, label=label, store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={
                **locked, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            },
        )
    else:
        session.generate_keypair(
            KeyType.RSA, RSA_BITS, id=ident, label=label, store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            public_template={**locked, Attribute.PRIVATE: False},
            private_template={
                **locked, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            },
        )
    return KekInfo(label, name, version, kind)


def destroy(session: Session, label: str) -> int:
    """Destroys every key object labelled `label`; returns how many."""
    count = 0
    for object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        template = {Attribute.CLASS: object_class, Attribute.LABEL: label, Attribute.TOKEN: True}
        for obj in list(session.get_objects(template)):
            obj.destroy()
            count += 1
    return count
