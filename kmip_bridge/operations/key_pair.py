"""CreateKeyPair and ReKeyKeyPair: RSA and EC key pairs, generated here, each half sealed as its
own object.

RSA halves are stored as PKCS#1 (what the OASIS vectors expect in Digest/Key Format Type); EC
private keys as PKCS#8 and EC public keys as X.509 SubjectPublicKeyInfo, formats every client
library reads. Get converts to any other supported Key Format Type (formats.py).
"""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from kmip.core.enums import (
    CryptographicAlgorithm,
    CryptographicUsageMask,
    KeyFormatType,
    LinkType,
    ObjectType,
    RecommendedCurve,
    ResultReason,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, invalid_field
from ..protocol.ttlv import Item, Type
from . import create, export, formats, keys, objects
from .context import RequestContext

A = CryptographicAlgorithm
F = KeyFormatType
RSA_LENGTHS = range(1024, 4097)
PUBLIC_EXPONENT = 65537
# Curves CreateKeyPair generates, and their Cryptographic Length.
EC_CURVES = {
    RecommendedCurve.P_224.value: 224,
    RecommendedCurve.P_256.value: 256,
    RecommendedCurve.P_384.value: 384,
    RecommendedCurve.P_521.value: 521,
    RecommendedCurve.SECP256K1.value: 256,  # only when named: a bare length 256 means P-256
}
_CURVE_BY_LENGTH = {length: curve for curve, length in EC_CURVES.items()
                    if curve != RecommendedCurve.SECP256K1.value}
# KMIP 2.x: Curve25519 / Curve448 under EC or ECDH are X25519 / X448 (key agreement only), and the
# Ed25519 / Ed448 algorithms sign. (generate() is on cryptography's interfaces, not on the OpenSSL
# classes of the keys it returns.)
_RFC = {
    (A.EC.value, RecommendedCurve.CURVE25519.value): "x25519",
    (A.ECDH.value, RecommendedCurve.CURVE25519.value): "x25519",
    (A.EC.value, RecommendedCurve.CURVE448.value): "x448",
    (A.ECDH.value, RecommendedCurve.CURVE448.value): "x448",
    (A.ED25519.value, RecommendedCurve.CURVE25519.value): "ed25519",
    (A.ED448.value, RecommendedCurve.CURVE448.value): "ed448",
}
_GENERATE = {"x25519": x25519.X25519PrivateKey.generate, "x448": x448.X448PrivateKey.generate,
             "ed25519": ed25519.Ed25519PrivateKey.generate, "ed448": ed448.Ed448PrivateKey.generate}
_EDWARDS_CURVE = {A.ED25519.value: RecommendedCurve.CURVE25519.value, A.ED448.value: RecommendedCurve.CURVE448.value}
# Usage bits an X25519/X448 key cannot serve: it agrees keys, it does not sign or encrypt.
_NOT_AGREEMENT = (CryptographicUsageMask.SIGN.value | CryptographicUsageMask.VERIFY.value
                  | CryptographicUsageMask.ENCRYPT.value | CryptographicUsageMask.DECRYPT.value
                  | CryptographicUsageMask.WRAP_KEY.value | CryptographicUsageMask.UNWRAP_KEY.value)


# -- what to generate ------------------------------------------------------------------------------
def _agreed(name: str, *attr_lists: list[Attribute]) -> object:
    """One value for ``name`` across the private and public templates (they must not differ)."""
    values = {repr(v) for v in (keys.value(a, name) for a in attr_lists) if v is not None}
    if len(values) > 1:
        raise invalid_field(f"the private and public key templates disagree on '{name}'")
    for attrs in attr_lists:
        v = keys.value(attrs, name)
        if v is not None:
            return v
    return None


def _named_curve(priv: list[Attribute], pub: list[Attribute]) -> object:
    """The Recommended Curve the templates name (directly or in Cryptographic Domain Parameters)."""
    curve = _agreed("Recommended Curve", priv, pub)
    params = [
        a.value for attrs in (priv, pub) for a in attrs if a.name == "Cryptographic Domain Parameters"
    ]
    for p in params:
        inner = p.value_of(T.RECOMMENDED_CURVE.value) if p.type == Type.STRUCTURE else None
        if inner is not None:
            if curve is not None and inner != curve:
                raise invalid_field("conflicting Recommended Curve values")
            curve = inner
    return curve


def _curve(priv: list[Attribute], pub: list[Attribute], length: object) -> int:
    curve = _named_curve(priv, pub)
    if curve is None and isinstance(length, int):
        curve = _CURVE_BY_LENGTH.get(length)
    if curve not in EC_CURVES:
        raise invalid_field("an EC key pair needs a Recommended Curve of P-256, P-384 or P-521")
    if isinstance(length, int) and length != EC_CURVES[curve]:  # type: ignore[index]
        raise invalid_field("Cryptographic Length does not match the curve")
    return curve  # type: ignore[return-value]


def generate(priv: list[Attribute], pub: list[Attribute]) -> tuple[formats.PrivateKey, int, int]:
    """The new private key, its Cryptographic Algorithm and Cryptographic Length."""
    algorithm = _agreed("Cryptographic Algorithm", priv, pub)
    length = _agreed("Cryptographic Length", priv, pub)
    if algorithm is None:
        raise invalid_field("CreateKeyPair needs a Cryptographic Algorithm")
    if algorithm == A.RSA.value:
        if not isinstance(length, int) or length not in RSA_LENGTHS or length % 8:
            raise invalid_field("an RSA key pair needs a Cryptographic Length of 1024 to 4096 bits")
        return rsa.generate_private_key(PUBLIC_EXPONENT, length), algorithm, length
    curve = _named_curve(priv, pub)
    if algorithm in _EDWARDS_CURVE or curve in formats.RFC_CURVES:
        curve = _EDWARDS_CURVE.get(algorithm, curve)  # type: ignore[call-overload]
        if _named_curve(priv, pub) not in (None, curve):
            raise invalid_field("Ed25519 is on Curve25519 and Ed448 on Curve448")
        kind = _RFC.get((algorithm, curve))  # type: ignore[arg-type]
        if kind is None:  # e.g. ECDSA on Curve25519: signing there is Ed25519's
            raise invalid_field("Curve25519/Curve448 keys are X25519/X448 (EC, ECDH) or Ed25519/Ed448")
        size = formats.RFC_LENGTHS[kind]
        if length not in (None, size):
            raise invalid_field(f"a key on this curve is {size} bits")
        if kind in ("x25519", "x448"):
            refuse_signing_mask(priv, pub)
        return _GENERATE[kind](), algorithm, size  # type: ignore[return-value]
    if algorithm in formats.EC_ALGORITHMS:
        curve = _curve(priv, pub, length)
        key = ec.generate_private_key(formats.CURVES[curve]())
        return key, algorithm, EC_CURVES[curve]  # type: ignore[return-value]
    raise invalid_field("CreateKeyPair makes RSA, EC (ECDSA, ECDH) and (KMIP 2.x) X25519, X448, Ed25519 and Ed448 "
                        "key pairs only")


def regenerate(key: formats.PrivateKey) -> formats.PrivateKey:
    """A fresh key of the same kind and size (ReKeyKeyPair)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return rsa.generate_private_key(key.public_key().public_numbers().e, key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(key.curve)
    if isinstance(key, dsa.DSAPrivateKey):
        return key.parameters().generate_private_key()
    kind = formats.rfc_kind(key)
    if kind is not None:
        return _GENERATE[kind]()
    raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "this kind of key pair cannot be re-keyed")


def pair_objects(key: formats.PrivateKey, algorithm: int, length: int) -> tuple[Item, Item]:
    """(Private Key, Public Key) managed objects in their storage formats."""
    if isinstance(key, rsa.RSAPrivateKey):
        priv_fmt, pub_fmt = F.PKCS_1.value, F.PKCS_1.value
    else:
        priv_fmt, pub_fmt = F.PKCS_8.value, F.X_509.value
    priv = formats.key_block(
        ObjectType.PRIVATE_KEY.value, priv_fmt, formats.dump_private(key, priv_fmt), algorithm, length
    )
    pub = formats.key_block(
        ObjectType.PUBLIC_KEY.value, pub_fmt, formats.dump_public(key.public_key(), pub_fmt), algorithm, length
    )
    return ttlv.struct_(T.PRIVATE_KEY, [priv]), ttlv.struct_(T.PUBLIC_KEY, [pub])


def _with_key_facts(attrs: list[Attribute], algorithm: int, length: int) -> list[Attribute]:
    attrs = keys.replace(attrs, "Cryptographic Algorithm", objects.value_item(Type.ENUMERATION, algorithm))
    return keys.replace(attrs, "Cryptographic Length", objects.value_item(Type.INTEGER, length))


def _response(priv_uid: str, pub_uid: str) -> Item:
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [
        ttlv.text(T.PRIVATE_KEY_UNIQUE_IDENTIFIER, priv_uid),
        ttlv.text(T.PUBLIC_KEY_UNIQUE_IDENTIFIER, pub_uid),
    ])


def _store_pair(
    ctx: RequestContext, key: formats.PrivateKey, algorithm: int, length: int,
    priv_attrs: list[Attribute], pub_attrs: list[Attribute], priv_uid: str, pub_uid: str,
    origins: tuple[objects.Origin, objects.Origin] | None = None,
) -> None:
    """Seals and inserts both halves, linked to each other (caller holds the unit of work)."""
    priv_obj, pub_obj = pair_objects(key, algorithm, length)
    now = objects.now()
    priv_attrs = priv_attrs + create.generation_attributes(priv_attrs)  # RNG, default lease, as Create
    pub_attrs = pub_attrs + create.generation_attributes(pub_attrs)
    priv_attrs = keys.with_link(_with_key_facts(priv_attrs, algorithm, length), LinkType.PUBLIC_KEY_LINK.value, pub_uid)
    pub_attrs = keys.with_link(_with_key_facts(pub_attrs, algorithm, length), LinkType.PRIVATE_KEY_LINK.value, priv_uid)
    priv_origin, pub_origin = origins if origins is not None else (None, None)
    objects.insert_new(ctx, ObjectType.PUBLIC_KEY.value, pub_obj, pub_attrs,
                       state=keys.initial_state(pub_attrs, now), uid=pub_uid, origin=pub_origin)
    objects.insert_new(ctx, ObjectType.PRIVATE_KEY.value, priv_obj, priv_attrs,
                       state=keys.initial_state(priv_attrs, now), uid=priv_uid, origin=priv_origin)


def refuse_signing_mask(*attr_lists: list[Attribute]) -> None:
    """X25519/X448 keys agree keys (RFC 7748): a usage mask that says otherwise is refused."""
    for attrs in attr_lists:
        mask = keys.value(attrs, "Cryptographic Usage Mask")
        if isinstance(mask, int) and mask & _NOT_AGREEMENT:
            raise invalid_field("an X25519/X448 key agrees keys: it cannot sign, verify, encrypt or wrap")


def require_rfc_curves_in_version(ctx: RequestContext, *attr_lists: list[Attribute]) -> None:
    """Ed25519/Ed448 (Cryptographic Algorithm) and Curve25519/Curve448 (Recommended Curve) are
    KMIP 2.0 enumeration values: a 1.x request naming them names what its version lacks."""
    if ctx.v2:
        return
    for attrs in attr_lists:
        if keys.value(attrs, "Cryptographic Algorithm") in _EDWARDS_CURVE:
            raise invalid_field("Ed25519 and Ed448 are KMIP 2.x algorithms")
        curves = [keys.value(attrs, "Recommended Curve")] + [
            a.value.value_of(T.RECOMMENDED_CURVE.value) for a in attrs
            if a.name == "Cryptographic Domain Parameters" and a.value.type == Type.STRUCTURE]
        if any(c in formats.RFC_CURVES for c in curves):
            raise invalid_field("Curve25519 and Curve448 are KMIP 2.x curves")


# -- operations ------------------------------------------------------------------------------------
def create_key_pair(ctx: RequestContext, payload: Item) -> Item:
    common, priv_t, pub_t = keys.pair_templates(payload)
    priv_attrs = objects.client_attributes(keys.override(common, priv_t))
    pub_attrs = objects.client_attributes(keys.override(common, pub_t))
    require_rfc_curves_in_version(ctx, priv_attrs, pub_attrs)
    key, algorithm, length = generate(priv_attrs, pub_attrs)
    priv_uid, pub_uid = str(uuid.uuid4()), str(uuid.uuid4())
    with ctx.services.store.unit_of_work():  # both halves or neither
        _store_pair(ctx, key, algorithm, length, priv_attrs, pub_attrs, priv_uid, pub_uid)
    ctx.id_placeholder = priv_uid  # KMIP: the private key's id
    return _response(priv_uid, pub_uid)


def rekey_key_pair(ctx: RequestContext, payload: Item) -> Item:
    uid = payload.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value) or ctx.id_placeholder
    if not isinstance(uid, str):
        raise KmipError(ResultReason.MISSING_DATA, "no Private Key Unique Identifier and no ID placeholder")
    row = objects.load_visible(ctx, uid)
    if row.object_type != ObjectType.PRIVATE_KEY.value:
        raise keys.by_version(ctx, ResultReason.ILLEGAL_OPERATION, ResultReason.INVALID_OBJECT_TYPE,
                              "ReKeyKeyPair replaces a key pair named by its private key")
    if row.state in keys.DESTROYED:
        raise ctx.wrong_state("a destroyed key pair cannot be re-keyed")
    store = ctx.services.store
    old_priv = [objects.from_row(r) for r in store.load_attributes(uid)]
    pub_uid = keys.linked(old_priv, LinkType.PUBLIC_KEY_LINK.value)
    if pub_uid is None:
        raise invalid_field("the private key has no Public Key Link to its public key")
    pub_row = objects.load_visible(ctx, pub_uid)
    old_pub = [objects.from_row(r) for r in store.load_attributes(pub_uid)]
    key = regenerate(formats.private_of(objects.open_material(ctx, row)))

    common, priv_t, pub_t = keys.pair_templates(payload)
    now = objects.now()
    offset = payload.value_of(T.OFFSET.value)
    priv_attrs = keys.replacement_attributes(
        old_priv, objects.client_attributes(keys.override(common, priv_t)), offset, now)
    pub_attrs = keys.replacement_attributes(
        old_pub, objects.client_attributes(keys.override(common, pub_t)), offset, now)
    priv_attrs = export.replacement(ctx, row, priv_attrs)
    pub_attrs = export.replacement(ctx, pub_row, pub_attrs)
    algorithm = keys.value(priv_attrs, "Cryptographic Algorithm")
    if not isinstance(algorithm, int):
        algorithm = A.RSA.value if isinstance(key, rsa.RSAPrivateKey) else (
            A.DSA.value if isinstance(key, dsa.DSAPrivateKey) else A.EC.value)
    kind = formats.rfc_kind(key)
    length = (formats.RFC_LENGTHS[kind] if kind is not None
              else key.curve.key_size if isinstance(key, ec.EllipticCurvePrivateKey) else key.key_size)

    new_priv, new_pub = str(uuid.uuid4()), str(uuid.uuid4())
    priv_attrs = keys.with_link(priv_attrs, LinkType.REPLACED_OBJECT_LINK.value, uid)
    pub_attrs = keys.with_link(pub_attrs, LinkType.REPLACED_OBJECT_LINK.value, pub_uid)
    with store.unit_of_work():
        # The old pair gives up its Names first, so the new one can take them over.
        objects.update(ctx, row, **keys.retire_row_changes(ctx, row, new_priv, LinkType.REPLACEMENT_OBJECT_LINK.value))
        objects.update(ctx, pub_row,
                       **keys.retire_row_changes(ctx, pub_row, new_pub, LinkType.REPLACEMENT_OBJECT_LINK.value))
        # The new pair stays the old pair's owner's, under its tenant KEK, whoever re-keys.
        _store_pair(ctx, key, algorithm, length, priv_attrs, pub_attrs, new_priv, new_pub,
                    origins=(objects.origin_of(row), objects.origin_of(pub_row)))
    ctx.id_placeholder = new_priv
    return _response(new_priv, new_pub)
