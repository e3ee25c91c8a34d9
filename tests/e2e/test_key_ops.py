"""CreateKeyPair, ReKey, ReKeyKeyPair, DeriveKey, Key Format Type conversion and wrapped Get, end
to end with raw TTLV requests in the KMIP 1.4 and 2.1 forms (shapes from the OASIS AKLC, AX, BL
and SKLC vectors)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from kmip.core import enums
from kmip.core.enums import LinkType, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T
from kmip.pie.client import ProxyKmipClient

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server

pytestmark = pytest.mark.e2e

V14, V21 = (1, 4), (2, 1)
KF = enums.KeyFormatType
USAGE = enums.CryptographicUsageMask


class Conn:
    """One client identity over one TLS connection."""

    def __init__(self, server: Server, instance: Instance, name: str) -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx)

    def batch(self, items: list[tuple[Operation, list[Item]]], version: tuple[int, int] = V14) -> list[Item]:
        msg = request([(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, fields)) for op, fields in items], version)
        return self.raw.call(msg).all(T.BATCH_ITEM.value)

    def call(self, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> Item:
        return self.batch([(op, list(fields))], version)[0]

    def ok(self, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> Item:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        payload = bi.get(T.RESPONSE_PAYLOAD.value)
        assert payload is not None
        return payload

    def fails(self, reason: ResultReason, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> str:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value
        assert bi.value_of(T.RESULT_REASON.value) == reason.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.value_of(T.RESULT_MESSAGE.value)  # type: ignore[return-value]

    # -- conveniences --------------------------------------------------------------------------
    def get(self, uid: str, *fields: Item, version: tuple[int, int] = V14) -> Item:
        """The Key Block of the object Get returns."""
        out = self.ok(Operation.GET, uid_(uid), *fields, version=version)
        obj = out.value[-1]
        return obj.get(T.KEY_BLOCK.value)  # type: ignore[return-value]

    def attributes(self, uid: str, *names: str) -> dict[str, list[Item]]:
        """Attribute name -> values (1.4 form)."""
        out = self.ok(Operation.GET_ATTRIBUTES, uid_(uid), *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names))
        found: dict[str, list[Item]] = {}
        for a in out.all(T.ATTRIBUTE.value):
            found.setdefault(a.value_of(T.ATTRIBUTE_NAME.value), []).append(a.get(T.ATTRIBUTE_VALUE.value))  # type: ignore[arg-type]
        return found

    def activate(self, uid: str) -> None:
        self.ok(Operation.ACTIVATE, uid_(uid))

    def create_aes(self, *attrs: Item, length: int = 256) -> str:
        out = self.ok(Operation.CREATE, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                      ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                          a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
                          a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, length)),
                          *attrs]))
        return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]

    def rsa_pair(self, length: int = 2048, name: str | None = None,
                 private_usage: int = USAGE.SIGN.value, public_usage: int = USAGE.VERIFY.value) -> tuple[str, str]:
        """CreateKeyPair in the 1.4 form of AKLC-M-1-14."""
        priv = [a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, private_usage))]
        pub = [a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, public_usage))]
        if name:
            priv.append(a1("Name", name_value(f"{name}-private")))
            pub.append(a1("Name", name_value(f"{name}-public")))
        out = self.ok(Operation.CREATE_KEY_PAIR,
                      ttlv.struct_(T.COMMON_TEMPLATE_ATTRIBUTE, [
                          a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.RSA)),
                          a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, length))]),
                      ttlv.struct_(T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE, priv),
                      ttlv.struct_(T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE, pub))
        tags = [c.tag for c in out]
        assert tags == [T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value, T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value]
        return out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value), out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]

    def close(self) -> None:
        self.raw.close()


def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def a1(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def name_value(name: str, tag: T = T.ATTRIBUTE_VALUE) -> Item:
    return ttlv.struct_(tag, [ttlv.text(T.NAME_VALUE, name),
                              ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])


def fmt(block: Item) -> int:
    return block.value_of(T.KEY_FORMAT_TYPE.value)  # type: ignore[return-value]


def material(block: Item) -> Item:
    return block.get(T.KEY_VALUE.value).get(T.KEY_MATERIAL.value)  # type: ignore[union-attr,return-value]


def format_request(kf: KF) -> Item:
    return ttlv.enum(T.KEY_FORMAT_TYPE, kf)


def links(attrs: dict[str, list[Item]]) -> dict[int, str]:
    return {v.value_of(T.LINK_TYPE.value): v.value_of(T.LINKED_OBJECT_IDENTIFIER.value)  # type: ignore[misc]
            for v in attrs.get("Link", [])}


@pytest.fixture(scope="module")
def conns(server: Server, instance: Instance) -> Iterator[dict[str, Conn]]:
    for name in ("alice", "bob"):
        instance.client(name)
    cs = {n: Conn(server, instance, n) for n in ("alice", "bob", "admin")}
    yield cs
    for c in cs.values():
        c.close()


# -- CreateKeyPair ---------------------------------------------------------------------------------
def test_create_rsa_key_pair_v14_links_and_matching_halves(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    priv, pub = alice.rsa_pair(2048, name="aklc-14")
    pa = alice.attributes(priv)
    pb = alice.attributes(pub)
    assert pa["Object Type"][0].value == enums.ObjectType.PRIVATE_KEY.value
    assert pb["Object Type"][0].value == enums.ObjectType.PUBLIC_KEY.value
    assert pa["State"][0].value == pb["State"][0].value == enums.State.PRE_ACTIVE.value
    assert pa["Cryptographic Length"][0].value == pb["Cryptographic Length"][0].value == 2048
    assert pa["Cryptographic Usage Mask"][0].value == USAGE.SIGN.value
    assert pb["Cryptographic Usage Mask"][0].value == USAGE.VERIFY.value
    assert pa["Name"][0].value_of(T.NAME_VALUE.value) == "aklc-14-private"
    assert links(pa) == {LinkType.PUBLIC_KEY_LINK.value: pub}
    assert links(pb) == {LinkType.PRIVATE_KEY_LINK.value: priv}
    assert "Original Creation Date" in pa and "Initial Date" in pa
    digest = pa["Digest"][0]
    assert digest.value_of(T.HASHING_ALGORITHM.value) == enums.HashingAlgorithm.SHA_256.value
    assert digest.value_of(T.KEY_FORMAT_TYPE.value) == KF.PKCS_1.value

    priv_block, pub_block = alice.get(priv), alice.get(pub)
    assert fmt(priv_block) == fmt(pub_block) == KF.PKCS_1.value
    key = serialization.load_der_private_key(material(priv_block).value, None)  # type: ignore[arg-type]
    public = serialization.load_der_public_key(material(pub_block).value)  # type: ignore[arg-type]
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert key.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    assert digest.value_of(T.DIGEST_VALUE.value) == hashlib.sha256(material(priv_block).value).digest()  # type: ignore[arg-type]


def test_create_key_pair_sets_id_placeholder_to_the_private_key(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    create, got = alice.batch([
        (Operation.CREATE_KEY_PAIR, [
            ttlv.struct_(T.COMMON_ATTRIBUTES, [
                ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.RSA),
                ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 1024)]),
            ttlv.struct_(T.PRIVATE_KEY_ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, USAGE.SIGN.value)]),
            ttlv.struct_(T.PUBLIC_KEY_ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, USAGE.VERIFY.value)]),
        ]),
        (Operation.GET_ATTRIBUTES, [Item(T.ATTRIBUTE_REFERENCE.value, Type.ENUMERATION, T.OBJECT_TYPE.value)]),
    ], version=V21)
    priv = create.get(T.RESPONSE_PAYLOAD.value).value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    payload = got.get(T.RESPONSE_PAYLOAD.value)
    assert payload.value_of(T.UNIQUE_IDENTIFIER.value) == priv  # type: ignore[union-attr]
    attrs = payload.get(T.ATTRIBUTES.value)  # type: ignore[union-attr]
    assert attrs.value_of(T.OBJECT_TYPE.value) == enums.ObjectType.PRIVATE_KEY.value  # type: ignore[union-attr]


@pytest.mark.parametrize("curve, length, how", [
    (enums.RecommendedCurve.P_256, 256, "domain"),
    (enums.RecommendedCurve.P_384, 384, "curve"),
    (enums.RecommendedCurve.P_521, 521, "length"),
    (enums.RecommendedCurve.P_224, 224, "length"),
    (enums.RecommendedCurve.SECP256K1, 256, "curve"),  # named: a bare 256 stays P-256
])
def test_create_ec_key_pair_v21(conns: dict[str, Conn], curve: enums.RecommendedCurve, length: int,
                                how: str) -> None:
    alice = conns["alice"]
    common = [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.EC)]
    if how == "domain":
        common.append(ttlv.struct_(T.CRYPTOGRAPHIC_DOMAIN_PARAMETERS, [ttlv.enum(T.RECOMMENDED_CURVE, curve)]))
    elif how == "curve":
        common.append(ttlv.enum(T.RECOMMENDED_CURVE, curve))
    else:
        common.append(ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length))
    out = alice.ok(Operation.CREATE_KEY_PAIR,
                   ttlv.struct_(T.COMMON_ATTRIBUTES, common),
                   ttlv.struct_(T.PRIVATE_KEY_ATTRIBUTES, [name_value(f"ec-{length}", T.NAME)]),
                   ttlv.struct_(T.PUBLIC_KEY_ATTRIBUTES, []), version=V21)
    priv = out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)
    pub = out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value)
    got = alice.ok(Operation.GET_ATTRIBUTES, uid_(priv),  # type: ignore[arg-type]
                   Item(T.ATTRIBUTE_REFERENCE.value, Type.ENUMERATION, T.LINK.value),
                   Item(T.ATTRIBUTE_REFERENCE.value, Type.ENUMERATION, T.CRYPTOGRAPHIC_LENGTH.value), version=V21)
    attrs = got.get(T.ATTRIBUTES.value)
    assert attrs.value_of(T.CRYPTOGRAPHIC_LENGTH.value) == length  # type: ignore[union-attr]
    link = attrs.get(T.LINK.value)  # type: ignore[union-attr]
    assert link.value_of(T.LINK_TYPE.value) == LinkType.PUBLIC_KEY_LINK.value  # type: ignore[union-attr]
    assert link.value_of(T.LINKED_OBJECT_IDENTIFIER.value) == pub  # type: ignore[union-attr]

    priv_block = alice.get(priv, version=V21)  # type: ignore[arg-type]
    pub_block = alice.get(pub, version=V21)  # type: ignore[arg-type]
    assert (fmt(priv_block), fmt(pub_block)) == (KF.PKCS_8.value, KF.X_509.value)
    key = serialization.load_der_private_key(material(priv_block).value, None)  # type: ignore[arg-type]
    public = serialization.load_der_public_key(material(pub_block).value)  # type: ignore[arg-type]
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == length
    assert key.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]

    # The transparent forms carry the same numbers.
    t_priv = material(alice.get(priv, format_request(KF.TRANSPARENT_EC_PRIVATE_KEY), version=V21))  # type: ignore[arg-type]
    assert t_priv.value_of(T.RECOMMENDED_CURVE.value) == curve.value
    assert t_priv.value_of(T.D.value) == key.private_numbers().private_value
    t_pub = material(alice.get(pub, format_request(KF.TRANSPARENT_EC_PUBLIC_KEY), version=V21))  # type: ignore[arg-type]
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert t_pub.value_of(T.Q_STRING.value) == point
    ec_block = alice.get(priv, format_request(KF.EC_PRIVATE_KEY), version=V21)  # type: ignore[arg-type]
    again = serialization.load_der_private_key(material(ec_block).value, None)  # type: ignore[arg-type]
    assert again.private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_create_key_pair_refusals(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    rsa_common = [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.RSA)]
    for common in ([*rsa_common, ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 512)],
                   rsa_common,
                   [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                    ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)],
                   [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.EC),
                    ttlv.enum(T.RECOMMENDED_CURVE, enums.RecommendedCurve.K_163)]):
        alice.fails(ResultReason.INVALID_FIELD, Operation.CREATE_KEY_PAIR,
                    ttlv.struct_(T.COMMON_ATTRIBUTES, common), version=V21)
    # Server-set attributes cannot come from the client.
    alice.fails(ResultReason.INVALID_FIELD, Operation.CREATE_KEY_PAIR,
                ttlv.struct_(T.COMMON_ATTRIBUTES, [*rsa_common, ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 2048)]),
                ttlv.struct_(T.PRIVATE_KEY_ATTRIBUTES, [ttlv.enum(T.STATE, enums.State.ACTIVE)]), version=V21)


def test_pykmip_client_creates_and_reads_a_key_pair(server: Server) -> None:
    with ProxyKmipClient(config="admin", config_file=str(server.client_conf())) as c:
        pub_uid, priv_uid = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048)
        priv, pub = c.get(priv_uid), c.get(pub_uid)
    key = serialization.load_der_private_key(priv.value, None)
    public = serialization.load_der_public_key(pub.value)
    assert key.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


# -- Key Format Types ------------------------------------------------------------------------------
def test_rsa_formats_round_trip(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    priv, pub = alice.rsa_pair(2048)
    pkcs1 = serialization.load_der_private_key(material(alice.get(priv, format_request(KF.PKCS_1))).value, None)  # type: ignore[arg-type]
    pkcs8_block = alice.get(priv, format_request(KF.PKCS_8))
    assert fmt(pkcs8_block) == KF.PKCS_8.value
    pkcs8 = serialization.load_der_private_key(material(pkcs8_block).value, None)  # type: ignore[arg-type]
    numbers = pkcs1.private_numbers()  # type: ignore[union-attr]
    assert numbers == pkcs8.private_numbers()  # type: ignore[union-attr]
    t = material(alice.get(priv, format_request(KF.TRANSPARENT_RSA_PRIVATE_KEY)))
    assert t.value_of(T.MODULUS.value) == numbers.public_numbers.n
    assert t.value_of(T.PRIVATE_EXPONENT.value) == numbers.d
    assert t.value_of(T.P.value) * t.value_of(T.Q.value) == numbers.public_numbers.n  # type: ignore[operator]
    assert t.value_of(T.CRT_COEFFICIENT.value) == numbers.iqmp

    spki_block = alice.get(pub, format_request(KF.X_509))
    spki = serialization.load_der_public_key(material(spki_block).value)  # type: ignore[arg-type]
    assert spki.public_numbers() == numbers.public_numbers  # type: ignore[union-attr]
    tp = material(alice.get(pub, format_request(KF.TRANSPARENT_RSA_PUBLIC_KEY)))
    assert (tp.value_of(T.MODULUS.value), tp.value_of(T.PUBLIC_EXPONENT.value)) == (
        numbers.public_numbers.n, numbers.public_numbers.e)
    alice.fails(ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED, Operation.GET, uid_(priv), format_request(KF.RAW))
    alice.fails(ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED, Operation.GET, uid_(pub),
                format_request(KF.TRANSPARENT_EC_PUBLIC_KEY))


def test_registered_pkcs8_and_transparent_keys_convert(conns: dict[str, Conn]) -> None:
    """BL-M-11 / BL-M-9 shapes: a key registered as PKCS#8 or Transparent RSA comes back as PKCS#1."""
    alice = conns["alice"]
    key = rsa.generate_private_key(65537, 2048)
    pn = key.private_numbers()
    der8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    transparent = ttlv.struct_(T.KEY_MATERIAL, [
        Item(T.MODULUS.value, Type.BIG_INTEGER, pn.public_numbers.n),
        Item(T.PRIVATE_EXPONENT.value, Type.BIG_INTEGER, pn.d),
        Item(T.PUBLIC_EXPONENT.value, Type.BIG_INTEGER, pn.public_numbers.e),
    ])
    for km, kf in ((ttlv.bytes_(T.KEY_MATERIAL, der8), KF.PKCS_8), (transparent, KF.TRANSPARENT_RSA_PRIVATE_KEY)):
        out = alice.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.PRIVATE_KEY),
                       ttlv.struct_(T.ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, USAGE.SIGN.value)]),
                       ttlv.struct_(T.PRIVATE_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                           ttlv.enum(T.KEY_FORMAT_TYPE, kf), ttlv.struct_(T.KEY_VALUE, [km]),
                           ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.RSA),
                           ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 2048)])]), version=V21)
        uid = out.value_of(T.UNIQUE_IDENTIFIER.value)
        assert fmt(alice.get(uid, version=V21)) == kf.value  # type: ignore[arg-type]  # as registered
        block = alice.get(uid, format_request(KF.PKCS_1), version=V21)  # type: ignore[arg-type]
        back = serialization.load_der_private_key(material(block).value, None)  # type: ignore[arg-type]
        assert back.private_numbers() == pn  # type: ignore[union-attr]


