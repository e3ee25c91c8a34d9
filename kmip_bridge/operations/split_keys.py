"""Create Split Key and Join Split Key (KMIP 1.2+): a key split into N Split Key objects of which
any M (the threshold) give it back.

Methods: XOR (M = N: every part needed), polynomial sharing over GF(2^8) (Shamir's scheme byte by
byte, the AES field x^8+x^4+x^3+x+1) and over GF(2^16) (16-bit word by word, see GF16 below), and
over a prime field (the key as one integer below the client's Prime Field Size).
Each part records its Key Part Identifier (its x coordinate, 1..N) and a Parent Link to the key it
was split from, when that key is stored here.
"""

from __future__ import annotations

import secrets
from functools import reduce

from kmip.core.enums import KeyFormatType, LinkType, ObjectType, ResultReason, SecretDataType
from kmip.core.enums import SplitKeyMethod as M
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, invalid_field, missing
from ..protocol.ttlv import Item, Type
from ..store import ObjectRow
from . import export, formats, keys, objects
from .context import RequestContext

MAX_PARTS = 255  # GF(2^8) has 255 non-zero x coordinates
_JOINABLE = frozenset({ObjectType.SYMMETRIC_KEY.value, ObjectType.SECRET_DATA.value})


# -- arithmetic -------------------------------------------------------------------------------------
# Binary fields: (bits, reduction polynomial). GF(2^8) is the AES field x^8+x^4+x^3+x+1; GF(2^16)
# uses x^16+x^12+x^3+x+1, a primitive polynomial (tests/unit/test_split_fields.py checks both). KMIP
# names neither polynomial nor how key bytes map to field elements: here a GF(2^16) element is two
# key bytes, big-endian, so the key must be a whole number of 16-bit words.
GF8 = (8, 0x11B)
GF16 = (16, 0x1100B)
Field = tuple[int, int]
_BINARY_FIELDS = {M.POLYNOMIAL_SHARING_GF_2_8.value: GF8, M.POLYNOMIAL_SHARING_GF_2_16.value: GF16}


def _gf_mul(a: int, b: int, field: Field = GF8) -> int:
    bits, poly = field
    top = 1 << (bits - 1)
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = (a << 1) ^ (poly if a & top else 0)
        b >>= 1
    return out


def _gf_inv(a: int, field: Field = GF8) -> int:
    """a^(2^bits - 2) = a^-1 (square and multiply)."""
    out, e = 1, (1 << field[0]) - 2
    while e:
        if e & 1:
            out = _gf_mul(out, a, field)
        a, e = _gf_mul(a, a, field), e >> 1
    return out


def _gf_eval(coefficients: list[int], x: int, field: Field = GF8) -> int:
    out = 0
    for c in reversed(coefficients):
        out = _gf_mul(out, x, field) ^ c
    return out


def _words(data: bytes, field: Field) -> list[int]:
    width = field[0] // 8
    return [int.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]


def _gf_split(secret: bytes, n: int, m: int, field: Field = GF8) -> list[bytes]:
    width = field[0] // 8
    if len(secret) % width:
        raise invalid_field(f"polynomial sharing over GF(2^{field[0]}) splits {field[0]}-bit words: "
                            "the key length must be a multiple of that")
    shares = [bytearray() for _ in range(n)]
    for word in _words(secret, field):
        poly = [word, *(secrets.randbelow(1 << field[0]) for _ in range(m - 1))]
        for i in range(n):
            shares[i] += _gf_eval(poly, i + 1, field).to_bytes(width, "big")
    return [bytes(s) for s in shares]


