"""Register: store a client-supplied object (keys, secrets, opaque data, certificates)."""

from __future__ import annotations

import uuid

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from kmip.core.enums import (
    CertificateType,
    CryptographicAlgorithm,
    DigitalSignatureAlgorithm,
    KeyFormatType,
    LinkType,
    ObjectType,
    ResultReason,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError, invalid_field, missing
from ..protocol.ttlv import Item, Type
from . import formats, key_pair, keys, objects, pkcs12
from .context import RequestContext

_REGISTRABLE = {
    ObjectType.SYMMETRIC_KEY.value,
    ObjectType.SECRET_DATA.value,
    ObjectType.OPAQUE_DATA.value,
    ObjectType.PUBLIC_KEY.value,
    ObjectType.PRIVATE_KEY.value,
    ObjectType.CERTIFICATE.value,
    ObjectType.SPLIT_KEY.value,
    ObjectType.PGP_KEY.value,
}


def certificate_attributes(obj: Item, given: set[str]) -> list[objects.Attribute]:
    """Length, and subject/issuer common names of an X.509 certificate (KMIP 2.x attributes)."""
    der = obj.value_of(T.CERTIFICATE_VALUE.value)
    if not isinstance(der, bytes):
        return []
    out = [] if "Certificate Length" in given else [
        objects.Attribute("Certificate Length", objects.value_item(Type.INTEGER, len(der)))
    ]
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return out  # stored as given; not every certificate a client registers is X.509 DER
    for name, subject in (("Certificate Subject CN", cert.subject), ("Certificate Issuer CN", cert.issuer)):
        cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cns and name not in given:
            out.append(objects.Attribute(name, objects.value_item(Type.TEXT_STRING, str(cns[0].value))))
    out += [a for a in _x509_attributes(cert) if a.name not in given]
    return out


_SIGNATURE_ALGORITHMS = {
    SignatureAlgorithmOID.RSA_WITH_MD5: DigitalSignatureAlgorithm.MD5_WITH_RSA_ENCRYPTION,
    SignatureAlgorithmOID.RSA_WITH_SHA1: DigitalSignatureAlgorithm.SHA1_WITH_RSA_ENCRYPTION,
    SignatureAlgorithmOID.RSA_WITH_SHA224: DigitalSignatureAlgorithm.SHA224_WITH_RSA_ENCRYPTION,
    SignatureAlgorithmOID.RSA_WITH_SHA256: DigitalSignatureAlgorithm.SHA256_WITH_RSA_ENCRYPTION,
    SignatureAlgorithmOID.RSA_WITH_SHA384: DigitalSignatureAlgorithm.SHA384_WITH_RSA_ENCRYPTION,
    SignatureAlgorithmOID.RSA_WITH_SHA512: DigitalSignatureAlgorithm.SHA512_WITH_RSA_ENCRYPTION,
    SignatureAlgorithmOID.RSASSA_PSS: DigitalSignatureAlgorithm.RSASSA_PSS,
    SignatureAlgorithmOID.DSA_WITH_SHA1: DigitalSignatureAlgorithm.DSA_WITH_SHA1,
    SignatureAlgorithmOID.DSA_WITH_SHA224: DigitalSignatureAlgorithm.DSA_WITH_SHA224,
    SignatureAlgorithmOID.DSA_WITH_SHA256: DigitalSignatureAlgorithm.DSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: DigitalSignatureAlgorithm.ECDSA_WITH_SHA1,
    SignatureAlgorithmOID.ECDSA_WITH_SHA224: DigitalSignatureAlgorithm.ECDSA_WITH_SHA224,
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: DigitalSignatureAlgorithm.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: DigitalSignatureAlgorithm.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: DigitalSignatureAlgorithm.ECDSA_WITH_SHA512,
}


def _alt_names(cert: x509.Certificate, ext: type[x509.ExtensionType]) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(ext).value.public_bytes()  # type: ignore[attr-defined]
    except x509.ExtensionNotFound:
        return None


def _x509_attributes(cert: x509.Certificate) -> list[objects.Attribute]:
    """The certificate's identity as KMIP 1.1+ X.509 attributes (DER names, serial number) and as
    the KMIP 1.0 text attributes (deprecated in 1.1, gone in 2.0; protocol/versions.py shows each
    only to clients whose version has it), plus its Digital Signature Algorithm (1.1+)."""
    issuer_dn, subject_dn = cert.issuer.public_bytes(), cert.subject.public_bytes()
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    san, ian = _alt_names(cert, x509.SubjectAlternativeName), _alt_names(cert, x509.IssuerAlternativeName)

    def struct(name: str, *parts: Item | None) -> objects.Attribute:
        return objects.Attribute(name, ttlv.struct_(T.ATTRIBUTE_VALUE, [p for p in parts if p is not None]))

    out = [
        struct("X.509 Certificate Identifier", ttlv.bytes_(T.ISSUER_DISTINGUISHED_NAME, issuer_dn),
               ttlv.bytes_(T.CERTIFICATE_SERIAL_NUMBER, serial)),
        struct("X.509 Certificate Subject", ttlv.bytes_(T.SUBJECT_DISTINGUISHED_NAME, subject_dn),
               ttlv.bytes_(T.SUBJECT_ALTERNATIVE_NAME, san) if san is not None else None),
        struct("X.509 Certificate Issuer", ttlv.bytes_(T.ISSUER_DISTINGUISHED_NAME, issuer_dn),
               ttlv.bytes_(T.ISSUER_ALTERNATIVE_NAME, ian) if ian is not None else None),
        struct("Certificate Identifier", ttlv.text(T.ISSUER, cert.issuer.rfc4514_string()),
               ttlv.text(T.SERIAL_NUMBER, str(cert.serial_number))),
        struct("Certificate Subject",
               ttlv.text(T.CERTIFICATE_SUBJECT_DISTINGUISHED_NAME, cert.subject.rfc4514_string())),
        struct("Certificate Issuer",
               ttlv.text(T.CERTIFICATE_ISSUER_DISTINGUISHED_NAME, cert.issuer.rfc4514_string())),
    ]
    algorithm = _SIGNATURE_ALGORITHMS.get(cert.signature_algorithm_oid)
    if algorithm is not None:
        out.append(objects.Attribute("Digital Signature Algorithm",
                                     objects.value_item(Type.ENUMERATION, algorithm.value)))
    return out


def refuse_template(ctx: RequestContext, object_type: object) -> None:
    """Template objects (KMIP 1.x, deprecated in 1.3, gone in 2.0) are a feature this server
    does not offer; a 2.x client naming one names an Object Type its version lacks."""
    if object_type == ObjectType.TEMPLATE.value and not ctx.v2:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "Template objects are not supported")