def test_symmetric_raw_and_transparent(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    uid = alice.create_aes()
    raw = material(alice.get(uid)).value
    transparent = alice.get(uid, format_request(KF.TRANSPARENT_SYMMETRIC_KEY))
    assert fmt(transparent) == KF.TRANSPARENT_SYMMETRIC_KEY.value
    assert material(transparent).value_of(T.KEY.value) == raw
    # BL-M-3: registered Transparent Symmetric Key, Get as registered and as Raw.
    key = bytes.fromhex("0123456789abcdef0123456789abcdef")
    out = alice.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                   ttlv.struct_(T.ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, USAGE.DECRYPT.value)]),
                   ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                       ttlv.enum(T.KEY_FORMAT_TYPE, KF.TRANSPARENT_SYMMETRIC_KEY),
                       ttlv.struct_(T.KEY_VALUE, [ttlv.struct_(T.KEY_MATERIAL, [ttlv.bytes_(T.KEY, key)])]),
                       ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                       ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 128)])]), version=V21)
    reg = out.value_of(T.UNIQUE_IDENTIFIER.value)
    assert material(alice.get(reg, version=V21)).value_of(T.KEY.value) == key  # type: ignore[arg-type]
    assert material(alice.get(reg, format_request(KF.RAW), version=V21)).value == key  # type: ignore[arg-type]
    alice.fails(ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED, Operation.GET, uid_(uid), format_request(KF.PKCS_1))


