"""Attributes on the wire: KMIP 1.x ``Attribute`` structures and KMIP 2.x tagged attributes.

Inside the server an attribute is always ``Attribute(name, index, value)`` where ``value`` is an
Item tagged Attribute Value; this module converts between that and both wire forms.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmip.core.enums import AttributeType, Tags
from kmip.core.enums import Tags as T

from . import ttlv
from .errors import invalid_field
from .ttlv import Item, Type

_NAME_BY_TAG: dict[int, str] = {}
_TAG_BY_NAME: dict[str, int] = {}
for _a in AttributeType:
    _key = _a.name
    if _key in Tags.__members__:
        _NAME_BY_TAG[Tags[_key].value] = _a.value
        _TAG_BY_NAME[_a.value] = Tags[_key].value
# KMIP 1.4 spells it "PKCS#12 Friendly Name"; PyKMIP's AttributeType lacks it.
_NAME_BY_TAG[Tags.PKCS12_FRIENDLY_NAME.value] = "PKCS#12 Friendly Name"
_TAG_BY_NAME["PKCS#12 Friendly Name"] = Tags.PKCS12_FRIENDLY_NAME.value


def is_custom(name: str) -> bool:
    return name.startswith(("x-", "y-"))


def tag_for(name: str) -> int | None:
    tag = _TAG_BY_NAME.get(name)
    if tag is None and not is_custom(name):
        key = name.upper().replace(" ", "_").replace(".", "_").replace("-", "_")
        member = Tags.__members__.get(key)
        tag = member.value if member is not None else None
    return tag


# Words KMIP spells in capitals inside attribute names (Certificate Subject CN, ...).
_ACRONYMS = frozenset({"CN", "OU", "ST", "UID", "DC", "DN", "ID", "URI", "PKCS", "MAC", "IV", "RNG"})


def _word(word: str) -> str:
    return word if word in _ACRONYMS else word.title()


def name_for(tag: int) -> str | None:
    name = _NAME_BY_TAG.get(tag)
    if name is None:
        try:
            name = " ".join(_word(w) for w in Tags(tag).name.split("_"))
        except ValueError:
            return None
    return name


@dataclass
class Attribute:
    name: str
    value: Item
    index: int = 0


def _as_value(item: Item) -> Item:
    return Item(T.ATTRIBUTE_VALUE.value, item.type, item.value)


def parse_v1(item: Item) -> Attribute:
    """A 1.x Attribute structure (also used by 2.x for custom attributes)."""
    if item.type != Type.STRUCTURE:
        raise invalid_field("Attribute must be a structure")
    name = _vendor_name(item)
    index = item.value_of(T.ATTRIBUTE_INDEX.value, 0)
    value = item.get(T.ATTRIBUTE_VALUE.value)
    if value is None:
        raise invalid_field(f"attribute '{name}' has no Attribute Value")
    return Attribute(name, value, index if isinstance(index, int) else 0)


def _vendor_name(item: Item) -> str:
    """Attribute Name, prefixed as in 1.x when a 2.x Vendor Identification accompanies it: the
    2.x vendor attribute (x, "ID") is the 1.x custom attribute "x-ID"."""
    name = item.value_of(T.ATTRIBUTE_NAME.value)
    if not isinstance(name, str):
        raise invalid_field("Attribute has no Attribute Name")
    vendor = item.value_of(T.VENDOR_IDENTIFICATION.value)
    if vendor is None:
        return name
    if not isinstance(vendor, str) or not vendor:
        raise invalid_field("Vendor Identification must be text")
    return f"{vendor}-{name}"


def _vendor_parts(name: str) -> list[Item]:
    """The 2.x Vendor Identification / Attribute Name pair of a custom attribute."""
    vendor, _, rest = name.partition("-")
    return [ttlv.text(T.VENDOR_IDENTIFICATION, vendor), ttlv.text(T.ATTRIBUTE_NAME, rest)]


def reference_v2(name: str) -> Item:
    """A 2.x Attribute Reference: the attribute's tag, or vendor and name for custom ones."""
    tag = tag_for(name)
    if tag is not None:
        return Item(T.ATTRIBUTE_REFERENCE.value, Type.ENUMERATION, tag)
    parts = _vendor_parts(name) if is_custom(name) else [ttlv.text(T.ATTRIBUTE_NAME, name)]
    return ttlv.struct_(T.ATTRIBUTE_REFERENCE, parts)


def parse_v2(item: Item) -> Attribute:
    """One child of a 2.x Attributes structure."""
    if item.tag == T.ATTRIBUTE.value:
        return parse_v1(item)
    name = name_for(item.tag)
    if name is None:
        raise invalid_field(f"unknown attribute tag 0x{item.tag:06X}")
    return Attribute(name, _as_value(item))