def _key_value_presence(obj: Item, attrs: list[objects.Attribute]) -> list[objects.Attribute]:
    """Key Value Present (KMIP 1.2): false for a metadata-only key registered without its Key
    Value (kept elsewhere: Key Value Location); a client's own value must match the object."""
    block = obj.get(T.KEY_BLOCK.value)
    if block is None:
        return []
    present = block.get(T.KEY_VALUE.value) is not None
    for a in attrs:
        if a.name == "Key Value Present":
            if a.value.value is not present:
                raise KmipError(ResultReason.INVALID_FIELD,
                                "Key Value Present contradicts the Key Block (Key Value is "
                                + ("present)" if present else "absent)"))
            return []
    return [] if present else [objects.Attribute("Key Value Present", objects.value_item(Type.BOOLEAN, False))]


def _original_creation_date(ctx: RequestContext, attrs: list[objects.Attribute]) -> list[objects.Attribute]:
    """KMIP 1.4 lets the client of a Register say when the object was first created elsewhere;
    earlier versions (and Create) leave Original Creation Date to the server."""
    given = [a for a in attrs if a.name == "Original Creation Date"] if ctx.version >= (1, 4) else []
    if len(given) > 1 or any(a.value.type != Type.DATE_TIME for a in given):
        raise KmipError(ResultReason.INVALID_FIELD, "Original Creation Date is one Date-Time")
    return given


_ASYMMETRIC = {ObjectType.PRIVATE_KEY.value: formats.load_private, ObjectType.PUBLIC_KEY.value: formats.load_public}
A = CryptographicAlgorithm
_EXACT_LENGTH = frozenset({CryptographicAlgorithm.AES.value, CryptographicAlgorithm.CHACHA20.value})


_RFC_ALGORITHMS = frozenset({A.ED25519.value, A.ED448.value, A.EC.value, A.ECDH.value})