# -- ReKey -----------------------------------------------------------------------------------------
def test_rekey_keeps_attributes_moves_names_and_links(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    old = alice.create_aes(
        a1("Name", name_value("rekey-me")),
        a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.ENCRYPT.value | USAGE.DECRYPT.value)),
        a1("x-owner-tag", ttlv.text(T.ATTRIBUTE_VALUE, "kept")),
        length=192,
    )
    alice.activate(old)
    before = alice.attributes(old)
    new = alice.ok(Operation.REKEY, uid_(old), ttlv.interval(T.OFFSET, 3600)).value_of(T.UNIQUE_IDENTIFIER.value)
    assert isinstance(new, str) and new != old
    n = alice.attributes(new)
    o = alice.attributes(old)
    for name in ("Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask", "x-owner-tag"):
        assert n[name] == before[name], name
    assert n["Name"][0].value_of(T.NAME_VALUE.value) == "rekey-me" and "Name" not in o
    assert links(n) == {LinkType.REPLACED_OBJECT_LINK.value: old}
    assert links(o) == {LinkType.REPLACEMENT_OBJECT_LINK.value: new}
    assert o["State"][0].value == enums.State.ACTIVE.value
    # Offset: the replacement activates an hour after its creation, so it starts Pre-Active.
    assert n["State"][0].value == enums.State.PRE_ACTIVE.value
    assert abs(n["Activation Date"][0].value - (n["Initial Date"][0].value + 3600)) <= 2  # type: ignore[operator]
    assert n["Digest"][0].value_of(T.DIGEST_VALUE.value) != o["Digest"][0].value_of(T.DIGEST_VALUE.value)
    assert len(material(alice.get(new)).value) == 24  # type: ignore[arg-type]
    assert material(alice.get(new)).value != material(alice.get(old)).value
    # The ID placeholder names the replacement.
    _, got = alice.batch([(Operation.REKEY, [uid_(new)]), (Operation.GET_ATTRIBUTES, [
        ttlv.text(T.ATTRIBUTE_NAME, "Link")])])
    third = got.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    assert third not in (old, new)