def _gf_join(parts: dict[int, bytes], field: Field = GF8) -> bytes:
    width = field[0] // 8
    if any(len(p) % width for p in parts.values()) or len({len(p) for p in parts.values()}) != 1:
        raise invalid_field("the parts are not whole field elements of one length")
    # Lagrange coefficients at x = 0, the same for every word.
    weights = {}
    for xi in parts:
        num = den = 1
        for xj in parts:
            if xj != xi:
                num = _gf_mul(num, xj, field)
                den = _gf_mul(den, xi ^ xj, field)
        weights[xi] = _gf_mul(num, _gf_inv(den, field), field)
    columns = {xi: _words(p, field) for xi, p in parts.items()}
    out = bytearray()
    for k in range(len(next(iter(columns.values())))):
        value = 0
        for xi, w in weights.items():
            value ^= _gf_mul(columns[xi][k], w, field)
        out += value.to_bytes(width, "big")
    return bytes(out)


def _probably_prime(p: int) -> bool:
    if p < 4:
        return p in (2, 3)
    d, r = p - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if a % p == 0:
            continue
        x = pow(a, d, p)
        if x in (1, p - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, p)
            if x == p - 1:
                break
        else:
            return False
    return True


def _prime_split(secret: bytes, n: int, m: int, p: int) -> list[bytes]:
    s = int.from_bytes(secret, "big")
    if s >= p:
        raise invalid_field("the key does not fit below the Prime Field Size")
    poly = [s, *(secrets.randbelow(p) for _ in range(m - 1))]
    width = (p.bit_length() + 7) // 8
    return [(sum(c * pow(x, e, p) for e, c in enumerate(poly)) % p).to_bytes(width, "big") for x in range(1, n + 1)]


def _prime_join(parts: dict[int, bytes], p: int, length: int) -> bytes:
    s = 0
    for xi, yb in parts.items():
        num = den = 1
        for xj in parts:
            if xj != xi:
                num, den = num * -xj % p, den * (xi - xj) % p
        s = (s + int.from_bytes(yb, "big") * num * pow(den, -1, p)) % p
    return s.to_bytes(length, "big")


def _xor(chunks: list[bytes]) -> bytes:
    return bytes(reduce(lambda a, b: a ^ b, column) for column in zip(*chunks, strict=True))


# -- Create Split Key -------------------------------------------------------------------------------
def _int_field(payload: Item, tag: T) -> int:
    value = payload.value_of(tag.value)
    if value is None:
        raise missing(f"Create Split Key needs {tag.name.replace('_', ' ').title()}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_field(f"{tag.name.replace('_', ' ').title()} must be an integer")
    return value


def _split_part(method: int, n: int, m: int, index: int, prime: int | None, share: bytes,
                algorithm: object, length: object) -> Item:
    block = [ttlv.enum(T.KEY_FORMAT_TYPE, KeyFormatType.RAW),
             ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, share)])]
    if isinstance(algorithm, int):
        block.append(ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm))
    if isinstance(length, int):
        block.append(ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length))
    return ttlv.struct_(T.SPLIT_KEY, [
        ttlv.integer(T.SPLIT_KEY_PARTS, n),
        ttlv.integer(T.KEY_PART_IDENTIFIER, index),
        ttlv.integer(T.SPLIT_KEY_THRESHOLD, m),
        ttlv.enum(T.SPLIT_KEY_METHOD, method),
        Item(T.PRIME_FIELD_SIZE.value, Type.BIG_INTEGER, prime) if prime is not None else None,
        ttlv.struct_(T.KEY_BLOCK, block),
    ])