def parse_names_v2(item: Item) -> str:
    """A 2.x Attribute Reference (by tag) as an attribute name."""
    if item.tag == T.ATTRIBUTE_REFERENCE.value and item.type == Type.STRUCTURE:
        return _vendor_name(item)
    if item.type == Type.ENUMERATION:
        name = name_for(item.value)  # type: ignore[arg-type]
        if name:
            return name
    raise invalid_field("unrecognised Attribute Reference")


def to_v1(attr: Attribute, with_index: bool = True) -> Item:
    children = [ttlv.text(T.ATTRIBUTE_NAME, attr.name)]
    if with_index and attr.index:
        children.append(ttlv.integer(T.ATTRIBUTE_INDEX, attr.index))
    children.append(attr.value)
    return ttlv.struct_(T.ATTRIBUTE, children)


def to_v2(attr: Attribute) -> Item:
    tag = tag_for(attr.name)
    if tag is None:
        parts = _vendor_parts(attr.name) if is_custom(attr.name) else [ttlv.text(T.ATTRIBUTE_NAME, attr.name)]
        return ttlv.struct_(T.ATTRIBUTE, [*parts, attr.value])
    return Item(tag, attr.value.type, attr.value.value)


# -- types -------------------------------------------------------------------------------------------
S, N, E, B, X, Y, D, V = (Type.STRUCTURE, Type.INTEGER, Type.ENUMERATION, Type.BOOLEAN, Type.TEXT_STRING,
                          Type.BYTE_STRING, Type.DATE_TIME, Type.INTERVAL)
# The TTLV type of every standard attribute's value (KMIP 1.4 §3, KMIP 2.1 §4). A value of another
# type is refused where clients give attributes, before it is stored: a Sensitive given as an
# Integer, or a non-Integer Cryptographic Usage Mask, would otherwise be read two ways.
TYPES: dict[str, Type] = {
    "Unique Identifier": X, "Name": S, "Object Type": E, "Cryptographic Algorithm": E,
    "Cryptographic Length": N, "Cryptographic Parameters": S, "Cryptographic Domain Parameters": S,
    "Certificate Type": E, "Certificate Length": N, "X.509 Certificate Identifier": S,
    "X.509 Certificate Subject": S, "X.509 Certificate Issuer": S, "Certificate Identifier": S,
    "Certificate Subject": S, "Certificate Issuer": S, "Digital Signature Algorithm": E, "Digest": S,
    "Operation Policy Name": X, "Cryptographic Usage Mask": N, "Lease Time": V, "Usage Limits": S,
    "State": E, "Initial Date": D, "Activation Date": D, "Process Start Date": D, "Protect Stop Date": D,
    "Deactivation Date": D, "Destroy Date": D, "Compromise Occurrence Date": D, "Compromise Date": D,
    "Revocation Reason": S, "Archive Date": D, "Object Group": X, "Fresh": B, "Link": S,
    "Application Specific Information": S, "Contact Information": X, "Last Change Date": D,
    "Alternative Name": S, "Key Value Present": B, "Key Value Location": S, "Original Creation Date": D,
    "Sensitive": B, "Always Sensitive": B, "Extractable": B, "Never Extractable": B,
    # KMIP 1.3 / 2.x additions
    "Random Number Generator": S, "PKCS#12 Friendly Name": X, "Description": X, "Comment": X,
    "Quantum Safe": B, "Key Format Type": E, "Protection Storage Mask": N, "Short Unique Identifier": Y,
    "Opaque Data Type": E, "Object Group Member": E, "NIST Key Type": E, "Protection Level": E,
    "Protection Period": V, "Recommended Curve": E, "Rotate Interval": V, "Rotate Automatic": B,
    "Rotate Offset": V, "Rotate Date": D, "Rotate Generation": N, "Rotate Name": X, "Rotate Latest": B,
    **{f"Certificate {who} {part}": X for who in ("Subject", "Issuer")
       for part in ("CN", "O", "OU", "Email", "C", "ST", "L", "UID", "Serial Number", "Title", "DC",
                    "DN Qualifier")},
}
_MAX = {Type.INTEGER: 2**31 - 1, Type.INTERVAL: 2**32 - 1}
_MIN = {Type.INTEGER: 0, Type.INTERVAL: 0}


def type_problem(attr: Attribute) -> str | None:
    """Why ``attr``'s value does not fit its definition, or None. Custom (x-/y-) attributes take
    any type; names no KMIP version defines are left to the caller (refused where it matters)."""
    expected = TYPES.get(attr.name)
    if expected is None:
        return None
    value = attr.value
    if value.type != expected:
        return f"attribute '{attr.name}' must be of type {expected.name.replace('_', ' ').title()}"
    if expected in _MAX and isinstance(value.value, int) and not _MIN[expected] <= value.value <= _MAX[expected]:
        return f"attribute '{attr.name}' is out of range"
    return None