def test_rekey_without_offset_copies_dates_v21(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    old = alice.create_aes()
    alice.activate(old)
    activation = alice.attributes(old, "Activation Date")["Activation Date"][0].value
    time.sleep(1)
    new = alice.ok(Operation.REKEY, uid_(old), version=V21).value_of(T.UNIQUE_IDENTIFIER.value)
    n = alice.attributes(new, "State", "Activation Date")  # type: ignore[arg-type]
    assert n["Activation Date"][0].value == activation
    assert n["State"][0].value == enums.State.ACTIVE.value
    # Template attributes override what is inherited.
    newer = alice.ok(Operation.REKEY, uid_(new),  # type: ignore[arg-type]
                     ttlv.struct_(T.ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, USAGE.WRAP_KEY.value)]),
                     version=V21).value_of(T.UNIQUE_IDENTIFIER.value)
    assert alice.attributes(newer, "Cryptographic Usage Mask")["Cryptographic Usage Mask"][0].value == (  # type: ignore[arg-type]
        USAGE.WRAP_KEY.value)


def test_rekey_refuses_other_object_types(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    priv, _ = alice.rsa_pair(1024)
    alice.fails(ResultReason.INVALID_OBJECT_TYPE, Operation.REKEY, uid_(priv), version=V21)
    alice.fails(ResultReason.ILLEGAL_OPERATION, Operation.REKEY, uid_(priv))


def test_rekey_key_pair(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    priv, pub = alice.rsa_pair(2048, name="rekey-pair")
    out = alice.ok(Operation.REKEY_KEY_PAIR, ttlv.text(T.PRIVATE_KEY_UNIQUE_IDENTIFIER, priv))
    new_priv = out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)
    new_pub = out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value)
    np, nq = alice.attributes(new_priv), alice.attributes(new_pub)  # type: ignore[arg-type]
    assert links(np) == {LinkType.PUBLIC_KEY_LINK.value: new_pub, LinkType.REPLACED_OBJECT_LINK.value: priv}
    assert links(nq) == {LinkType.PRIVATE_KEY_LINK.value: new_priv, LinkType.REPLACED_OBJECT_LINK.value: pub}
    assert links(alice.attributes(priv))[LinkType.REPLACEMENT_OBJECT_LINK.value] == new_priv
    assert links(alice.attributes(pub))[LinkType.REPLACEMENT_OBJECT_LINK.value] == new_pub
    assert np["Name"][0].value_of(T.NAME_VALUE.value) == "rekey-pair-private"
    assert np["Cryptographic Usage Mask"][0].value == USAGE.SIGN.value
    key = serialization.load_der_private_key(material(alice.get(new_priv)).value, None)  # type: ignore[arg-type]
    public = serialization.load_der_public_key(material(alice.get(new_pub)).value)  # type: ignore[arg-type]
    old_key = serialization.load_der_private_key(material(alice.get(priv)).value, None)  # type: ignore[arg-type]
    assert key.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    assert key.private_numbers() != old_key.private_numbers() and key.key_size == 2048  # type: ignore[union-attr]