def _claims_rfc_curve(ctx: RequestContext, fmt: int, material: Item, algorithm: object) -> bool:
    """Whether key material the server could not read says it is on Curve25519/448 (labelled
    Ed25519/Ed448, a Raw key of an EC algorithm in 2.x, or a Transparent EC key naming the curve):
    it is then refused, not kept (truncated, or of another curve than its labels say). A 1.x Raw
    EC key cannot be one (those curves are 2.x): it is kept as given, as before."""
    if algorithm in (A.ED25519.value, A.ED448.value):
        return True
    if fmt == KeyFormatType.RAW.value:
        return ctx.v2 and algorithm in _RFC_ALGORITHMS
    return material.type == Type.STRUCTURE and material.value_of(T.RECOMMENDED_CURVE.value) in formats.RFC_CURVES


def _labels_match(ctx: RequestContext, object_type: int, obj: Item, attrs: list[objects.Attribute]) -> None:
    """Refuses a key whose material contradicts its own Cryptographic Algorithm / Length (an EC
    key labelled RSA 2048 would be used, and listed, as what it is not). Wrapped keys and formats
    the server does not read are taken as labelled."""
    block = formats.block_of(obj)
    if block is None or block.get(T.KEY_WRAPPING_DATA.value) is not None:
        return
    labels = {a.name: a.value.value for a in attrs}
    algorithm, length = labels.get("Cryptographic Algorithm"), labels.get("Cryptographic Length")
    material = formats.material_of(block)
    fmt = block.value_of(T.KEY_FORMAT_TYPE.value)
    if material is None:
        return
    if object_type == ObjectType.SYMMETRIC_KEY.value:
        if algorithm in _EXACT_LENGTH and isinstance(length, int) and material.type == Type.BYTE_STRING \
                and len(material.value) * 8 != length:  # type: ignore[arg-type]
            raise invalid_field(f"the key material is {len(material.value) * 8} bits, "  # type: ignore[arg-type]
                                f"not the Cryptographic Length {length}")
        return
    load = _ASYMMETRIC.get(object_type)
    if load is None or not isinstance(fmt, int):
        return
    labelled = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) or algorithm
    if not ctx.v2 and fmt == KeyFormatType.RAW.value and labelled not in (A.ED25519.value, A.ED448.value):
        labelled = None  # 1.x Raw bytes are never read as an X25519/X448 key
    try:
        key = load(fmt, material, labelled)
    except (KmipError, ValueError, TypeError, UnsupportedAlgorithm):
        if _claims_rfc_curve(ctx, fmt, material, algorithm):
            if not ctx.v2:
                raise invalid_field("Curve25519/Curve448 keys are KMIP 2.x material") from None
            raise invalid_field("the key material is not a key of the curve and algorithm it is labelled with") \
                from None
        return  # a format this server does not parse: stored as given
    kind = formats.rfc_kind(key)
    if kind is not None:
        if not ctx.v2:
            raise invalid_field("X25519, X448, Ed25519 and Ed448 keys are KMIP 2.x material")
        if material.type != Type.BYTE_STRING or fmt == KeyFormatType.RAW.value:
            if block.get(T.CRYPTOGRAPHIC_ALGORITHM.value) is None:
                # Raw / Transparent bytes of these curves do not say X or Ed: the Key Block must
                # (KMIP: Cryptographic Algorithm may be omitted only if the Key Value says it).
                raise missing("a Raw or Transparent Curve25519/448 key needs the Key Block's Cryptographic Algorithm")
        kinds = {A.EC.value, A.ECDH.value} if kind in ("x25519", "x448") else (
            {A.ED25519.value} if kind == "ed25519" else {A.ED448.value})
        if kind in ("x25519", "x448"):
            key_pair.refuse_signing_mask(attrs)
        size = formats.RFC_LENGTHS[kind]
    elif isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        kinds, size = {CryptographicAlgorithm.RSA.value}, key.key_size
    elif isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        kinds, size = set(formats.EC_ALGORITHMS), key.curve.key_size
    else:
        kinds, size = {CryptographicAlgorithm.DSA.value}, key.key_size
    if algorithm is not None and algorithm not in kinds:
        raise invalid_field("the key material is not of the key's Cryptographic Algorithm")
    if isinstance(length, int) and length != size:
        raise invalid_field(f"the key material is {size} bits, not the Cryptographic Length {length}")


