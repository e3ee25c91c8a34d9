"""KMIP 2.x curves X25519 / X448 / Ed448 (CreateKeyPair, Register, Get in each format, Sign /
Signature Verify, refusals at 1.x and for what a key agreement key cannot do), Register of a
PKCS#12 (KMIP 1.4: split into linked objects), and Locate's Object Group Member (KMIP 1.1) — raw
TTLV against a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterator

import pytest
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import attributes as wire
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server
from .rawkmip import Conn, create_aes, get_attributes, name_attr, open_conn, uid_, v1

pytestmark = pytest.mark.e2e
A, RC, KF, M = enums.CryptographicAlgorithm, enums.RecommendedCurve, enums.KeyFormatType, enums.CryptographicUsageMask
V2X = [(2, 0), (2, 1)]
Version = tuple[int, int]
DER, PKCS8 = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
RAW = serialization.Encoding.Raw


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


# -- request pieces ---------------------------------------------------------------------------------
def _attrs(version: Version, *pairs: tuple[str, Item]) -> list[Item]:
    """(name, value) pairs as 2.x tagged attributes or 1.x Attribute structures."""
    if version >= (2, 0):
        return [Item(wire.tag_for(n), v.type, v.value) for n, v in pairs]  # type: ignore[arg-type]
    return [v1(n, Item(T.ATTRIBUTE_VALUE.value, v.type, v.value)) for n, v in pairs]


def _holder(version: Version, *pairs: tuple[str, Item]) -> Item:
    tag = T.ATTRIBUTES if version >= (2, 0) else T.TEMPLATE_ATTRIBUTE
    return ttlv.struct_(tag, _attrs(version, *pairs))


def _enum(value: object) -> Item:
    return Item(0, Type.ENUMERATION, getattr(value, "value", value))


def _int(value: int) -> Item:
    return Item(0, Type.INTEGER, value)


def _active() -> tuple[str, Item]:
    return "Activation Date", Item(0, Type.DATE_TIME, int(time.time()) - 60)


def _domain(curve: RC) -> tuple[str, Item]:
    return "Cryptographic Domain Parameters", Item(0, Type.STRUCTURE, [ttlv.enum(T.RECOMMENDED_CURVE, curve)])


def _pair(c: Conn, version: Version, algorithm: A, curve: RC | None = None, priv_mask: int = M.SIGN.value,
          pub_mask: int = M.VERIFY.value, length: int | None = None) -> Item:
    """A CreateKeyPair batch item (success or not)."""
    common = [("Cryptographic Algorithm", _enum(algorithm)), _active()]
    if curve is not None:
        common.append(_domain(curve))
    if length is not None:
        common.append(("Cryptographic Length", _int(length)))
    tags = ((T.COMMON_ATTRIBUTES, T.PRIVATE_KEY_ATTRIBUTES, T.PUBLIC_KEY_ATTRIBUTES) if version >= (2, 0) else
            (T.COMMON_TEMPLATE_ATTRIBUTE, T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE, T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE))
    return c.call(Operation.CREATE_KEY_PAIR, [
        ttlv.struct_(tags[0], _attrs(version, *common)),
        ttlv.struct_(tags[1], _attrs(version, ("Cryptographic Usage Mask", _int(priv_mask)))),
        ttlv.struct_(tags[2], _attrs(version, ("Cryptographic Usage Mask", _int(pub_mask))))], version)


def _uids(bi: Item) -> tuple[str, str]:
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    out = bi.get(T.RESPONSE_PAYLOAD.value)
    return (out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value),  # type: ignore[union-attr,return-value]
            out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value))  # type: ignore[union-attr]


def _refused(bi: Item, reason: ResultReason) -> None:
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.OPERATION_FAILED.value, bi
    got = bi.value_of(T.RESULT_REASON.value)
    assert got == reason.value, (ResultReason(got).name, bi.value_of(T.RESULT_MESSAGE.value))  # type: ignore[arg-type]


def _block(c: Conn, uid: str, version: Version, fmt: KF | None = None) -> Item:
    fields = [uid_(uid)] + ([ttlv.enum(T.KEY_FORMAT_TYPE, fmt)] if fmt is not None else [])
    out = c.ok(Operation.GET, fields, version)
    obj = out.get(T.PRIVATE_KEY.value) or out.get(T.PUBLIC_KEY.value) or out.get(T.CERTIFICATE.value)
    return obj.get(T.KEY_BLOCK.value) or obj  # type: ignore[union-attr,return-value]


def _material(block: Item) -> Item:
    return block.get(T.KEY_VALUE.value).get(T.KEY_MATERIAL.value)  # type: ignore[union-attr,return-value]


def _attribute(c: Conn, uid: str, version: Version, name: str) -> list[Item]:
    """Every instance of ``name`` (as its value) on ``uid``."""
    out = get_attributes(c, uid, version, name)
    if version >= (2, 0):
        return list(out.get(T.ATTRIBUTES.value).all(wire.tag_for(name)))  # type: ignore[union-attr,arg-type]
    return [a.get(T.ATTRIBUTE_VALUE.value) for a in out.all(T.ATTRIBUTE.value)]  # type: ignore[misc]


def _key_object(kind: enums.ObjectType, fmt: KF, material: bytes | Item, algorithm: A | None,
                length: int | None = None) -> Item:
    tag = T.PRIVATE_KEY if kind == enums.ObjectType.PRIVATE_KEY else T.PUBLIC_KEY
    m = ttlv.bytes_(T.KEY_MATERIAL, material) if isinstance(material, bytes) else material
    return ttlv.struct_(tag, [ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, fmt), ttlv.struct_(T.KEY_VALUE, [m]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm) if algorithm is not None else None,
        ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length) if length is not None else None])])


def _register(c: Conn, version: Version, kind: enums.ObjectType, obj: Item, *pairs: tuple[str, Item]) -> Item:
    return c.call(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, kind), _holder(version, *pairs), obj], version)


def _registered(bi: Item) -> str:
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr,return-value]


# -- X25519 / X448 / Ed448 ---------------------------------------------------------------------------
CURVE_CASES = [
    (A.EC, RC.CURVE25519, x25519.X25519PrivateKey, 256, M.KEY_AGREEMENT.value, M.KEY_AGREEMENT.value),
    (A.ECDH, RC.CURVE448, x448.X448PrivateKey, 448, M.KEY_AGREEMENT.value, M.KEY_AGREEMENT.value),
    (A.ED448, None, ed448.Ed448PrivateKey, 448, M.SIGN.value, M.VERIFY.value),
    (A.ED448, RC.CURVE448, ed448.Ed448PrivateKey, 448, M.SIGN.value, M.VERIFY.value),
]


@pytest.mark.parametrize("version", V2X)
@pytest.mark.parametrize(("algorithm", "curve", "cls", "length", "priv_mask", "pub_mask"), CURVE_CASES)
def test_rfc_curve_key_pairs_in_every_format(conn: Conn, version: Version, algorithm: A, curve: RC | None,
                                             cls: type, length: int, priv_mask: int, pub_mask: int) -> None:
    priv, pub = _uids(_pair(conn, version, algorithm, curve, priv_mask, pub_mask))
    stored = _block(conn, priv, version)
    assert stored.value_of(T.KEY_FORMAT_TYPE.value) == KF.PKCS_8.value
    assert stored.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) == algorithm.value
    key = serialization.load_der_private_key(_material(stored).value, None)  # type: ignore[arg-type]
    assert isinstance(key, cls)
    public = serialization.load_der_public_key(_material(_block(conn, pub, version)).value)  # type: ignore[arg-type]
    assert public.public_bytes(RAW, serialization.PublicFormat.Raw) == \
        key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)  # type: ignore[attr-defined]
    assert [a.value for a in _attribute(conn, priv, version, "Cryptographic Length")] == [length]
    # Raw: the RFC 7748 / 8032 encodings.
    raw_priv = _material(_block(conn, priv, version, KF.RAW)).value
    assert raw_priv == key.private_bytes(RAW, serialization.PrivateFormat.Raw,  # type: ignore[attr-defined]
                                         serialization.NoEncryption())
    raw_pub = _material(_block(conn, pub, version, KF.RAW)).value
    assert raw_pub == public.public_bytes(RAW, serialization.PublicFormat.Raw)
    # Transparent EC public key: the curve and the encoded point; no transparent private form.
    t_pub = _material(_block(conn, pub, version, KF.TRANSPARENT_EC_PUBLIC_KEY))
    assert t_pub.value_of(T.RECOMMENDED_CURVE.value) == (RC.CURVE25519 if length == 256 else RC.CURVE448).value
    assert t_pub.value_of(T.Q_STRING.value) == raw_pub
    conn.fails(Operation.GET, [uid_(priv), ttlv.enum(T.KEY_FORMAT_TYPE, KF.TRANSPARENT_EC_PRIVATE_KEY)], version,
               ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED)
    # ReKeyKeyPair makes a new pair of the same kind.
    out = conn.ok(Operation.REKEY_KEY_PAIR, [ttlv.text(T.PRIVATE_KEY_UNIQUE_IDENTIFIER, priv)], version)
    new = out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)
    rekeyed = serialization.load_der_private_key(_material(_block(conn, new, version)).value, None)  # type: ignore[arg-type]
    assert isinstance(rekeyed, cls) and rekeyed.private_bytes(  # type: ignore[attr-defined]
        RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()) != raw_priv


@pytest.mark.parametrize("version", V2X)
def test_ed448_signs_and_verifies(conn: Conn, version: Version) -> None:
    priv, pub = _uids(_pair(conn, version, A.ED448))
    public = serialization.load_der_public_key(_material(_block(conn, pub, version)).value)  # type: ignore[arg-type]
    assert isinstance(public, ed448.Ed448PublicKey)
    message = b"sign me, Ed448"
    signature = conn.ok(Operation.SIGN, [uid_(priv), ttlv.bytes_(T.DATA, message)], version).value_of(
        T.SIGNATURE_DATA.value)
    public.verify(signature, message)  # type: ignore[arg-type]  # raises if the server signed wrongly
    for data, expected in ((message, enums.ValidityIndicator.VALID), (b"tampered", enums.ValidityIndicator.INVALID)):
        got = conn.ok(Operation.SIGNATURE_VERIFY, [uid_(pub), ttlv.bytes_(T.DATA, data),
                                                   ttlv.bytes_(T.SIGNATURE_DATA, signature)], version)  # type: ignore[arg-type]
        assert got.value_of(T.VALIDITY_INDICATOR.value) == expected.value
    # Ed448 signs the message itself: pre-hashed input is refused.
    conn.fails(Operation.SIGN, [uid_(priv), ttlv.bytes_(T.DIGESTED_DATA, bytes(64))], version,
               ResultReason.INVALID_FIELD)


@pytest.mark.parametrize("version", V2X)
def test_key_agreement_keys_do_not_sign(conn: Conn, version: Version) -> None:
    # A signing usage mask on an X25519 / X448 key is refused at creation ...
    for curve in (RC.CURVE25519, RC.CURVE448):
        _refused(_pair(conn, version, A.EC, curve, M.SIGN.value, M.VERIFY.value), ResultReason.INVALID_FIELD)
    # ... and a key registered without any usage mask still cannot sign or verify.
    key = x25519.X25519PrivateKey.generate()
    priv = _registered(_register(conn, version, enums.ObjectType.PRIVATE_KEY, _key_object(
        enums.ObjectType.PRIVATE_KEY, KF.PKCS_8, key.private_bytes(DER, PKCS8, serialization.NoEncryption()), A.ECDH),
        _active()))
    conn.fails(Operation.SIGN, [uid_(priv), ttlv.bytes_(T.DATA, b"x")], version,
               ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)
    pub = _registered(_register(conn, version, enums.ObjectType.PUBLIC_KEY, _key_object(
        enums.ObjectType.PUBLIC_KEY, KF.RAW, key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw),
        A.EC), _active()))
    conn.fails(Operation.SIGNATURE_VERIFY, [uid_(pub), ttlv.bytes_(T.DATA, b"x"),
                                            ttlv.bytes_(T.SIGNATURE_DATA, bytes(64))], version,
               ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)
    # The Raw public key registered is the X25519 key (read back as SubjectPublicKeyInfo).
    spki = _material(_block(conn, pub, version, KF.X_509)).value
    assert spki == key.public_key().public_bytes(DER, SPKI)


@pytest.mark.parametrize("version", V2X)
def test_contradictory_curve_requests_are_refused(conn: Conn, version: Version) -> None:
    cases = [
        (A.ECDSA, RC.CURVE25519, None),  # ECDSA is not defined on Curve25519 (that is Ed25519)
        (A.ED25519, RC.CURVE448, None),  # Ed25519 lives on Curve25519
        (A.ED448, RC.CURVE25519, None),
        (A.EC, RC.CURVE25519, 448),  # the length contradicts the curve
        (A.ED448, None, 256),
    ]
    for algorithm, curve, length in cases:
        _refused(_pair(conn, version, algorithm, curve, M.KEY_AGREEMENT.value, M.KEY_AGREEMENT.value, length),
                 ResultReason.INVALID_FIELD)


@pytest.mark.parametrize("version", V2X)
def test_register_refuses_wrong_curve_labels_and_truncated_keys(conn: Conn, version: Version) -> None:
    priv_t, pub_t = enums.ObjectType.PRIVATE_KEY, enums.ObjectType.PUBLIC_KEY
    ed = ed448.Ed448PrivateKey.generate()
    x = x25519.X25519PrivateKey.generate()
    ed_der = ed.private_bytes(DER, PKCS8, serialization.NoEncryption())
    x_raw_pub = x.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)
    bad = [
        (priv_t, _key_object(priv_t, KF.PKCS_8, ed_der, A.ED25519)),  # an Ed448 key labelled Ed25519
        (priv_t, _key_object(priv_t, KF.PKCS_8, ed_der, A.EC)),  # ... labelled EC
        (priv_t, _key_object(priv_t, KF.PKCS_8, ed_der, A.ED448, 256)),  # ... with a wrong length
        (priv_t, _key_object(priv_t, KF.PKCS_8, ed_der[:-9], A.ED448)),  # truncated
        (priv_t, _key_object(priv_t, KF.RAW, bytes(32), A.ED448)),  # 32 bytes are no Ed448 key
        (priv_t, _key_object(priv_t, KF.RAW, bytes(31), A.EC)),  # nor an X25519 one
        (pub_t, _key_object(pub_t, KF.X_509, x.public_key().public_bytes(DER, SPKI), A.ED25519)),
        # Transparent EC naming Curve448 with a Curve25519 point.
        (pub_t, _key_object(pub_t, KF.TRANSPARENT_EC_PUBLIC_KEY, ttlv.struct_(T.KEY_MATERIAL, [
            ttlv.enum(T.RECOMMENDED_CURVE, RC.CURVE448), ttlv.bytes_(T.Q_STRING, x_raw_pub)]), A.EC)),
    ]
    for kind, obj in bad:
        _refused(_register(conn, version, kind, obj), ResultReason.INVALID_FIELD)
    # Raw bytes say neither X25519 nor Ed25519: the Key Block itself must name the algorithm.
    _refused(_register(conn, version, pub_t, _key_object(pub_t, KF.RAW, x_raw_pub, None),
                       ("Cryptographic Algorithm", _enum(A.EC))), ResultReason.MISSING_DATA)
    # Controls: the same material under its true labels is accepted.
    _registered(_register(conn, version, priv_t, _key_object(priv_t, KF.PKCS_8, ed_der, A.ED448, 448)))
    uid = _registered(_register(conn, version, pub_t, _key_object(pub_t, KF.TRANSPARENT_EC_PUBLIC_KEY, ttlv.struct_(
        T.KEY_MATERIAL, [ttlv.enum(T.RECOMMENDED_CURVE, RC.CURVE25519), ttlv.bytes_(T.Q_STRING, x_raw_pub)]), A.EC)))
    assert _material(_block(conn, uid, version, KF.X_509)).value == x.public_key().public_bytes(DER, SPKI)


@pytest.mark.parametrize("version", [(1, 2), (1, 4)])
def test_rfc_curves_do_not_exist_in_1x(conn: Conn, version: Version) -> None:
    # Ed448 (0x38) and Curve25519/Curve448 (0x45/0x46) are KMIP 2.0 enumeration values.
    _refused(_pair(conn, version, A.ED448), ResultReason.INVALID_FIELD)
    _refused(_pair(conn, version, A.EC, RC.CURVE25519, M.KEY_AGREEMENT.value, M.KEY_AGREEMENT.value),
             ResultReason.INVALID_FIELD)
    for key in (ed448.Ed448PrivateKey.generate(), x448.X448PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()):
        obj = _key_object(enums.ObjectType.PRIVATE_KEY, KF.PKCS_8, key.private_bytes(
            DER, PKCS8, serialization.NoEncryption()), A.EC)
        _refused(_register(conn, version, enums.ObjectType.PRIVATE_KEY, obj), ResultReason.INVALID_FIELD)
    # Controls: an EC P-256 pair is still made at this version, and Raw bytes labelled EC are
    # kept as given (a 1.x Raw key is never read as an X25519 one).
    _uids(_pair(conn, version, A.EC, RC.P_256, M.SIGN.value, M.VERIFY.value))
    _registered(_register(conn, version, enums.ObjectType.PRIVATE_KEY,
                          _key_object(enums.ObjectType.PRIVATE_KEY, KF.RAW, bytes(range(32)), A.EC)))


# -- PKCS#12 Register (KMIP 1.4) -----------------------------------------------------------------------
def _cert(subject: str, key: object, issuer_name: str, issuer_key: object) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())  # type: ignore[attr-defined]
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(issuer_key, hashes.SHA256()))  # type: ignore[arg-type]


def _chain() -> tuple[rsa.RSAPrivateKey, x509.Certificate, x509.Certificate, x509.Certificate]:
    """A key, its certificate, an intermediate CA and a root CA."""
    root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    key = rsa.generate_private_key(65537, 2048)
    root = _cert("p12 root", root_key, "p12 root", root_key)
    inter = _cert("p12 intermediate", inter_key, "p12 root", root_key)
    leaf = _cert("p12 leaf", key, "p12 intermediate", inter_key)
    return key, leaf, inter, root


def _password(c: Conn, version: Version, password: bytes) -> str:
    obj = ttlv.struct_(T.SECRET_DATA, [ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                                       ttlv.struct_(T.KEY_BLOCK, [ttlv.enum(T.KEY_FORMAT_TYPE, KF.OPAQUE),
                                                                  ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(
                                                                      T.KEY_MATERIAL, password)])])])
    return _registered(_register(c, version, enums.ObjectType.SECRET_DATA, obj))


def _link(link_type: enums.LinkType, target: str) -> tuple[str, Item]:
    return "Link", Item(0, Type.STRUCTURE, [ttlv.enum(T.LINK_TYPE, link_type),
                                           ttlv.text(T.LINKED_OBJECT_IDENTIFIER, target)])


def _p12_object(blob: bytes, algorithm: A | None = None) -> Item:
    return _key_object(enums.ObjectType.PRIVATE_KEY, KF.PKCS_12, blob, algorithm)


def _links(c: Conn, uid: str, version: Version) -> dict[int, str]:
    return {a.value_of(T.LINK_TYPE.value): a.value_of(T.LINKED_OBJECT_IDENTIFIER.value)  # type: ignore[misc]
            for a in _attribute(c, uid, version, "Link")}


@pytest.mark.parametrize("version", [(1, 4), (2, 1)])
def test_register_pkcs12_splits_it_into_linked_objects(conn: Conn, version: Version) -> None:
    key, leaf, inter, root = _chain()
    secret = b"p12 s3cret " + uuid.uuid4().hex.encode()
    blob = pkcs12.serialize_key_and_certificates(b"payroll signing key", key, leaf, [root, inter],
                                                 serialization.BestAvailableEncryption(secret))
    password = _password(conn, version, secret)
    name = f"p12-{uuid.uuid4().hex[:8]}"
    priv = _registered(_register(conn, version, enums.ObjectType.PRIVATE_KEY, _p12_object(blob),
                                 _link(enums.LinkType.PKCS12_PASSWORD_LINK, password),
                                 ("Cryptographic Usage Mask", _int(M.SIGN.value)),
                                 ("Name", Item(0, Type.STRUCTURE, name_attr(name, (2, 1)).value))))
    # The private key: kept as PKCS#8 with its own algorithm and length, and the request's attributes.
    stored = _block(conn, priv, version)
    assert stored.value_of(T.KEY_FORMAT_TYPE.value) == KF.PKCS_8.value
    assert stored.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) == A.RSA.value
    assert stored.value_of(T.CRYPTOGRAPHIC_LENGTH.value) == 2048
    got = serialization.load_der_private_key(_material(stored).value, None)  # type: ignore[arg-type]
    assert got.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    assert [n.value_of(T.NAME_VALUE.value) for n in _attribute(conn, priv, version, "Name")] == [name]
    assert [f.value for f in _attribute(conn, priv, version, "PKCS#12 Friendly Name")] == ["payroll signing key"]
    # The certificates: the key's own by its PKCS#12 Certificate Link, each issuer by Certificate Link.
    links = _links(conn, priv, version)
    assert links[enums.LinkType.PKCS12_PASSWORD_LINK.value] == password
    leaf_uid = links[enums.LinkType.PKCS12_CERTIFICATE_LINK.value]
    assert _block(conn, leaf_uid, version).value_of(T.CERTIFICATE_VALUE.value) == leaf.public_bytes(DER)
    inter_uid = _links(conn, leaf_uid, version)[enums.LinkType.CERTIFICATE_LINK.value]
    assert _block(conn, inter_uid, version).value_of(T.CERTIFICATE_VALUE.value) == inter.public_bytes(DER)
    root_uid = _links(conn, inter_uid, version)[enums.LinkType.CERTIFICATE_LINK.value]
    assert _block(conn, root_uid, version).value_of(T.CERTIFICATE_VALUE.value) == root.public_bytes(DER)
    assert enums.LinkType.CERTIFICATE_LINK.value not in _links(conn, root_uid, version)  # self-signed: the end
    # The public key: linked both ways to the private key, naming the certificate as KMIP 2.x's
    # Get expects it (private key -> Public Key Link -> PKCS#12 Certificate Link).
    pub_uid = links[enums.LinkType.PUBLIC_KEY_LINK.value]
    spki = _material(_block(conn, pub_uid, version)).value
    assert spki == key.public_key().public_bytes(DER, SPKI)
    assert _links(conn, pub_uid, version) == {enums.LinkType.PRIVATE_KEY_LINK.value: priv,
                                              enums.LinkType.PKCS12_CERTIFICATE_LINK.value: leaf_uid}
    assert _links(conn, leaf_uid, version)[enums.LinkType.PUBLIC_KEY_LINK.value] == pub_uid
    # Get as PKCS#12 puts the same PKCS#12 contents back together.
    again = _material(_block(conn, priv, version, KF.PKCS_12)).value
    bundle = pkcs12.load_pkcs12(again, secret)  # type: ignore[arg-type]
    assert bundle.key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    assert bundle.cert.certificate == leaf and bundle.cert.friendly_name == b"payroll signing key"  # type: ignore[union-attr]
    assert [c.certificate for c in bundle.additional_certs] == [inter, root]
    # Without the private key's own PKCS#12 Certificate Link, Get finds the certificate by the
    # 2.x path (the public key's), with the same chain.
    listed = conn.ok(Operation.GET_ATTRIBUTES, [uid_(priv), ttlv.text(T.ATTRIBUTE_NAME, "Link")], (1, 4))
    index = next(a.value_of(T.ATTRIBUTE_INDEX.value) for a in listed.all(T.ATTRIBUTE.value)
                 if a.get(T.ATTRIBUTE_VALUE.value).value_of(T.LINK_TYPE.value)  # type: ignore[union-attr]
                 == enums.LinkType.PKCS12_CERTIFICATE_LINK.value)
    conn.ok(Operation.DELETE_ATTRIBUTE, [uid_(priv), ttlv.text(T.ATTRIBUTE_NAME, "Link"),
                                         ttlv.integer(T.ATTRIBUTE_INDEX, index)], (1, 4))  # type: ignore[arg-type]
    assert enums.LinkType.PKCS12_CERTIFICATE_LINK.value not in _links(conn, priv, version)
    bundle = pkcs12.load_pkcs12(_material(_block(conn, priv, version, KF.PKCS_12)).value, secret)  # type: ignore[arg-type]
    assert bundle.cert.certificate == leaf  # type: ignore[union-attr]
    assert [c.certificate for c in bundle.additional_certs] == [inter, root]


def _count(c: Conn, version: Version, kind: enums.ObjectType) -> int:
    fields = ([ttlv.struct_(T.ATTRIBUTES, [ttlv.enum(T.OBJECT_TYPE, kind)])] if version >= (2, 0)
              else [v1("Object Type", ttlv.enum(T.ATTRIBUTE_VALUE, kind))])
    return len(c.ok(Operation.LOCATE, fields, version).all(T.UNIQUE_IDENTIFIER.value))


@pytest.mark.parametrize("version", [(1, 4), (2, 1)])
def test_register_pkcs12_refuses_bad_blobs_and_writes_nothing(conn: Conn, version: Version) -> None:
    key, leaf, inter, root = _chain()
    secret = b"right password"
    blob = pkcs12.serialize_key_and_certificates(b"k", key, leaf, [inter, root],
                                                 serialization.BestAvailableEncryption(secret))
    right, wrong = _password(conn, version, secret), _password(conn, version, b"wrong password")
    aes = create_aes(conn, version)
    certs_only = pkcs12.serialize_key_and_certificates(None, None, None, [leaf],
                                                       serialization.BestAvailableEncryption(secret))
    # A PKCS#12 whose MAC asks for 2^31 - 1 iterations: over the request's work budget, refused
    # before any of them is done (else this request would hold its worker for many minutes).
    pfx = asn1_pkcs12.Pfx.load(blob)
    pfx["mac_data"]["iterations"] = 2**31 - 1
    costly = pfx.dump(force=True)
    # More certificates than a key's own and a chain Get could give back (10 issuers): refused.
    filler = ec.generate_private_key(ec.SECP256R1())
    crowded = pkcs12.serialize_key_and_certificates(
        b"k", key, leaf, [_cert(f"filler {i}", filler, f"filler {i}", filler) for i in range(11)],
        serialization.BestAvailableEncryption(secret))
    before = (_count(conn, version, enums.ObjectType.CERTIFICATE), _count(conn, version, enums.ObjectType.PRIVATE_KEY))
    public_before = _count(conn, version, enums.ObjectType.PUBLIC_KEY)
    # Password problems: KMIP 2.x's Bad Password, 1.4's Invalid Field.
    bad_password = ResultReason.BAD_PASSWORD if version >= (2, 0) else ResultReason.INVALID_FIELD
    refusals = [
        (_p12_object(blob), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, wrong)], bad_password),
        (_p12_object(blob), [], bad_password),  # encrypted, and no password given
        (_p12_object(blob), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right),
                             _link(enums.LinkType.PKCS12_PASSWORD_LINK, wrong)], bad_password),  # which one?
        (_p12_object(blob[: len(blob) // 2]), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right)],
         ResultReason.INVALID_FIELD),  # truncated
        (_p12_object(b"\x30\x03\x02\x01\x03"), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right)],
         ResultReason.INVALID_FIELD),  # DER, but no PFX
        (_p12_object(certs_only), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right)],
         ResultReason.INVALID_FIELD),  # no private key inside
        (_p12_object(blob, A.EC), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right)],
         ResultReason.INVALID_FIELD),  # labelled EC, holds an RSA key
        (_p12_object(blob), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, aes)],
         bad_password),  # the "password" is a symmetric key
        (_p12_object(costly), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right)], ResultReason.INVALID_FIELD),
        (_p12_object(crowded), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, right)], ResultReason.INVALID_FIELD),
        (_p12_object(blob), [_link(enums.LinkType.PKCS12_PASSWORD_LINK, str(uuid.uuid4()))],
         ResultReason.OBJECT_NOT_FOUND if version >= (2, 0) else ResultReason.ITEM_NOT_FOUND),
    ]
    for obj, pairs, reason in refusals:
        _refused(_register(conn, version, enums.ObjectType.PRIVATE_KEY, obj, *pairs), reason)
    # Nothing half-written: no certificate or key of the refused blobs was kept.
    assert (_count(conn, version, enums.ObjectType.CERTIFICATE),
            _count(conn, version, enums.ObjectType.PRIVATE_KEY)) == before
    assert _count(conn, version, enums.ObjectType.PUBLIC_KEY) == public_before
    # Control: the right password registers the key, its public key and its three certificates.
    _registered(_register(conn, version, enums.ObjectType.PRIVATE_KEY, _p12_object(blob),
                          _link(enums.LinkType.PKCS12_PASSWORD_LINK, right)))
    assert (_count(conn, version, enums.ObjectType.CERTIFICATE),
            _count(conn, version, enums.ObjectType.PRIVATE_KEY)) == (before[0] + 3, before[1] + 1)
    assert _count(conn, version, enums.ObjectType.PUBLIC_KEY) == public_before + 1


def test_unencrypted_pkcs12_needs_no_password(conn: Conn) -> None:
    version = (1, 4)
    key = ec.generate_private_key(ec.SECP384R1())
    blob = pkcs12.serialize_key_and_certificates(None, key, None, None, serialization.NoEncryption())
    priv = _registered(_register(conn, version, enums.ObjectType.PRIVATE_KEY, _p12_object(blob)))
    stored = _block(conn, priv, version)
    assert (stored.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value), stored.value_of(T.CRYPTOGRAPHIC_LENGTH.value)) == \
        (A.EC.value, 384)
    assert enums.LinkType.PKCS12_CERTIFICATE_LINK.value not in _links(conn, priv, version)  # none inside


def test_pkcs12_does_not_exist_before_14(conn: Conn) -> None:
    key, leaf, _inter, _root = _chain()
    blob = pkcs12.serialize_key_and_certificates(None, key, leaf, None, serialization.NoEncryption())
    _refused(_register(conn, (1, 3), enums.ObjectType.PRIVATE_KEY, _p12_object(blob)), ResultReason.INVALID_FIELD)


# -- Locate: Object Group Member (KMIP 1.1) --------------------------------------------------------------
def _in_group(c: Conn, version: Version, group: str) -> str:
    return create_aes(c, version, *_attrs(version, ("Object Group", Item(0, Type.TEXT_STRING, group))))


def _locate(c: Conn, version: Version, group: str, member: int | None, *extra: tuple[str, Item]) -> list[str]:
    fields = [ttlv.enum(T.OBJECT_GROUP_MEMBER, member)] if member is not None else []
    criteria = _attrs(version, ("Object Group", Item(0, Type.TEXT_STRING, group)), *extra)
    fields.append(ttlv.struct_(T.ATTRIBUTES, criteria) if version >= (2, 0) else criteria[0])
    if version < (2, 0):
        fields += criteria[1:]
    out = c.ok(Operation.LOCATE, fields, version)
    return [u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)]  # type: ignore[misc]


@pytest.mark.parametrize("version", [(1, 1), (1, 4), (2, 1)])
def test_object_group_member_fresh_and_default(conn: Conn, version: Version) -> None:
    fresh = enums.ObjectGroupMember.GROUP_MEMBER_FRESH.value
    default = enums.ObjectGroupMember.GROUP_MEMBER_DEFAULT.value
    group = f"grp-{uuid.uuid4().hex[:8]}"
    uids = [_in_group(conn, version, group) for _ in range(3)]
    create_aes(conn, version)  # not in the group
    assert sorted(_locate(conn, version, group, None)) == sorted(uids)
    assert sorted(_locate(conn, version, group, fresh)) == sorted(uids)
    conn.ok(Operation.GET, [uid_(uids[1])], version)  # served: no longer fresh
    assert sorted(_locate(conn, version, group, fresh)) == sorted([uids[0], uids[2]])
    # Fresh as a criterion: the served one (false), the others (true).
    assert _locate(conn, version, group, None, ("Fresh", Item(0, Type.BOOLEAN, False))) == [uids[1]]
    assert sorted(_locate(conn, version, group, None, ("Fresh", Item(0, Type.BOOLEAN, True)))) == \
        sorted([uids[0], uids[2]])
    # Group Member Fresh and Fresh false contradict each other: nothing matches.
    assert _locate(conn, version, group, fresh, ("Fresh", Item(0, Type.BOOLEAN, False))) == []
    # Default: one object, the group's newest.
    assert _locate(conn, version, group, default) == [uids[2]]
    assert _locate(conn, version, f"no-such-{group}", default) == []
    # A value the enumeration lacks, or of the wrong type.
    crit = _attrs(version, ("Object Group", Item(0, Type.TEXT_STRING, group)))
    holder = [ttlv.struct_(T.ATTRIBUTES, crit)] if version >= (2, 0) else crit
    conn.fails(Operation.LOCATE, [ttlv.enum(T.OBJECT_GROUP_MEMBER, 3), *holder], version, ResultReason.INVALID_FIELD)
    conn.fails(Operation.LOCATE, [ttlv.integer(T.OBJECT_GROUP_MEMBER, 1), *holder], version,
               ResultReason.INVALID_FIELD)


def test_object_group_member_does_not_exist_in_10(conn: Conn) -> None:
    group = f"grp-{uuid.uuid4().hex[:8]}"
    _in_group(conn, (1, 0), group)
    assert len(_locate(conn, (1, 0), group, None)) == 1
    conn.fails(Operation.LOCATE, [ttlv.enum(T.OBJECT_GROUP_MEMBER, enums.ObjectGroupMember.GROUP_MEMBER_FRESH),
                                  v1("Object Group", ttlv.text(T.ATTRIBUTE_VALUE, group))], (1, 0),
               ResultReason.INVALID_FIELD)


@pytest.mark.parametrize("version", [(1, 0), (1, 2)])
def test_locate_by_name_inside_a_template_attribute(conn: Conn, version: Version) -> None:
    name = f"tmpl-{uuid.uuid4().hex[:8]}"
    uid = create_aes(conn, version, name_attr(name, version))
    create_aes(conn, version)
    template = ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [name_attr(name, version)])
    out = conn.ok(Operation.LOCATE, [template], version)
    assert [u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)] == [uid]


def test_pkcs12_register_is_slow_work_in_an_undo_batch_on_sqlite(conn: Conn, backend: str) -> None:
    """Opening a PKCS#12 runs its password-based KDF: inside an Undo batch on SQLite that would
    hold the database's one write lock meanwhile, so the batch is refused before it runs (as
    CreateKeyPair and PBKDF2 DeriveKey are); PostgreSQL runs it."""
    from kmip_bridge.client import request

    version = (2, 1)
    key, leaf, _inter, _root = _chain()
    blob = pkcs12.serialize_key_and_certificates(None, key, leaf, None, serialization.BestAvailableEncryption(b"pw"))
    password = _password(conn, version, b"pw")
    fields = [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.PRIVATE_KEY),
              _holder(version, _link(enums.LinkType.PKCS12_PASSWORD_LINK, password)), _p12_object(blob)]
    before = _count(conn, version, enums.ObjectType.CERTIFICATE)
    msg = request([(Operation.REGISTER.value, ttlv.struct_(T.REQUEST_PAYLOAD, fields))], version=version,
                  batch_error_option=enums.BatchErrorContinuationOption.UNDO.value)
    (bi,) = conn.raw.call(msg).all(T.BATCH_ITEM.value)
    if backend == "sqlite":
        _refused(bi, ResultReason.SERVER_LIMIT_EXCEEDED)
        assert _count(conn, version, enums.ObjectType.CERTIFICATE) == before
    else:
        _registered(bi)
        assert _count(conn, version, enums.ObjectType.CERTIFICATE) == before + 1