# -- wrapped Get -----------------------------------------------------------------------------------
def _wrapping_spec(wrapping_uid: str, *params: Item, encoding: enums.EncodingOption | None = None) -> Item:
    info = [uid_(wrapping_uid)]
    if params:
        info.append(ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, list(params)))
    return ttlv.struct_(T.KEY_WRAPPING_SPECIFICATION, [
        ttlv.enum(T.WRAPPING_METHOD, enums.WrappingMethod.ENCRYPT),
        ttlv.struct_(T.ENCRYPTION_KEY_INFORMATION, info),
        ttlv.enum(T.ENCODING_OPTION, encoding) if encoding is not None else None,
    ])


def test_get_wrapped_with_nist_key_wrap_v21(conns: dict[str, Conn]) -> None:
    """AX-M-2-21: Get with a Key Wrapping Specification naming an AES key and NIST Key Wrap."""
    alice = conns["alice"]
    kek = alice.create_aes(a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.WRAP_KEY.value)))
    key = alice.create_aes()
    mode = ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.NIST_KEY_WRAP)
    # A Pre-Active wrapping key may not be used.
    alice.fails(ResultReason.WRONG_KEY_LIFECYCLE_STATE, Operation.GET, uid_(key), _wrapping_spec(kek, mode),
                version=V21)
    alice.activate(kek)
    kek_bytes = material(alice.get(kek)).value
    plain = material(alice.get(key)).value
    block = alice.get(key, _wrapping_spec(kek, mode), version=V21)
    assert fmt(block) == KF.RAW.value
    wrapped = block.get(T.KEY_VALUE.value)
    assert wrapped.type == Type.BYTE_STRING  # type: ignore[union-attr]
    data = block.get(T.KEY_WRAPPING_DATA.value)
    assert data.value_of(T.WRAPPING_METHOD.value) == enums.WrappingMethod.ENCRYPT.value  # type: ignore[union-attr]
    info = data.get(T.ENCRYPTION_KEY_INFORMATION.value)  # type: ignore[union-attr]
    assert info.value_of(T.UNIQUE_IDENTIFIER.value) == kek  # type: ignore[union-attr]
    value = ttlv.decode(keywrap.aes_key_unwrap(kek_bytes, wrapped.value))  # type: ignore[arg-type,union-attr]
    assert value.tag == T.KEY_VALUE.value and value.value_of(T.KEY_MATERIAL.value) == plain
    # No Encoding wraps the bare key bytes, returned as the Key Value's Key Material; AES Key Wrap
    # Padding is RFC 5649.
    bare = alice.get(key, _wrapping_spec(kek, encoding=enums.EncodingOption.NO_ENCODING))
    assert keywrap.aes_key_unwrap(kek_bytes, material(bare).value) == plain  # type: ignore[arg-type]
    kwp = ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.AES_KEY_WRAP_PADDING)
    padded = alice.get(key, _wrapping_spec(kek, kwp))
    assert ttlv.decode(keywrap.aes_key_unwrap_with_padding(kek_bytes, padded.value_of(T.KEY_VALUE.value))).value_of(  # type: ignore[arg-type]
        T.KEY_MATERIAL.value) == plain
    # A wrapping key without Wrap Key in its usage mask is refused.
    plain_kek = alice.create_aes(a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.ENCRYPT.value)))
    alice.activate(plain_kek)
    alice.fails(ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, Operation.GET, uid_(key),
                _wrapping_spec(plain_kek), version=V21)
    alice.fails(ResultReason.WRAPPING_OBJECT_NOT_FOUND, Operation.GET, uid_(key),
                _wrapping_spec("no-such-key"), version=V21)


