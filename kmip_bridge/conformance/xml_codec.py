"""KMIP XML encoding (KMIP Profiles, "XML Encoding") <-> TTLV :class:`Item` trees.

Tag, enumeration and mask names are resolved against PyKMIP's ``kmip.core.enums`` through a
normalised key (lower case, alphanumerics only), so the vectors' CamelCase spellings ("IVCounterNonce",
"PKCS_11Function", "SHA_256", "UninterpretedTextString") need no hand tables; ``_NAME_EXCEPTIONS`` and
``_ENUM_CLASS_ALIASES`` hold the few spellings and value sets that do not match PyKMIP's names.

Values of the form ``$NAME``/``$NOW-3600`` become :class:`Placeholder` values inside the Items;
requests are made concrete at send time (:func:`kmip_bridge.conformance.compare.substitute`) and
responses keep them as a template for :func:`kmip_bridge.conformance.compare.compare`.
"""

from __future__ import annotations

import enum
import inspect
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

from kmip.core import enums
from kmip.core.enums import Tags

from ..protocol.ttlv import Item, Type

Template = Item  # an Item whose leaf values may be Placeholders


@dataclass(frozen=True)
class Placeholder:
    """A value the vector cannot know: ``$UNIQUE_IDENTIFIER_0``, ``$NOW``, ``$NOW-3600``..."""

    name: str
    offset: int = 0  # seconds, only for NOW

    @property
    def is_now(self) -> bool:
        return self.name == "NOW"

    def __str__(self) -> str:
        return f"${self.name}{self.offset:+d}" if self.offset else f"${self.name}"