def create_split_key(ctx: RequestContext, payload: Item) -> Item:
    n = _int_field(payload, T.SPLIT_KEY_PARTS)
    m = _int_field(payload, T.SPLIT_KEY_THRESHOLD)
    method = _int_field(payload, T.SPLIT_KEY_METHOD)
    prime = payload.value_of(T.PRIME_FIELD_SIZE.value)
    if not 2 <= n <= MAX_PARTS or not 1 <= m <= n:
        raise invalid_field(f"need 2 to {MAX_PARTS} Split Key Parts and a threshold between 1 and the parts")
    if method == M.XOR.value and m != n:
        raise invalid_field("XOR splitting needs every part: Split Key Threshold must equal Split Key Parts")
    if method == M.POLYNOMIAL_SHARING_PRIME_FIELD.value:
        if not isinstance(prime, int) or prime < 3 or not _probably_prime(prime):
            raise invalid_field("polynomial sharing over a prime field needs a prime Prime Field Size")
    elif method not in (M.XOR.value, *_BINARY_FIELDS):
        raise invalid_field("unknown Split Key Method")
    attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
    given = {a.name: a.value.value for a in attrs}
    parent = payload.value_of(T.UNIQUE_IDENTIFIER.value)
    origin: objects.Origin | None = None
    history: objects.History | None = None
    if isinstance(parent, str):  # split a key the server holds
        row = objects.load_visible(ctx, parent)
        if row.object_type not in _JOINABLE:
            raise invalid_field("only symmetric keys and secret data can be split")
        # Export rules follow the material: the parts of a Sensitive or non-Extractable key are
        # so too (else Get of every part would give the key back), and they stay the key's
        # owner's, under its KEK, whoever splits it.
        attrs, history = export.derived_protection(ctx, [export.protection(ctx, row)], attrs)
        origin = objects.origin_of(row)
        block = formats.block_of(objects.open_material(ctx, row))
        material = formats.material_of(block) if block is not None else None
        if material is None or material.type != Type.BYTE_STRING:
            raise KmipError(ResultReason.KEY_VALUE_NOT_PRESENT, "the key has no plain key material to split")
        secret: bytes = material.value  # type: ignore[assignment]
        algorithm = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value)  # type: ignore[union-attr]
        length = block.value_of(T.CRYPTOGRAPHIC_LENGTH.value)  # type: ignore[union-attr]
    else:  # a new key, made to be split
        parent = None
        algorithm, length = given.get("Cryptographic Algorithm"), given.get("Cryptographic Length")
        if not isinstance(length, int) or length < 8 or length % 8:
            raise invalid_field("a new split key needs a Cryptographic Length (bits, a multiple of 8)")
        secret = secrets.token_bytes(length // 8)
    if method == M.XOR.value:
        shares = [secrets.token_bytes(len(secret)) for _ in range(n - 1)]
        shares.append(_xor([secret, *shares]))
    elif method in _BINARY_FIELDS:
        shares = _gf_split(secret, n, m, _BINARY_FIELDS[method])
    else:
        shares = _prime_split(secret, n, m, prime)  # type: ignore[arg-type]
    uids: list[str] = []
    with ctx.services.store.unit_of_work():  # every part or none
        _store_parts(ctx, shares, attrs, algorithm, length, parent, method, n, m, prime, origin, history, uids)
    ctx.id_placeholder = None  # several objects: no single id to carry on
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, u) for u in uids])


def _store_parts(ctx: RequestContext, shares: list[bytes], attrs: list[Attribute], algorithm: object,
                 length: object, parent: str | None, method: int, n: int, m: int, prime: object,
                 origin: objects.Origin | None, history: objects.History | None, uids: list[str]) -> None:
    for i, share in enumerate(shares, start=1):
        part_attrs = [a for a in attrs if a.name not in ("Cryptographic Algorithm", "Cryptographic Length")]
        if isinstance(algorithm, int):
            part_attrs.append(Attribute("Cryptographic Algorithm", objects.value_item(Type.ENUMERATION, algorithm)))
        if isinstance(length, int):
            part_attrs.append(Attribute("Cryptographic Length", objects.value_item(Type.INTEGER, length)))
        if parent is not None:
            part_attrs.append(Attribute("Link", keys.link_value(LinkType.PARENT_LINK.value, parent)))
        obj = _split_part(method, n, m, i, prime if isinstance(prime, int) else None, share, algorithm, length)
        uids.append(objects.insert_new(ctx, ObjectType.SPLIT_KEY.value, obj, list(part_attrs),
                                       origin=origin, history=history))