def test_get_private_key_wrapped_with_aes_and_public_key_wrapped_with_rsa_oaep(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    # An RSA private key (PKCS#8), wrapped by an AES key.
    kek = alice.create_aes(a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.WRAP_KEY.value)))
    alice.activate(kek)
    priv, pub = alice.rsa_pair(2048, private_usage=USAGE.UNWRAP_KEY.value, public_usage=USAGE.WRAP_KEY.value)
    block = alice.get(priv, format_request(KF.PKCS_8), _wrapping_spec(kek))
    assert fmt(block) == KF.PKCS_8.value
    value = ttlv.decode(keywrap.aes_key_unwrap(material(alice.get(kek)).value, block.value_of(T.KEY_VALUE.value)))  # type: ignore[arg-type]
    key = serialization.load_der_private_key(value.value_of(T.KEY_MATERIAL.value), None)  # type: ignore[arg-type]
    assert isinstance(key, rsa.RSAPrivateKey)
    # An AES key wrapped by the RSA public key with OAEP / SHA-256, unwrapped by its private key.
    alice.activate(pub)
    secret = alice.create_aes()
    sha256 = ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_256)
    wrapped = alice.get(secret, _wrapping_spec(pub, ttlv.enum(T.PADDING_METHOD, enums.PaddingMethod.OAEP), sha256,
                                               ttlv.enum(T.MASK_GENERATOR_HASHING_ALGORITHM,
                                                         enums.HashingAlgorithm.SHA_256)),
                        version=V21)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    value = ttlv.decode(key.decrypt(wrapped.value_of(T.KEY_VALUE.value), oaep))  # type: ignore[arg-type]
    assert value.value_of(T.KEY_MATERIAL.value) == material(alice.get(secret)).value


