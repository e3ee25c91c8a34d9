"""The last step of every response payload: it carries only what the request's version defines.

Handlers already build per version (versions.py); this walk catches what they cannot see — an
object or attribute made by a client of a later version (a 2.1 client's Ed25519 key, PGP Key, a
Link of type Wrapping Key Link, a Cryptographic Parameters with 1.4 fields...) read by an older
client. Per case (docs/conformance.md, "Version gating"):

- a unit that is one entry of a list the client did not ask for item by item — a 1.x Attribute
  (GetAttributes, Template-Attributes of Create/Register answers), a child of a 2.x Attributes
  structure, a Query answer's entry, a Get Attribute List name — is left out, as if the object
  did not have it (so a 1.0 client's Get Attributes still answers everything it can express);
- anything else (the Object Type, Key Block or object of a Get, a Check's mask...) is what the
  client asked for and cannot be expressed: the item fails, Key Format Type Not Supported for a
  format, else Feature Not Supported, naming the value and the version;
- 1.x: attributes inside a Key Value are always dropped (clients' decoders reject them).
"""

from __future__ import annotations

from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from . import attributes as wire
from . import ttlv
from .enumerations import MASK_SINCE, mask_in, tag_in, value_in
from .errors import KmipError
from .ttlv import Item, Type
from .versions import V20, Version, attribute_in

_ATTRIBUTE_LISTS = frozenset({
    T.ATTRIBUTES.value, T.COMMON_ATTRIBUTES.value, T.PRIVATE_KEY_ATTRIBUTES.value, T.PUBLIC_KEY_ATTRIBUTES.value,
})
# Operations whose payload is itself a list of independent entries.
_LIST_PAYLOADS = frozenset({Operation.QUERY.value, Operation.GET_ATTRIBUTE_LIST.value})
_KEEP_IN_LIST = frozenset({T.UNIQUE_IDENTIFIER.value})  # the Get Attribute List's target
_STRUCTURE, _ENUMERATION, _INTEGER = int(Type.STRUCTURE), int(Type.ENUMERATION), int(Type.INTEGER)
_ATTRIBUTE, _ATTRIBUTE_NAME = T.ATTRIBUTE.value, T.ATTRIBUTE_NAME.value


def problem(item: Item, version: Version, tag: int | None = None) -> str | None:
    """The first thing in ``item`` that ``version`` does not define, described; None if none.
    ``tag`` is the tag the value stands for (a 1.x Attribute Value: its attribute's tag)."""
    meaning = item.tag if tag is None else tag
    kind = item.type
    if not tag_in(item.tag, version):
        return f"tag {ttlv.tag_name(item.tag)} (0x{item.tag:06X})"
    if kind == _ENUMERATION:
        return None if value_in(meaning, item.value, version) else f"{ttlv.tag_name(meaning)} value 0x{item.value:X}"  # type: ignore[arg-type]
    if kind == _INTEGER:
        if meaning in MASK_SINCE and not mask_in(meaning, item.value, version):  # type: ignore[arg-type]
            return f"{ttlv.tag_name(meaning)} bits 0x{item.value:X}"
        return None
    if item.tag == _ATTRIBUTE_NAME and isinstance(item.value, str) and not wire.is_custom(item.value):
        # A 1.x attribute name (an Attribute's, or an entry of a Get Attribute List answer).
        return None if attribute_in(item.value, version) else f"attribute '{item.value}'"
    if kind != _STRUCTURE:
        return None
    if item.tag in (T.ATTRIBUTE.value, T.ATTRIBUTE_REFERENCE.value):
        return _attribute_problem(item, version)
    for child in item:
        found = problem(child, version)
        if found:
            return found
    return None


def _attribute_problem(item: Item, version: Version) -> str | None:
    """A 1.x Attribute, a 2.x vendor Attribute or Attribute Reference (Vendor Identification +
    Attribute Name: a vendor's own attribute, which every version carries)."""
    name = item.value_of(T.ATTRIBUTE_NAME.value)
    custom = not isinstance(name, str) or wire.is_custom(name) or item.get(T.VENDOR_IDENTIFICATION.value) is not None
    if not custom and not attribute_in(name, version):  # type: ignore[arg-type]
        return f"attribute '{name}'"
    meaning = None if custom else wire.tag_for(name)  # type: ignore[arg-type]
    for child in item:
        if child.tag == T.ATTRIBUTE_NAME.value:
            found = None if tag_in(child.tag, version) else f"tag {ttlv.tag_name(child.tag)}"
        else:
            found = problem(child, version, meaning if child.tag == T.ATTRIBUTE_VALUE.value else None)
        if found:
            return found
    return None


def fit(payload: Item, version: Version, operation: int) -> Item:
    """``payload`` as ``version`` can carry it: droppable entries it cannot express left out;
    raises KmipError when what remains still holds something it cannot express."""
    listed = operation in _LIST_PAYLOADS
    return _fit(payload, version, listed)


def _fit(item: Item, version: Version, listed: bool = False) -> Item:
    if item.type != _STRUCTURE:
        found = problem(item, version)
        if found:
            raise _refusal(item, found, version)
        return item
    is_list = item.tag in _ATTRIBUTE_LISTS
    v1_key_value = version < V20 and item.tag == T.KEY_VALUE.value
    kept: list[Item] = []
    changed = False
    for child in item:
        if v1_key_value and child.tag in (_ATTRIBUTE, T.ATTRIBUTES.value):
            changed = True
            continue
        if is_list or child.tag == _ATTRIBUTE or (listed and child.tag not in _KEEP_IN_LIST):
            if problem(child, version) is None:  # a droppable entry
                kept.append(child)
            else:
                changed = True
            continue
        if child.type != _STRUCTURE:  # a leaf (most of a Locate answer): checked in place
            found = problem(child, version)
            if found:
                raise _refusal(child, found, version)
            kept.append(child)
            continue
        fitted = _fit(child, version)
        changed |= fitted is not child
        kept.append(fitted)
    if not tag_in(item.tag, version):
        raise _refusal(item, f"tag {ttlv.tag_name(item.tag)} (0x{item.tag:06X})", version)
    return Item(item.tag, Type.STRUCTURE, kept) if changed else item


def _refusal(item: Item, what: str, version: Version) -> KmipError:
    reason = (ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED if item.tag == T.KEY_FORMAT_TYPE.value
              else ResultReason.FEATURE_NOT_SUPPORTED)
    return KmipError(reason, f"the answer would carry {what}, which KMIP {version[0]}.{version[1]} does not "
                             "define; ask with a later protocol version")