# -- Join Split Key ---------------------------------------------------------------------------------
def join_split_key(ctx: RequestContext, payload: Item) -> Item:
    object_type = payload.value_of(T.OBJECT_TYPE.value)
    if object_type not in _JOINABLE:
        raise invalid_field("Join Split Key makes a Symmetric Key or Secret Data")
    uids = [u.value for u in payload.all(T.UNIQUE_IDENTIFIER.value)]
    if not uids:
        raise missing("Join Split Key needs the Unique Identifiers of the parts")
    parts: dict[int, bytes] = {}
    shape: tuple[object, ...] | None = None
    algorithm = length = None
    inputs: list[export.Protection] = []
    first: ObjectRow | None = None
    for uid in uids:
        row = objects.load_visible(ctx, uid)  # type: ignore[arg-type]
        if row.object_type != ObjectType.SPLIT_KEY.value:
            raise invalid_field("every Unique Identifier must name a Split Key")
        inputs.append(export.protection(ctx, row))
        first = first or row
        obj = objects.open_material(ctx, row)
        this = tuple(obj.value_of(t.value) for t in (T.SPLIT_KEY_PARTS, T.SPLIT_KEY_THRESHOLD,
                                                     T.SPLIT_KEY_METHOD, T.PRIME_FIELD_SIZE))
        if shape is not None and this != shape:
            raise invalid_field("the parts come from different splits")
        shape = this
        block = formats.block_of(obj)
        material = formats.material_of(block) if block is not None else None
        if material is None or material.type != Type.BYTE_STRING:
            raise KmipError(ResultReason.KEY_VALUE_NOT_PRESENT, "a part has no plain key material")
        index = obj.value_of(T.KEY_PART_IDENTIFIER.value)
        if index in parts:
            raise invalid_field("the same part is given twice")
        parts[index] = material.value  # type: ignore[index,assignment]
        algorithm = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value)  # type: ignore[union-attr]
        length = block.value_of(T.CRYPTOGRAPHIC_LENGTH.value)  # type: ignore[union-attr]
    _parts, m, method, prime = shape  # type: ignore[misc]
    if len(parts) < m:  # type: ignore[operator]
        raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, f"{m} parts are needed, {len(parts)} were given")
    if method == M.XOR.value:
        secret = _xor(list(parts.values()))
    elif method in _BINARY_FIELDS:
        secret = _gf_join(dict(list(parts.items())[:m]), _BINARY_FIELDS[method])  # type: ignore[index]
    else:
        size = length // 8 if isinstance(length, int) else (prime.bit_length() + 7) // 8  # type: ignore[union-attr]
        secret = _prime_join(dict(list(parts.items())[:m]), prime, size)  # type: ignore[arg-type,index]
    attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
    # The joined key is as protected as its parts, and belongs to their owner.
    attrs, history = export.derived_protection(ctx, inputs, attrs)
    given = {a.name for a in attrs}
    if object_type == ObjectType.SYMMETRIC_KEY.value:
        if not isinstance(algorithm, int):
            algorithm = next((a.value.value for a in attrs if a.name == "Cryptographic Algorithm"), None)
        if not isinstance(algorithm, int):
            raise missing("the key's Cryptographic Algorithm is not known: give it in the attributes")
        from .create import symmetric_key

        obj = symmetric_key(algorithm, len(secret) * 8, secret)
        attrs += [a for a in objects.key_block_attributes(obj) if a.name not in given]
    else:
        kind = payload.value_of(T.SECRET_DATA_TYPE.value, SecretDataType.SEED.value)
        obj = ttlv.struct_(T.SECRET_DATA, [ttlv.enum(T.SECRET_DATA_TYPE, kind), ttlv.struct_(T.KEY_BLOCK, [
            ttlv.enum(T.KEY_FORMAT_TYPE, KeyFormatType.OPAQUE),
            ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, secret)])])])
    uid = objects.insert_new(ctx, object_type, obj, attrs,  # type: ignore[arg-type]
                             origin=objects.origin_of(first) if first is not None else None, history=history)
    return objects.uid_payload(uid)