def test_sensitive_objects_leave_only_wrapped(conns: dict[str, Conn]) -> None:
    """BL-M-12: Get of a Sensitive object answers Sensitive; wrapped, it is served (under a
    wrapping key that is itself not extractable: docs/security.md, export rules)."""
    alice = conns["alice"]
    kek = alice.create_aes(a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.WRAP_KEY.value)),
                           a1("Extractable", ttlv.boolean(T.ATTRIBUTE_VALUE, False)))
    alice.activate(kek)
    out = alice.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                   ttlv.struct_(T.ATTRIBUTES, [ttlv.boolean(T.SENSITIVE, True)]),
                   ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                       ttlv.enum(T.KEY_FORMAT_TYPE, KF.RAW),
                       ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"k" * 16)]),
                       ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                       ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 128)])]), version=V21)
    uid = out.value_of(T.UNIQUE_IDENTIFIER.value)
    alice.fails(ResultReason.SENSITIVE, Operation.GET, uid_(uid), version=V21)  # type: ignore[arg-type]
    block = alice.get(uid, _wrapping_spec(kek), version=V21)  # type: ignore[arg-type]
    assert block.get(T.KEY_WRAPPING_DATA.value) is not None


# -- DeriveKey -------------------------------------------------------------------------------------
def _register_secret(conn: Conn, value: bytes, usage: int = USAGE.DERIVE_KEY.value) -> str:
    out = conn.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                  ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                      a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, usage))]),
                  ttlv.struct_(T.SECRET_DATA, [
                      ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                      ttlv.struct_(T.KEY_BLOCK, [
                          ttlv.enum(T.KEY_FORMAT_TYPE, KF.OPAQUE),
                          ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, value)])])]))
    uid: str = out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
    conn.activate(uid)
    return uid


def _derive(conn: Conn, base: str, method: enums.DerivationMethod, params: list[Item],
            object_type: enums.ObjectType = enums.ObjectType.SYMMETRIC_KEY, length: int = 256) -> Item:
    template = [a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, length))]
    if object_type == enums.ObjectType.SYMMETRIC_KEY:
        template.append(a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)))
    return conn.call(Operation.DERIVE_KEY, ttlv.enum(T.OBJECT_TYPE, object_type), uid_(base),
                     ttlv.enum(T.DERIVATION_METHOD, method),
                     ttlv.struct_(T.DERIVATION_PARAMETERS, params),
                     ttlv.struct_(T.TEMPLATE_ATTRIBUTE, template))


def _derived_uid(bi: Item) -> str:
    assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr,return-value]