def handle(ctx: RequestContext, payload: Item) -> Item:
    object_type = payload.value_of(T.OBJECT_TYPE.value)
    refuse_template(ctx, object_type)
    if object_type not in _REGISTRABLE:
        raise KmipError(ResultReason.INVALID_FIELD, "Register needs a supported Object Type")
    tag = objects.OBJECT_TAGS[object_type]  # type: ignore[index]
    obj = payload.get(tag)
    if obj is None or obj.type != Type.STRUCTURE:
        raise KmipError(ResultReason.INVALID_FIELD, "Register payload lacks the object of its Object Type")
    requested = objects.request_attributes(ctx, payload)
    original = _original_creation_date(ctx, requested)
    attrs = objects.client_attributes([a for a in requested if not any(a is o for o in original)]) + original
    attrs += _key_value_presence(obj, attrs)
    given = {a.name for a in attrs}
    attrs.extend(a for a in objects.key_block_attributes(obj) if a.name not in given)
    if object_type == ObjectType.CERTIFICATE.value and "Certificate Type" not in given:
        ctype = obj.get(T.CERTIFICATE_TYPE.value)
        if ctype is not None:
            attrs.append(
                objects.Attribute(
                    "Certificate Type", objects.value_item(Type.ENUMERATION, ctype.value)
                )
            )
    if object_type == ObjectType.CERTIFICATE.value:
        attrs += certificate_attributes(obj, given)
    block = formats.block_of(obj)
    if object_type == ObjectType.PRIVATE_KEY.value and block is not None \
            and block.value_of(T.KEY_FORMAT_TYPE.value) == KeyFormatType.PKCS_12.value:
        uid = _register_pkcs12(ctx, obj, attrs)
        return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)])
    _labels_match(ctx, object_type, obj, attrs)  # type: ignore[arg-type]
    uid = objects.insert_new(ctx, object_type, obj, attrs)  # type: ignore[arg-type]
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)])


def _register_pkcs12(ctx: RequestContext, obj: Item, attrs: list[objects.Attribute]) -> str:
    """A PKCS#12 registered as a Private Key: the key and each certificate become linked objects
    (see pkcs12.py), all in one transaction; the answer names the private key."""
    opened = pkcs12.open_for_register(ctx, obj, attrs)
    # The labels the PKCS#12 block (or the client) gave are checked against the key inside.
    _labels_match(ctx, ObjectType.PRIVATE_KEY.value, opened.key, attrs)
    given = {a.name for a in attrs}
    attrs += [a for a in objects.key_block_attributes(opened.key) if a.name not in given]
    if opened.friendly_name is not None and pkcs12.FRIENDLY_NAME not in given:
        name = objects.value_item(Type.TEXT_STRING, opened.friendly_name)
        attrs.append(objects.Attribute(pkcs12.FRIENDLY_NAME, name))
    cert_uids = [str(uuid.uuid4()) for _ in opened.certificates]
    uid, pub_uid = str(uuid.uuid4()), str(uuid.uuid4())
    pub_attrs = keys.with_link(objects.key_block_attributes(opened.public), LinkType.PRIVATE_KEY_LINK.value, uid)
    attrs = keys.with_link(attrs, LinkType.PUBLIC_KEY_LINK.value, pub_uid)
    if opened.has_leaf:
        attrs = keys.with_link(attrs, LinkType.PKCS12_CERTIFICATE_LINK.value, cert_uids[0])
        pub_attrs = keys.with_link(pub_attrs, LinkType.PKCS12_CERTIFICATE_LINK.value, cert_uids[0])
    with ctx.services.store.unit_of_work():  # the keys and every certificate, or nothing
        for i, der in enumerate(opened.certificates):
            cert = ttlv.struct_(T.CERTIFICATE, [ttlv.enum(T.CERTIFICATE_TYPE, CertificateType.X_509),
                                                ttlv.bytes_(T.CERTIFICATE_VALUE, der)])
            cert_attrs = [objects.Attribute("Certificate Type",
                                            objects.value_item(Type.ENUMERATION, CertificateType.X_509.value))]
            cert_attrs += certificate_attributes(cert, set())
            issuer = opened.issuers[i]
            if issuer is not None:
                cert_attrs = keys.with_link(cert_attrs, LinkType.CERTIFICATE_LINK.value, cert_uids[issuer])
            if i == 0 and opened.has_leaf:
                cert_attrs = keys.with_link(cert_attrs, LinkType.PUBLIC_KEY_LINK.value, pub_uid)
            objects.insert_new(ctx, ObjectType.CERTIFICATE.value, cert, cert_attrs, uid=cert_uids[i])
        objects.insert_new(ctx, ObjectType.PUBLIC_KEY.value, opened.public, pub_attrs, uid=pub_uid)
        objects.insert_new(ctx, ObjectType.PRIVATE_KEY.value, opened.key, attrs, uid=uid)
    ctx.id_placeholder = uid
    return uid
