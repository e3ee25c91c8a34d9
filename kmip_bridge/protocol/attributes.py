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


def is_custom(name: str) -> bool:
    return name.startswith(("x-", "y-"))


def tag_for(name: str) -> int | None:
    tag = _TAG_BY_NAME.get(name)
    if tag is None and not is_custom(name):
        key = name.upper().replace(" ", "_").replace(".", "_").replace("-", "_")
        member = Tags.__members__.get(key)
        tag = member.value if member is not None else None
    return tag


def name_for(tag: int) -> str | None:
    name = _NAME_BY_TAG.get(tag)
    if name is None:
        try:
            name = Tags(tag).name.replace("_", " ").title()
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
    name = item.value_of(T.ATTRIBUTE_NAME.value)
    if not isinstance(name, str):
        raise invalid_field("Attribute has no Attribute Name")
    index = item.value_of(T.ATTRIBUTE_INDEX.value, 0)
    value = item.get(T.ATTRIBUTE_VALUE.value)
    if value is None:
        raise invalid_field(f"attribute '{name}' has no Attribute Value")
    return Attribute(name, value, index if isinstance(index, int) else 0)


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
        name = item.value_of(T.ATTRIBUTE_NAME.value)
        if isinstance(name, str):
            return name
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
        return ttlv.struct_(
            T.ATTRIBUTE,
            [ttlv.text(T.ATTRIBUTE_NAME, attr.name), attr.value],
        )
    return Item(tag, attr.value.type, attr.value.value)