def test_derive_key_pbkdf2_hmac_hash_encrypt(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    password = _register_secret(alice, b"correct horse battery staple")
    sha256 = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_256)])
    salt = b"NaCl-0123456789"
    derived = _derived_uid(_derive(alice, password, enums.DerivationMethod.PBKDF2, [
        sha256, ttlv.bytes_(T.SALT, salt), ttlv.integer(T.ITERATION_COUNT, 4096)]))
    expected = PBKDF2HMAC(hashes.SHA256(), 32, salt, 4096).derive(b"correct horse battery staple")
    block = alice.get(derived)
    assert material(block).value == expected
    assert block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) == enums.CryptographicAlgorithm.AES.value
    assert links(alice.attributes(derived)) == {LinkType.DERIVATION_BASE_OBJECT_LINK.value: password}
    assert links(alice.attributes(password)) == {LinkType.DERIVED_KEY_LINK.value: derived}

    base = alice.create_aes(a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.DERIVE_KEY.value)))
    alice.activate(base)
    k = material(alice.get(base)).value
    data = ttlv.bytes_(T.DERIVATION_DATA, b"context-1")
    # HMAC is RFC 5869's HMAC-based KDF: its test case 1 (SHA-256, 42 bytes) as a known answer.
    ikm = _register_secret(alice, bytes([0x0B]) * 22)
    okm = _derived_uid(_derive(alice, ikm, enums.DerivationMethod.HMAC, [
        sha256, ttlv.bytes_(T.SALT, bytes(range(13))), ttlv.bytes_(T.DERIVATION_DATA, bytes(range(0xF0, 0xFA)))],
        object_type=enums.ObjectType.SECRET_DATA, length=336))
    assert material(alice.get(okm)).value == bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    mac = _derived_uid(_derive(alice, base, enums.DerivationMethod.HMAC, [sha256, data]))
    assert material(alice.get(mac)).value == HKDF(hashes.SHA256(), 32, None, b"context-1").derive(k)  # type: ignore[arg-type]
    hashed = _derived_uid(_derive(alice, base, enums.DerivationMethod.HASH, [sha256, data], length=128))
    assert material(alice.get(hashed)).value == hashlib.sha256(k + b"context-1").digest()[:16]  # type: ignore[operator]
    ecb = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.ECB)])
    enc = _derived_uid(_derive(alice, base, enums.DerivationMethod.ENCRYPT,
                               [ecb, ttlv.bytes_(T.DERIVATION_DATA, bytes(range(32)))]))
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    e = Cipher(algorithms.AES(k), modes.ECB()).encryptor()  # type: ignore[arg-type]
    assert material(alice.get(enc)).value == e.update(bytes(range(32))) + e.finalize()
    # Secret Data out; too long a key from SHA-256; a base key without Derive Key usage.
    seed = _derived_uid(_derive(alice, base, enums.DerivationMethod.HMAC, [sha256, data],
                                object_type=enums.ObjectType.SECRET_DATA, length=128))
    out = alice.ok(Operation.GET, uid_(seed))
    assert out.value_of(T.OBJECT_TYPE.value) == enums.ObjectType.SECRET_DATA.value
    bi = _derive(alice, base, enums.DerivationMethod.HASH, [sha256, data], length=512)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.CRYPTOGRAPHIC_FAILURE.value
    encrypt_only = alice.create_aes(
        a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.ENCRYPT.value)))
    alice.activate(encrypt_only)
    bi = _derive(alice, encrypt_only, enums.DerivationMethod.HMAC, [sha256, data])
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.PERMISSION_DENIED.value
    # A Pre-Active base key is not used (policy.derive_from_pre_active is off by default).
    pre_active = alice.create_aes(
        a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.DERIVE_KEY.value)))
    bi = _derive(alice, pre_active, enums.DerivationMethod.HMAC, [sha256, data])
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.PERMISSION_DENIED.value  # 1.x has no finer reason
    assert "not Active" in str(bi.value_of(T.RESULT_MESSAGE.value))


def test_derive_key_accepts_every_listed_hashing_algorithm(conns: dict[str, Conn]) -> None:
    """DeriveKey takes every Hashing Algorithm the server uses for MAC and Sign, MD5 included."""
    alice = conns["alice"]
    base = alice.create_aes(a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.DERIVE_KEY.value)))
    alice.activate(base)
    k = material(alice.get(base)).value
    data = ttlv.bytes_(T.DERIVATION_DATA, b"context-2")
    for algorithm, name in ((enums.HashingAlgorithm.MD5, "md5"), (enums.HashingAlgorithm.SHA_1, "sha1"),
                            (enums.HashingAlgorithm.SHA3_256, "sha3_256"), (enums.HashingAlgorithm.SHA_512, "sha512")):
        params = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.HASHING_ALGORITHM, algorithm)])
        derived = _derived_uid(_derive(alice, base, enums.DerivationMethod.HASH, [params, data], length=128))
        assert material(alice.get(derived)).value == hashlib.new(name, k + b"context-2").digest()[:16], name  # type: ignore[operator]


# -- tenants ---------------------------------------------------------------------------------------
def test_other_tenant_gets_item_not_found(conns: dict[str, Conn]) -> None:
    alice, bob = conns["alice"], conns["bob"]
    key = alice.create_aes(a1("Cryptographic Usage Mask",
                              ttlv.integer(T.ATTRIBUTE_VALUE, USAGE.WRAP_KEY.value | USAGE.DERIVE_KEY.value)))
    alice.activate(key)
    priv, _ = alice.rsa_pair(1024)
    # 2.x names the reason Object Not Found; either way the same answer as for a missing id.
    for version, reason in ((V14, ResultReason.ITEM_NOT_FOUND), (V21, ResultReason.OBJECT_NOT_FOUND)):
        message = bob.fails(reason, Operation.REKEY, uid_(key), version=version)
        assert key not in message
        assert message == bob.fails(reason, Operation.REKEY, uid_("no-such-key"), version=version)
        bob.fails(reason, Operation.REKEY_KEY_PAIR, ttlv.text(T.PRIVATE_KEY_UNIQUE_IDENTIFIER, priv), version=version)
        bob.fails(reason, Operation.GET, uid_(priv), format_request(KF.PKCS_8), version=version)
    # Bob's own key cannot be wrapped under Alice's key, nor derived from it.
    own = bob.create_aes()
    bob.fails(ResultReason.ITEM_NOT_FOUND, Operation.GET, uid_(own), _wrapping_spec(key))
    bi = _derive(bob, key, enums.DerivationMethod.HMAC, [ttlv.bytes_(T.DERIVATION_DATA, b"x")])
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.ITEM_NOT_FOUND.value
    assert links(alice.attributes(key)) == {}  # untouched by every probe
