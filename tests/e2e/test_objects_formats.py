"""Objects beyond the mandatory vectors: Create of Secret Data, metadata-only keys (Register
without Key Value: Key Value Present false), Original Creation Date given on a 1.4 Register,
Template objects refused as Feature Not Supported — over raw TTLV (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server
from .rawkmip import Conn, attribute_names, create_aes, date_attr, get_attributes, open_conn, uid_, v1

pytestmark = pytest.mark.e2e
VERSIONS = [(1, 4), (2, 1)]
EVERY = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


def _attrs(version: tuple[int, int], *pairs: tuple[str, Item]) -> Item:
    """Template-Attribute (1.x) or Attributes (2.x) of (name, tagged value) pairs."""
    if version >= (2, 0):
        return ttlv.struct_(T.ATTRIBUTES, [Item(T[n.upper().replace(" ", "_")].value, v.type, v.value)
                                           for n, v in pairs])
    return ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [v1(n, Item(T.ATTRIBUTE_VALUE.value, v.type, v.value))
                                               for n, v in pairs])


def _value(c: Conn, uid: str, version: tuple[int, int], name: str) -> object:
    out = get_attributes(c, uid, version, name)
    if version >= (2, 0):
        attrs = out.get(T.ATTRIBUTES.value)
        item = attrs.get(T[name.upper().replace(" ", "_")].value) if attrs is not None else None
        return item.value if item is not None else None
    a = out.get(T.ATTRIBUTE.value)
    return a.value_of(T.ATTRIBUTE_VALUE.value) if a is not None else None


# -- Create of Secret Data --------------------------------------------------------------------------
@pytest.mark.parametrize("version", EVERY)
def test_create_secret_data(conn: Conn, version: tuple[int, int]) -> None:
    mask = ("Cryptographic Usage Mask", ttlv.integer(0, enums.CryptographicUsageMask.DERIVE_KEY.value))
    out = conn.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                                     _attrs(version, mask, ("Cryptographic Length", ttlv.integer(0, 128)))], version)
    assert out.value_of(T.OBJECT_TYPE.value) == enums.ObjectType.SECRET_DATA.value
    uid = out.value_of(T.UNIQUE_IDENTIFIER.value)
    got = conn.ok(Operation.GET, [uid_(uid)], version).get(T.SECRET_DATA.value)  # type: ignore[arg-type]
    assert got is not None and got.value_of(T.SECRET_DATA_TYPE.value) == enums.SecretDataType.SEED.value
    material = got.get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(T.KEY_MATERIAL.value)  # type: ignore[union-attr]
    assert isinstance(material, bytes) and len(material) == 16
    # Default length, and two secrets are not the same bytes.
    out2 = conn.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA), _attrs(version, mask)],
                   version)
    got2 = conn.ok(Operation.GET, [uid_(out2.value_of(T.UNIQUE_IDENTIFIER.value))], version)  # type: ignore[arg-type]
    m2 = got2.get(T.SECRET_DATA.value).get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(T.KEY_MATERIAL.value)  # type: ignore[union-attr]
    assert len(m2) == 32 and m2[:16] != material  # type: ignore[arg-type,index]


@pytest.mark.parametrize("version", VERSIONS)
def test_create_secret_data_refuses_nonsense(conn: Conn, version: tuple[int, int]) -> None:
    kind = ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA)
    conn.fails(Operation.CREATE, [kind, _attrs(version, ("Cryptographic Length", ttlv.integer(0, 12)))], version,
               ResultReason.INVALID_FIELD)
    alg = ("Cryptographic Algorithm", ttlv.enum(0, enums.CryptographicAlgorithm.AES))
    conn.fails(Operation.CREATE, [kind, _attrs(version, alg)], version, ResultReason.INVALID_FIELD)


# -- Templates ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [Operation.CREATE, Operation.REGISTER])
def test_template_objects_are_a_feature_not_supported(conn: Conn, op: Operation) -> None:
    kind = ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.TEMPLATE)
    template = ttlv.struct_(T.TEMPLATE, [v1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 128))])
    fields = [kind, ttlv.struct_(T.TEMPLATE_ATTRIBUTE, []), template]
    conn.fails(op, fields, (1, 4), ResultReason.FEATURE_NOT_SUPPORTED)
    conn.fails(op, fields, (1, 0), ResultReason.FEATURE_NOT_SUPPORTED)


# -- metadata-only keys -------------------------------------------------------------------------------
def _symmetric(material: bytes | None) -> Item:
    parts = [ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW)]
    if material is not None:
        parts.append(ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]))
    parts += [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
              ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)]
    return ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, parts)])


def _register(c: Conn, version: tuple[int, int], material: bytes | None, *pairs: tuple[str, Item]) -> Item:
    mask = ("Cryptographic Usage Mask", ttlv.integer(0, enums.CryptographicUsageMask.ENCRYPT.value))
    return c.call(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                       _attrs(version, mask, *pairs), _symmetric(material)], version)


def _uid(bi: Item) -> str:
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr,return-value]


@pytest.mark.parametrize("version", EVERY[2:])  # Key Value Present / Location: KMIP 1.2
def test_register_without_key_value_is_metadata_only(conn: Conn, version: tuple[int, int]) -> None:
    location = ("Key Value Location",
                ttlv.struct_(0, [ttlv.text(T.KEY_VALUE_LOCATION_VALUE, "hsm://vault-7/slot-3"),
                                 ttlv.enum(T.KEY_VALUE_LOCATION_TYPE, enums.KeyValueLocationType.URI)]))
    uid = _uid(_register(conn, version, None, location))
    assert _value(conn, uid, version, "Key Value Present") is False
    got = conn.ok(Operation.GET, [uid_(uid)], version).get(T.SYMMETRIC_KEY.value)
    assert got.get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value) is None  # type: ignore[union-attr]
    # Control: a key registered with its value carries no 'absent' marker.
    full = _uid(_register(conn, version, bytes(32)))
    assert _value(conn, full, version, "Key Value Present") is None


@pytest.mark.parametrize("version", VERSIONS)
def test_key_value_present_must_match_the_object(conn: Conn, version: tuple[int, int]) -> None:
    claims = ("Key Value Present", ttlv.boolean(0, True))
    denies = ("Key Value Present", ttlv.boolean(0, False))
    bi = _register(conn, version, None, claims)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    bi = _register(conn, version, bytes(32), denies)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    _uid(_register(conn, version, bytes(32), claims))  # control: a true claim is accepted


# -- Original Creation Date ---------------------------------------------------------------------------
ORIGINAL = 1_500_000_000  # 2017-07-14


@pytest.mark.parametrize("version", VERSIONS)
def test_register_keeps_the_clients_original_creation_date(conn: Conn, version: tuple[int, int]) -> None:
    uid = _uid(_register(conn, version, bytes(32), ("Original Creation Date", ttlv.date_time(0, ORIGINAL))))
    assert _value(conn, uid, version, "Original Creation Date") == ORIGINAL
    initial = _value(conn, uid, version, "Initial Date")
    assert isinstance(initial, int) and initial > ORIGINAL  # the server's own date is now
    # Without one, the server sets it (to the Initial Date).
    own = _uid(_register(conn, version, bytes(32)))
    assert _value(conn, own, version, "Original Creation Date") == _value(conn, own, version, "Initial Date")


def test_original_creation_date_is_the_servers_before_14_and_on_create(conn: Conn) -> None:
    bi = _register(conn, (1, 3), bytes(32), ("Original Creation Date", ttlv.date_time(0, ORIGINAL)))
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    pairs = [("Cryptographic Algorithm", ttlv.enum(0, enums.CryptographicAlgorithm.AES)),
             ("Cryptographic Length", ttlv.integer(0, 256)), ("Original Creation Date", ttlv.date_time(0, ORIGINAL))]
    conn.fails(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), _attrs((1, 4), *pairs)],
               (1, 4), ResultReason.INVALID_FIELD)


# -- X.509 certificate attributes -----------------------------------------------------------------
def _certificate() -> tuple[bytes, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmip-cert-test"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x1234567890).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("kms.example")]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER), cert


@pytest.mark.parametrize("version", [(1, 0), (1, 1), (1, 4), (2, 1)])
def test_certificate_attributes_by_version(conn: Conn, version: tuple[int, int]) -> None:
    der, cert = _certificate()
    certificate = ttlv.struct_(T.CERTIFICATE, [ttlv.enum(T.CERTIFICATE_TYPE, enums.CertificateType.X_509),
                                               ttlv.bytes_(T.CERTIFICATE_VALUE, der)])
    template = ttlv.struct_(T.ATTRIBUTES if version >= (2, 0) else T.TEMPLATE_ATTRIBUTE, [])
    out = conn.ok(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.CERTIFICATE), template, certificate],
                  version)
    uid = out.value_of(T.UNIQUE_IDENTIFIER.value)
    names = attribute_names(conn.ok(Operation.GET_ATTRIBUTES, [uid_(uid)], version), version)  # type: ignore[arg-type]
    x509_names = {"X.509 Certificate Identifier", "X.509 Certificate Subject", "X.509 Certificate Issuer",
                  "Digital Signature Algorithm", "Certificate Length"}
    v10_names = {"Certificate Identifier", "Certificate Subject", "Certificate Issuer"}
    assert x509_names <= set(names) if version >= (1, 1) else not x509_names & set(names), names
    assert v10_names <= set(names) if version < (2, 0) else not v10_names & set(names), names
    if version >= (1, 1):
        assert _value(conn, uid, version, "Digital Signature Algorithm") == \
            enums.DigitalSignatureAlgorithm.ECDSA_WITH_SHA256.value  # type: ignore[arg-type]
        assert _value(conn, uid, version, "Certificate Length") == len(der)  # type: ignore[arg-type]
        ident = _struct(conn, uid, version, "X.509 Certificate Identifier")
        assert ident.value_of(T.ISSUER_DISTINGUISHED_NAME.value) == cert.issuer.public_bytes()
        assert int.from_bytes(ident.value_of(T.CERTIFICATE_SERIAL_NUMBER.value), "big") == 0x1234567890  # type: ignore[arg-type]
        subject = _struct(conn, uid, version, "X.509 Certificate Subject")
        assert subject.value_of(T.SUBJECT_ALTERNATIVE_NAME.value) is not None  # type: ignore[arg-type]
    else:
        ident = _struct(conn, uid, version, "Certificate Identifier")
        assert ident.value_of(T.SERIAL_NUMBER.value) == str(0x1234567890)
        assert "kmip-cert-test" in ident.value_of(T.ISSUER.value)  # type: ignore[operator]


def _struct(c: Conn, uid: str, version: tuple[int, int], name: str) -> Item:
    out = get_attributes(c, uid, version, name)
    if version >= (2, 0):
        return out.get(T.ATTRIBUTES.value).get(T[name.upper().replace(" ", "_").replace(".", "_")].value)  # type: ignore[union-attr,return-value]
    return out.get(T.ATTRIBUTE.value).get(T.ATTRIBUTE_VALUE.value)  # type: ignore[union-attr,return-value]


# -- Register refuses material that contradicts its labels -----------------------------------------
def _private_key(der: bytes, algorithm: enums.CryptographicAlgorithm, length: int) -> Item:
    return ttlv.struct_(T.PRIVATE_KEY, [ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.PKCS_8),
        ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, der)]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm), ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length)])])


@pytest.mark.parametrize("version", EVERY)
def test_register_refuses_contradicting_labels(conn: Conn, version: tuple[int, int]) -> None:
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    kind = ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.PRIVATE_KEY)
    mask = ("Cryptographic Usage Mask", ttlv.integer(0, enums.CryptographicUsageMask.SIGN.value))
    for algorithm, length in ((enums.CryptographicAlgorithm.RSA, 2048), (enums.CryptographicAlgorithm.EC, 384)):
        conn.fails(Operation.REGISTER, [kind, _attrs(version, mask), _private_key(der, algorithm, length)], version,
                   ResultReason.INVALID_FIELD)
    # Control: the true labels are accepted.
    conn.ok(Operation.REGISTER, [kind, _attrs(version, mask), _private_key(der, enums.CryptographicAlgorithm.EC, 256)],
            version)
    # A symmetric key shorter than its label.
    short = ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
        ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, bytes(16))]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
        ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)])])
    conn.fails(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), _attrs(version, mask),
                                    short], version, ResultReason.INVALID_FIELD)


# -- a key Registered wrapped, unwrapped on Get (Key Wrap Type Not Wrapped) -------------------------
def _aes(c: Conn, version: tuple[int, int], mask: int) -> str:
    import time

    return create_aes(c, version, date_attr("Activation Date", int(time.time()) - 60, version), mask=mask)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("encoding", [None, enums.EncodingOption.NO_ENCODING])
def test_registered_wrapped_key_is_unwrapped_on_request(conn: Conn, version: tuple[int, int],
                                                        encoding: enums.EncodingOption | None) -> None:
    m = enums.CryptographicUsageMask
    kek = _aes(conn, version, m.WRAP_KEY.value | m.UNWRAP_KEY.value)
    target = _aes(conn, version, m.ENCRYPT.value)
    plain = _material_of(conn.ok(Operation.GET, [uid_(target)], version))
    spec = ttlv.struct_(T.KEY_WRAPPING_SPECIFICATION, [
        ttlv.enum(T.WRAPPING_METHOD, enums.WrappingMethod.ENCRYPT),
        ttlv.struct_(T.ENCRYPTION_KEY_INFORMATION, [uid_(kek)]),
        ttlv.enum(T.ENCODING_OPTION, encoding) if encoding is not None else None])
    wrapped = conn.ok(Operation.GET, [uid_(target), spec], version).get(T.SYMMETRIC_KEY.value)
    out = conn.ok(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                       _attrs(version, ("Cryptographic Usage Mask", ttlv.integer(0, m.ENCRYPT.value))),
                                       wrapped], version)  # type: ignore[list-item]
    uid = out.value_of(T.UNIQUE_IDENTIFIER.value)
    # As registered by default (and when asked so): still wrapped.
    as_stored = conn.ok(Operation.GET, [uid_(uid)], version).get(T.SYMMETRIC_KEY.value)  # type: ignore[arg-type]
    assert as_stored.get(T.KEY_BLOCK.value).get(T.KEY_WRAPPING_DATA.value) is not None  # type: ignore[union-attr]
    ask = ttlv.enum(T.KEY_WRAP_TYPE, enums.KeyWrapType.NOT_WRAPPED)
    got = conn.ok(Operation.GET, [uid_(uid), ask], version)  # type: ignore[arg-type]
    assert got.get(T.SYMMETRIC_KEY.value).get(T.KEY_BLOCK.value).get(T.KEY_WRAPPING_DATA.value) is None  # type: ignore[union-attr]
    assert _material_of(got) == plain


def test_unwrapping_needs_the_unwrap_key_usage(conn: Conn) -> None:
    version, m = (1, 4), enums.CryptographicUsageMask
    kek = _aes(conn, version, m.WRAP_KEY.value)  # may wrap, may not unwrap
    target = _aes(conn, version, m.ENCRYPT.value)
    spec = ttlv.struct_(T.KEY_WRAPPING_SPECIFICATION, [
        ttlv.enum(T.WRAPPING_METHOD, enums.WrappingMethod.ENCRYPT),
        ttlv.struct_(T.ENCRYPTION_KEY_INFORMATION, [uid_(kek)])])
    wrapped = conn.ok(Operation.GET, [uid_(target), spec], version).get(T.SYMMETRIC_KEY.value)
    out = conn.ok(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                       _attrs(version), wrapped], version)  # type: ignore[list-item]
    bi = conn.call(Operation.GET, [uid_(out.value_of(T.UNIQUE_IDENTIFIER.value)),  # type: ignore[arg-type]
                                   ttlv.enum(T.KEY_WRAP_TYPE, enums.KeyWrapType.NOT_WRAPPED)], version)
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.OPERATION_FAILED.value


def _material_of(payload: Item) -> bytes:
    return payload.get(T.SYMMETRIC_KEY.value).get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(  # type: ignore[union-attr,return-value]
        T.KEY_MATERIAL.value)


# -- Ed25519 (KMIP 2.x) ------------------------------------------------------------------------------
def _ed25519_pair(c: Conn, version: tuple[int, int]) -> Item:
    import time

    m = enums.CryptographicUsageMask
    common = [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.ED25519),
              ttlv.date_time(T.ACTIVATION_DATE, int(time.time()) - 60)]
    return c.call(Operation.CREATE_KEY_PAIR, [
        ttlv.struct_(T.COMMON_ATTRIBUTES, common),
        ttlv.struct_(T.PRIVATE_KEY_ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, m.SIGN.value)]),
        ttlv.struct_(T.PUBLIC_KEY_ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, m.VERIFY.value)])], version)


def test_ed25519_key_pair_signs_in_21(conn: Conn) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    version = (2, 1)
    bi = _ed25519_pair(conn, version)
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    out = bi.get(T.RESPONSE_PAYLOAD.value)
    priv = out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    pub = out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    der = conn.ok(Operation.GET, [uid_(pub)], version).get(T.PUBLIC_KEY.value).get(  # type: ignore[arg-type,union-attr]
        T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(T.KEY_MATERIAL.value)  # type: ignore[union-attr]
    public = serialization.load_der_public_key(der)  # type: ignore[arg-type]
    assert isinstance(public, ed25519.Ed25519PublicKey)
    message = b"sign me, Ed25519"
    signed = conn.ok(Operation.SIGN, [uid_(priv), ttlv.bytes_(T.DATA, message)], version)  # type: ignore[arg-type]
    signature = signed.value_of(T.SIGNATURE_DATA.value)
    public.verify(signature, message)  # type: ignore[arg-type]  # raises if the server signed wrongly
    cases = ((message, enums.ValidityIndicator.VALID), (b"another message", enums.ValidityIndicator.INVALID))
    for data, expected in cases:
        got = conn.ok(Operation.SIGNATURE_VERIFY, [uid_(pub), ttlv.bytes_(T.DATA, data),  # type: ignore[arg-type]
                                                   ttlv.bytes_(T.SIGNATURE_DATA, signature)], version)  # type: ignore[arg-type]
        assert got.value_of(T.VALIDITY_INDICATOR.value) == expected.value
    conn.fails(Operation.SIGN, [uid_(priv), ttlv.bytes_(T.DIGESTED_DATA, bytes(32))], version,  # type: ignore[arg-type]
               ResultReason.INVALID_FIELD)


def test_ed25519_is_not_offered_before_20(conn: Conn) -> None:
    bi = _ed25519_pair(conn, (1, 4))
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.OPERATION_FAILED.value


# -- PKCS#12 ------------------------------------------------------------------------------------------
def _cert(subject: str, key: object, issuer_name: str, issuer_key: object) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())  # type: ignore[attr-defined]
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(issuer_key, hashes.SHA256()))  # type: ignore[arg-type]


def _register_v14(c: Conn, kind: enums.ObjectType, obj: Item) -> str:
    out = c.ok(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, kind), _attrs((1, 4)), obj], (1, 4))
    return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def _certificate_object(cert: x509.Certificate) -> Item:
    der = cert.public_bytes(serialization.Encoding.DER)
    return ttlv.struct_(T.CERTIFICATE, [ttlv.enum(T.CERTIFICATE_TYPE, enums.CertificateType.X_509),
                                        ttlv.bytes_(T.CERTIFICATE_VALUE, der)])


def _link(c: Conn, uid: str, link_type: enums.LinkType, target: str) -> None:
    value = ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.enum(T.LINK_TYPE, link_type),
                                             ttlv.text(T.LINKED_OBJECT_IDENTIFIER, target)])
    c.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), v1("Link", value)], (1, 4))


def test_get_private_key_as_pkcs12_with_its_chain(conn: Conn) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = rsa.generate_private_key(65537, 2048)
    ca = _cert("kmip test CA", ca_key, "kmip test CA", ca_key)
    leaf = _cert("kmip leaf", key, "kmip test CA", ca_key)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    priv = _register_v14(conn, enums.ObjectType.PRIVATE_KEY, _private_key(der, enums.CryptographicAlgorithm.RSA, 2048))
    leaf_uid = _register_v14(conn, enums.ObjectType.CERTIFICATE, _certificate_object(leaf))
    ca_uid = _register_v14(conn, enums.ObjectType.CERTIFICATE, _certificate_object(ca))
    password = _register_v14(conn, enums.ObjectType.SECRET_DATA, ttlv.struct_(T.SECRET_DATA, [
        ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD), ttlv.struct_(T.KEY_BLOCK, [
            ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
            ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"pkcs12 s3cret")])])]))
    as_pkcs12 = ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.PKCS_12)
    # No password linked yet: refused rather than an unprotected PKCS#12.
    conn.fails(Operation.GET, [uid_(priv), as_pkcs12], (1, 4), ResultReason.MISSING_DATA)
    _link(conn, priv, enums.LinkType.PKCS12_PASSWORD_LINK, password)
    _link(conn, priv, enums.LinkType.PKCS12_CERTIFICATE_LINK, leaf_uid)
    _link(conn, leaf_uid, enums.LinkType.CERTIFICATE_LINK, ca_uid)
    got = conn.ok(Operation.GET, [uid_(priv), as_pkcs12], (1, 4)).get(T.PRIVATE_KEY.value).get(T.KEY_BLOCK.value)  # type: ignore[union-attr]
    assert got.value_of(T.KEY_FORMAT_TYPE.value) == enums.KeyFormatType.PKCS_12.value  # type: ignore[union-attr]
    blob = got.get(T.KEY_VALUE.value).value_of(T.KEY_MATERIAL.value)  # type: ignore[union-attr]
    k, c, chain = pkcs12.load_key_and_certificates(blob, b"pkcs12 s3cret")  # type: ignore[arg-type]
    assert k.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    assert c == leaf and chain == [ca]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(blob, b"wrong password")  # type: ignore[arg-type]
