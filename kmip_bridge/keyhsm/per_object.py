"""Per-object keys (keyhsm.per_object): a token key made for one object alone wraps its DEK.

Destroying that key on the token makes the object irretrievable everywhere its sealed row was
copied — an old database backup included — as long as token backups are handled as README's
"Token backups undo revocation" says. The kind is an AES-256 secret key on the token
(``object-aes``): generation is one call of a few ms on SoftHSM2 (an RSA-3072 pair takes ~1 s,
DESIGN.md §7), and the DEK wrap is the same on-token AES-GCM as an aes-kwp KEK's.

The row finds its key by the label it records (kek_label), ``obj.<uid>.t<unix seconds>.<random>``: the uid
binds key and row (``open`` refuses a label of another object) and the creation time lets a sweep
tell a key whose row was never written (a crash or a failed insert) from a create still running.
CKA_ID carries the same bytes. These labels never parse as KEK labels (``NAME-vN``), so KEK
listing, rotation and rewrap leave per-object rows alone.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.types import Session

from .errors import KekRevoked, KeyHsmError

OBJECT_AES = "object-aes"
KINDS = (OBJECT_AES,)
PREFIX = "obj."
_LABEL = re.compile(r"^obj\.([A-Za-z0-9_.:-]{1,96})\.t([0-9]{1,12})\.[0-9a-f]{8}$")
# Key handles kept per pooled session (python-pkcs11 binds a key object to its session): a Get
# soon after the Create, or of a hot object, skips the linear label search (DESIGN.md §7).
CACHE_PER_SESSION = 256
# Errors by which a token says it has no room for another object (SoftHSM2 file backend: the
# disk; an HSM: its object table).
_FULL = (p11e.DeviceMemory, p11e.HostMemory)


class ObjectKeyDestroyed(KekRevoked):
    """The per-object key of a row is gone from the token: the object was destroyed."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.args = (
            f"the key material is irretrievable because its per-object key '{label}' was destroyed on"
            " the HSM (the object was destroyed) or is absent from this token",
        )


class TokenFull(KeyHsmError):
    def __init__(self, label: str, cause: str) -> None:
        self.label = label
        super().__init__(
            f"the token has no room for the per-object key '{label}' ({cause}); nothing was created."
            " Destroy objects, sweep orphan keys ('kmip-bridge db check --repair') or give the token room"
        )


@dataclass(frozen=True)
class ObjectKeyLabel:
    label: str
    uid: str
    created: int  # unix seconds


def make_label(uid: str, now: float | None = None) -> str:
    # The random tail keeps two keys of one uid apart (a seal re-sent after a lost socket).
    label = f"{PREFIX}{uid}.t{int(time.time() if now is None else now)}.{os.urandom(4).hex()}"
    if parse_label(label) is None:
        raise KeyHsmError(f"object id {uid!r} cannot name a per-object key (use at most 96 of A-Z a-z 0-9 _ . : -)")
    return label


def parse_label(label: str) -> ObjectKeyLabel | None:
    m = _LABEL.match(label)
    return None if m is None else ObjectKeyLabel(label, m[1], int(m[2]))


def is_per_object(kind: str | None) -> bool:
    return kind in KINDS


def generate(session: Session, label: str) -> Any:
    """The new key on the token (a R/W, logged-in session, under the exclusive token lock):
    sensitive, never extractable, en/decrypt only; destroyable but not modifiable.

    A search first, for two reasons: a duplicate label is refused, and it makes SoftHSM2 re-read
    the token folder before this process writes. SoftHSM2 (2.6, file backend) notices other
    processes' writes through a generation counter, and a process that writes adopts the new
    value as seen: objects another process made just before are then invisible to it until
    someone else writes again (measured: a Get on another worker answered "destroyed")."""
    if list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: label.encode()})):
        raise KeyHsmError(f"a per-object key labelled '{label}' already exists on the token")
    try:
        return session.generate_key(
            KeyType.AES, 256, id=label.encode(), label=label, store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={
                Attribute.MODIFIABLE: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
    except _FULL as exc:
        raise TokenFull(label, type(exc).__name__) from None


def find(session: Session, label: str) -> Any:
    """The per-object key labelled ``label``; NoSuchKey if none. Searched by CKA_ID and class, the
    attributes it was made with (a token may index them; SoftHSM2 scans every object)."""
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: label.encode(), Attribute.TOKEN: True}
    found = list(session.get_objects(template))
    found = [k for k in found if k[Attribute.LABEL] == label]
    if not found:
        raise p11e.NoSuchKey(label)
    if len(found) > 1:
        raise KeyHsmError(f"{len(found)} per-object keys are labelled '{label}' on the token")
    return found[0]


def destroy(session: Session, label: str) -> bool:
    """Destroys the per-object key ``label``; False if it was not there."""
    try:
        key = find(session, label)
    except p11e.NoSuchKey:
        return False
    key.destroy()
    return True


def list_labels(session: Session) -> list[ObjectKeyLabel]:
    """Every per-object key on the token (one pass over the token's AES secret keys)."""
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.TOKEN: True}
    out = []
    for obj in session.get_objects(template):
        parsed = parse_label(obj[Attribute.LABEL])
        if parsed is not None:
            out.append(parsed)
    return sorted(out, key=lambda k: k.label)


class KeyCache:
    """A bounded LRU of per-object key objects of one pooled session."""

    def __init__(self, size: int = CACHE_PER_SESSION) -> None:
        self._size = size
        self._keys: OrderedDict[str, Any] = OrderedDict()

    def get(self, label: str) -> Any | None:
        key = self._keys.get(label)
        if key is not None:
            self._keys.move_to_end(label)
        return key

    def put(self, label: str, key: Any) -> None:
        self._keys[label] = key
        self._keys.move_to_end(label)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def drop(self, labels: Iterable[str]) -> None:
        for label in labels:
            self._keys.pop(label, None)


def per_object_names(default_kek: str, default_on: bool, tenants: dict[str, str],
                     tenant_switch: dict[str, bool]) -> frozenset[str]:
    """The KEK names whose new objects get per-object keys: the default KEK if keyhsm.per_object,
    each tenant KEK by its tenant's own switch (else the instance-wide one)."""
    names = {default_kek} if default_on else set()
    for group, name in tenants.items():
        if tenant_switch.get(group, default_on):
            names.add(name)
    return frozenset(names)