class XmlCodecError(ValueError):
    """A vector element that cannot be turned into TTLV."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# -- names ------------------------------------------------------------------------------------------
# Words the XML profile keeps in upper case when it joins a spec name ("IV Counter Nonce" -> IVCounterNonce).
_ACRONYMS = {
    "IV", "RNG", "MAC", "CRT", "CN", "ID", "DSA", "RSA", "ECDSA", "DH", "ECDH", "ECMQV", "PGP", "OAEP",
    "PSS", "NIST", "KMIP", "URI", "DN", "EC", "CRL", "OCSP", "PKCS", "TLS", "AES", "DES", "HMAC", "SHA",
    "CBC", "ECB", "GCM", "CTR", "CFB", "OFB", "XTS", "AEAD", "CCM", "CMAC", "KDF", "ANSI", "FIPS", "DRBG",
    "UUID", "OK", "SP", "IDEA", "RC2", "RC4", "RC5", "ECC", "CMS", "PEM", "XML", "JSON",
    "TTLV", "HTTPS", "DER", "KEK", "TDEA", "CMC", "CRMF", "SSL", "IKE", "SSH", "RFC", "ASN", "OID", "PIN",
}
# Spec spellings the generic rule gets wrong, by PyKMIP member name; used in both directions.
_NAME_EXCEPTIONS = {
    "ANSI_X931": "ANSIX9_31",
    "OPAQUE_DATA": "OpaqueObject",  # ObjectType: PyKMIP's name for the spec's "Opaque Object"
    "P_SOURCE": "PSource",
    "CHACHA20": "ChaCha20",
    "CHACHA20_POLY1305": "ChaCha20Poly1305",
    "RECERTIFY": "ReCertify",
    "REKEY": "ReKey",
    "REKEY_KEY_PAIR": "ReKeyKeyPair",
    "TRIPLE_DES": "DES3",
}


def camel(upper_snake: str) -> str:
    """PyKMIP member name -> XML profile spelling (SYMMETRIC_KEY -> SymmetricKey, SHA_256 -> SHA_256,
    PKCS_11_FUNCTION -> PKCS_11Function, HMAC_SHA256 -> HMAC_SHA256, C_INITIALIZE -> C_Initialize)."""
    if upper_snake in _NAME_EXCEPTIONS:
        return _NAME_EXCEPTIONS[upper_snake]
    out, prev_upper, prev_single = "", False, False
    for i, w in enumerate(upper_snake.split("_")):
        upper = w in _ACRONYMS or any(c.isdigit() for c in w) or len(w) == 1
        # "_" survives only where dropping it would merge two upper-case runs or digits.
        if i and (w[0].isdigit() or prev_single or (upper and prev_upper)):
            out += "_"
        out += ("PKCS_11" if w == "PKCS11" else w) if upper else w.capitalize()  # "PKCS#11 ..."
        prev_upper, prev_single = upper, len(w) == 1
    return out


_TAG_BY_KEY = {_key(n): m.value for n, m in Tags.__members__.items()}


def tag_to_name(tag: int) -> str:
    try:
        return camel(Tags(tag).name)
    except ValueError:
        return f"TAG0x{tag:06X}"


def name_to_tag(name: str, tag_attr: str | None = None) -> int:
    if tag_attr:
        return int(tag_attr, 16)
    m = re.fullmatch(r"(?:TAG)?0x([0-9A-Fa-f]{6})", name)
    if m:
        return int(m.group(1), 16)
    try:
        return _TAG_BY_KEY[_key(name)]
    except KeyError:
        raise XmlCodecError(f"unknown tag name {name!r}") from None


# -- enumerations and masks --------------------------------------------------------------------------
_ENUM_CLASSES: dict[str, type[enum.Enum]] = {
    _key(n): c for n, c in inspect.getmembers(enums, inspect.isclass) if issubclass(c, enum.Enum)
}
for _bogus in ("tags", "types", "orderedenum", "data", "uniqueidentifier"):
    # Not the value set of the tag of that name (Data and Unique Identifier are bytes/text on the wire).
    _ENUM_CLASSES.pop(_bogus, None)
# PyKMIP 0.11 has only placeholders for the KMIP 2.x PKCS#11 value sets: the function is its 1-based
# position in PKCS#11 v2.40's CK_FUNCTION_LIST, the return code a CK_RV (only CKR_OK in the vectors).
_PKCS11_FUNCTIONS = (
    "Initialize Finalize GetInfo GetFunctionList GetSlotList GetSlotInfo GetTokenInfo GetMechanismList "
    "GetMechanismInfo InitToken InitPIN SetPIN OpenSession CloseSession CloseAllSessions GetSessionInfo "
    "GetOperationState SetOperationState Login Logout CreateObject CopyObject DestroyObject GetObjectSize "
    "GetAttributeValue SetAttributeValue FindObjectsInit FindObjects FindObjectsFinal EncryptInit Encrypt "
    "EncryptUpdate EncryptFinal DecryptInit Decrypt DecryptUpdate DecryptFinal DigestInit Digest DigestUpdate "
    "DigestKey DigestFinal SignInit Sign SignUpdate SignFinal SignRecoverInit SignRecover VerifyInit Verify "
    "VerifyUpdate VerifyFinal VerifyRecoverInit VerifyRecover DigestEncryptUpdate DecryptDigestUpdate "
    "SignEncryptUpdate DecryptVerifyUpdate GenerateKey GenerateKeyPair WrapKey UnwrapKey DeriveKey SeedRandom "
    "GenerateRandom GetFunctionStatus CancelFunction WaitForSlotEvent"
).split()
_ENUM_CLASSES["pkcs11function"] = enum.IntEnum(  # type: ignore[assignment]
    "PKCS11Function",
    {"C_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", f).upper(): i for i, f in enumerate(_PKCS11_FUNCTIONS, 1)},
)
_ENUM_CLASSES["pkcs11returncode"] = enum.IntEnum("PKCS11ReturnCode", {"OK": 0})  # type: ignore[assignment]
_ENUM_CLASS_ALIASES: dict[str, type[enum.Enum]] = {
    "maskgeneratorhashingalgorithm": enums.HashingAlgorithm,
    "attributereference": Tags,  # KMIP 2.x: an enumeration whose values are the attributes' tags
}


def enum_class(tag: int, attribute_name: str | None) -> type[enum.Enum] | None:
    """The value set of an Enumeration/mask element; an AttributeValue takes the one of its
    sibling AttributeName ("Cryptographic Algorithm" -> CryptographicAlgorithm)."""
    if tag == Tags.ATTRIBUTE_VALUE.value and attribute_name:
        k = _key(attribute_name)
    else:
        try:
            k = _key(Tags(tag).name)
        except ValueError:
            return None
    return _ENUM_CLASS_ALIASES.get(k) or _ENUM_CLASSES.get(k)


_MEMBER_CACHE: dict[type[enum.Enum], tuple[dict[str, int], dict[int, str]]] = {}


def _member_maps(cls: type[enum.Enum]) -> tuple[dict[str, int], dict[int, str]]:
    cached = _MEMBER_CACHE.get(cls)
    if cached is None:
        by_key: dict[str, int] = {}
        by_value: dict[int, str] = {}
        for n, m in cls.__members__.items():
            by_key[_key(n)] = int(m.value)
            by_key.setdefault(_key(camel(n)), int(m.value))
        for m in cls:  # canonical members only: aliases would shadow the first name
            by_value.setdefault(int(m.value), camel(m.name))
        cached = _MEMBER_CACHE[cls] = (by_key, by_value)
    return cached


def parse_enum(text: str, cls: type[enum.Enum] | None, where: str) -> int:
    if text.lower().startswith("0x"):
        return int(text, 16)
    if cls is not None:
        v = _member_maps(cls)[0].get(_key(text))
        if v is not None:
            return v
    raise XmlCodecError(f"{where}: unknown enumeration value {text!r}")


def parse_int(text: str, cls: type[enum.Enum] | None, where: str) -> int:
    """Integers are decimal, 0x hex, or (for masks) space-separated flag names."""
    t = text.strip()
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if t.lower().startswith("0x"):
        return int(t, 16)
    if cls is None:
        raise XmlCodecError(f"{where}: integer {text!r} has no mask type")
    return _or_flags(t.replace("|", " ").split(), cls, where)


def _or_flags(names: list[str], cls: type[enum.Enum], where: str) -> int:
    value = 0
    for n in names:
        value |= parse_enum(n, cls, where)
    return value


def enum_to_text(value: int, cls: type[enum.Enum] | None) -> str:
    if cls is not None:
        name = _member_maps(cls)[1].get(value)
        if name is not None:
            return name
    return f"0x{value:08X}"


def mask_to_text(value: int, cls: type[enum.Enum]) -> str:
    names, rest = [], value
    for flag, name in sorted(_member_maps(cls)[1].items()):
        if flag and value & flag == flag and flag & (flag - 1) == 0:
            names.append(name)
            rest &= ~flag
    return " ".join(names) if names and not rest else str(value)


# -- XML -> Item ------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$([A-Z][A-Z0-9_]*?)(?:([+-]\d+))?")


def _parse_placeholder(text: str) -> Placeholder | None:
    m = _PLACEHOLDER.fullmatch(text)
    if not m:
        return None
    if m.group(2) and m.group(1) != "NOW":
        return None
    return Placeholder(m.group(1), int(m.group(2) or 0))


def _int(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text, 10)


def _datetime(text: str, scale: int) -> int:
    """ISO 8601 (offsets honoured, naive = UTC) or a number -> POSIX seconds times ``scale``."""
    if re.fullmatch(r"-?\d+|0x[0-9A-Fa-f]+", text):
        return _int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * scale + delta.microseconds * scale // 1_000_000


def _scalar(t: Type, text: str, tag: int, attribute_name: str | None, where: str) -> object:
    if t == Type.INTEGER:
        return parse_int(text, enum_class(tag, attribute_name), where)
    if t == Type.ENUMERATION:
        return parse_enum(text, enum_class(tag, attribute_name), where)
    if t in (Type.LONG_INTEGER, Type.INTERVAL):
        return _int(text)
    if t == Type.BIG_INTEGER:
        digits = text[2:] if text.lower().startswith("0x") else text
        return int.from_bytes(bytes.fromhex(digits), "big", signed=True) if digits else 0
    if t == Type.BOOLEAN:
        if text.lower() not in ("true", "false", "0", "1"):
            raise XmlCodecError(f"{where}: boolean {text!r}")
        return text.lower() in ("true", "1")
    if t == Type.TEXT_STRING:
        return text
    if t == Type.BYTE_STRING:
        return bytes.fromhex(text)
    return _datetime(text, 1 if t == Type.DATE_TIME else 1_000_000)  # DateTimeExtended: microseconds


_TYPE_BY_KEY = {_key(t.name): t for t in Type}


def element_to_item(el: ET.Element, attribute_name: str | None = None, path: str = "") -> Item:
    tag = name_to_tag(el.tag, el.get("tag"))
    where = f"{path}/{el.tag}"
    type_name = el.get("type", "Structure")
    t = _TYPE_BY_KEY.get(_key(type_name))
    if t is None:
        raise XmlCodecError(f"{where}: unknown type {type_name!r}")
    if t == Type.STRUCTURE:
        children, sibling_name = [], None
        for child in el:
            item = element_to_item(child, sibling_name, where)
            if item.tag == Tags.ATTRIBUTE_NAME.value and isinstance(item.value, str):
                sibling_name = item.value
            children.append(item)
        return Item(tag, t, children)
    text = el.get("value", "")
    ph = _parse_placeholder(text)
    if ph is not None:
        return Item(tag, t, ph)
    try:
        return Item(tag, t, _scalar(t, text, tag, attribute_name, where))
    except ValueError as exc:
        raise XmlCodecError(f"{where}: bad {type_name} value {text!r}: {exc}") from exc


def parse_string(xml: str) -> list[tuple[Item, Template]]:
    return _pairs(ET.fromstring(xml), "<string>")


def parse_file(path: str | Path) -> list[tuple[Item, Template]]:
    """(request, expected response template) pairs, in file order."""
    return _pairs(ET.parse(path).getroot(), str(path))


def _pairs(root: ET.Element, origin: str) -> list[tuple[Item, Template]]:
    messages = [element_to_item(el) for el in root] if root.tag == "KMIP" else [element_to_item(root)]
    kinds = [m.tag for m in messages]
    want = [Tags.REQUEST_MESSAGE.value, Tags.RESPONSE_MESSAGE.value] * (len(messages) // 2)
    if len(messages) % 2 or kinds != want:
        raise XmlCodecError(f"{origin}: expected alternating RequestMessage/ResponseMessage")
    return [(messages[i], messages[i + 1]) for i in range(0, len(messages), 2)]


# -- Item -> XML ------------------------------------------------------------------------------------
def to_xml(item: Item, indent: str = "") -> str:
    """The Item in the vectors' XML form (for diagnostics); parses back to an equal Item."""
    lines: list[str] = []
    _emit(item, indent, None, lines)
    return "\n".join(lines)


