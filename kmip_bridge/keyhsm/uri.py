"""PKCS #11 URIs (RFC 7512): ``pkcs11:token=kmip-bridge;object=default?module-path=/usr/lib/x.so``.

The config names the token and the KEK with one such URI (``keyhsm.uri``), as HSM vendors' tools
and p11-kit do. Parsing is strict, because a typo in a config must stop start-up rather than
select another token: every attribute is one of RFC 7512's (or a vendor ``x-`` one), appears at
most once, holds only the characters the RFC's grammar allows there (anything else
percent-encoded), and ``pin-value`` / ``pin-source`` exclude each other. Values are
percent-decoded; ``id`` is raw bytes, every other value UTF-8 text.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

SCHEME = "pkcs11:"

PATH_ATTRIBUTES = frozenset({
    "token", "manufacturer", "serial", "model", "object", "type", "id",
    "library-manufacturer", "library-description", "library-version",
    "slot-manufacturer", "slot-description", "slot-id",
})
QUERY_ATTRIBUTES = frozenset({"pin-source", "pin-value", "module-name", "module-path"})
OBJECT_TYPES = frozenset({"public", "private", "cert", "secret-key", "data"})

# RFC 7512 section 2.3: characters a value may hold without percent-encoding.
_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")
_RES_AVAIL = set(":[]@!$'()*+,=")
_PATH_CHARS = _UNRESERVED | _RES_AVAIL | {"&"}
_QUERY_CHARS = _UNRESERVED | _RES_AVAIL | {"/", "?", "|"}
_VENDOR_NAME = re.compile(r"x-[A-Za-z0-9_-]+")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")


class Pkcs11UriError(ValueError):
    """What is wrong with a PKCS #11 URI, and where."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed URI: decoded path and query attributes (``id`` as bytes, others as text)."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    id: bytes | None = None

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    @property
    def type(self) -> str | None:
        return self.path.get("type")

    @property
    def module_path(self) -> str | None:
        return self.query.get("module-path")

    @property
    def pin_source(self) -> str | None:
        return self.query.get("pin-source")

    @property
    def pin_value(self) -> str | None:
        return self.query.get("pin-value")

    def __repr__(self) -> str:  # never print a PIN given in the URI
        query = {k: ("***" if k == "pin-value" else v) for k, v in self.query.items()}
        return f"Pkcs11Uri(path={self.path!r}, query={query!r}, id={self.id!r})"


def parse(text: str) -> Pkcs11Uri:
    """Parses ``text``; raises Pkcs11UriError naming the offending part."""
    if not isinstance(text, str) or text[: len(SCHEME)].lower() != SCHEME:
        raise Pkcs11UriError("must start with 'pkcs11:' (RFC 7512)")
    rest = text[len(SCHEME):]
    if "#" in rest:
        raise Pkcs11UriError("a PKCS #11 URI has no fragment: percent-encode '#' as %23")
    path_part, sep, query_part = rest.partition("?")
    path = _attributes(path_part, ";", _PATH_CHARS, "path")
    query = _attributes(query_part, "&", _QUERY_CHARS, "query") if sep else {}
    for name in path:
        if name not in PATH_ATTRIBUTES and not _VENDOR_NAME.fullmatch(name):
            raise Pkcs11UriError(
                f"unknown path attribute '{name}' (expected one of {', '.join(sorted(PATH_ATTRIBUTES))}, "
                "or a vendor attribute x-NAME)"
            )
    for name in query:
        if name in PATH_ATTRIBUTES:
            raise Pkcs11UriError(f"'{name}' is a path attribute: put it before the '?'")
        if name not in QUERY_ATTRIBUTES and not _VENDOR_NAME.fullmatch(name):
            raise Pkcs11UriError(
                f"unknown query attribute '{name}' (expected one of {', '.join(sorted(QUERY_ATTRIBUTES))}, "
                "or a vendor attribute x-NAME)"
            )
    if "pin-source" in query and "pin-value" in query:
        raise Pkcs11UriError("pin-source and pin-value exclude each other: give one")
    raw_id = path.pop("id", None)
    texts = {name: _text(name, value) for name, value in path.items()}
    if "type" in texts and texts["type"] not in OBJECT_TYPES:
        raise Pkcs11UriError(f"type={texts['type']}: must be one of {', '.join(sorted(OBJECT_TYPES))}")
    for name in ("slot-id",):
        if name in texts and not texts[name].isdigit():
            raise Pkcs11UriError(f"{name}={texts[name]}: must be a decimal number")
    if "library-version" in texts and not re.fullmatch(r"\d+(\.\d+)?", texts["library-version"]):
        raise Pkcs11UriError(f"library-version={texts['library-version']}: must be M or M.N")
    queries = {name: _text(name, value) for name, value in query.items()}
    if "module-path" in queries and not queries["module-path"].startswith("/"):
        raise Pkcs11UriError(f"module-path={queries['module-path']}: must be an absolute path")
    return Pkcs11Uri(path=texts, query=queries, id=raw_id)


def _attributes(part: str, separator: str, allowed: set[str], where: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if part == "":
        return out
    for component in part.split(separator):
        name, eq, value = component.partition("=")
        if not eq or not name:
            raise Pkcs11UriError(f"{where} attribute '{component}' is not NAME=VALUE")
        if name in out:
            raise Pkcs11UriError(f"attribute '{name}' appears more than once")
        out[name] = _decode(name, value, allowed)
    return out


def _decode(name: str, value: str, allowed: set[str]) -> bytes:
    bad = next((c for c in _PCT.sub("", value) if c not in allowed), None)
    if bad is not None:
        shown = "a space" if bad == " " else repr(bad)
        raise Pkcs11UriError(
            f"{name}: {shown} must be percent-encoded (as %{ord(bad):02X})" if ord(bad) < 128
            else f"{name}: non-ASCII characters must be percent-encoded (UTF-8 bytes as %XX)"
        )
    return unquote_to_bytes(value)


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Pkcs11UriError(f"{name}: the percent-decoded value is not UTF-8 text") from None