def _emit(item: Item, indent: str, attribute_name: str | None, lines: list[str]) -> None:
    name = tag_to_name(item.tag)
    open_ = name if not name.startswith("TAG0x") else f'TTLV tag="0x{item.tag:06X}"'
    close = name if not name.startswith("TAG0x") else "TTLV"
    if item.type == Type.STRUCTURE:
        children = item.value
        if not children:
            lines.append(f"{indent}<{open_}/>")
            return
        lines.append(f"{indent}<{open_}>")
        sibling = None
        for child in children:  # type: ignore[union-attr]
            _emit(child, indent + "  ", sibling, lines)
            if child.tag == Tags.ATTRIBUTE_NAME.value and isinstance(child.value, str):
                sibling = child.value
        lines.append(f"{indent}</{close}>")
        return
    type_name = xml_type_name(item.type)
    text = value_to_text(item, attribute_name)
    lines.append(f"{indent}<{open_} type={quoteattr(type_name)} value={quoteattr(text)}/>")


def xml_type_name(type_: int) -> str:
    return "".join(w.capitalize() for w in Type(type_).name.split("_"))  # DATE_TIME -> DateTime


def value_to_text(item: Item, attribute_name: str | None = None) -> str:
    v, t = item.value, item.type
    if isinstance(v, Placeholder):
        return str(v)
    if t == Type.ENUMERATION:
        return enum_to_text(v, enum_class(item.tag, attribute_name))  # type: ignore[arg-type]
    if t == Type.INTEGER:
        cls = enum_class(item.tag, attribute_name)
        return mask_to_text(v, cls) if cls is not None else str(v)  # type: ignore[arg-type]
    if t == Type.BOOLEAN:
        return "true" if v else "false"
    if t == Type.BYTE_STRING:
        return v.hex()  # type: ignore[union-attr]
    if t == Type.BIG_INTEGER:
        n: int = v  # type: ignore[assignment]
        size = max(8, (n.bit_length() + 8 + 63) // 64 * 8)
        return n.to_bytes(size, "big", signed=True).hex()
    if t == Type.DATE_TIME:
        return datetime.fromtimestamp(v, UTC).isoformat()  # type: ignore[arg-type]
    if t == Type.DATE_TIME_EXTENDED:
        secs, micros = divmod(v, 1_000_000)  # type: ignore[operator]
        return datetime.fromtimestamp(secs, UTC).replace(microsecond=micros).isoformat()
    return str(v)
