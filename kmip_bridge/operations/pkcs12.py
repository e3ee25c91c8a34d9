"""PKCS#12 (KMIP 1.4 Key Format Type PKCS#12): Get of a private key as one, Register from one.

Get: the PKCS#12 holds the private key, its certificate (the key's PKCS#12 Certificate Link) and that
certificate's chain (each certificate's Certificate Link to its issuer, as far as the server holds
it), encrypted under the password in the Secret Data the key's PKCS#12 Password Link names.
Without a password the server refuses: it does not hand out an unprotected PKCS#12. The key's
PKCS#12 Friendly Name, if any, names the key and certificate inside. Every linked object is
loaded as the caller, so a link to an object the caller may not see is answered as not found.

KMIP 2.x words the chain's start as the private key's Public Key Link, then that public key's
PKCS#12 Certificate Link; a private key's own PKCS#12 Certificate Link is read first.

Register (a Private Key whose Key Block is PKCS#12): the server opens the PKCS#12 with the
password in the Secret Data the request's PKCS#12 Password Link names (an unencrypted one needs
none) and keeps its parts as the objects Get puts back together: the private key (stored as
PKCS#8, with the request's attributes and its Password Link), its public key (X.509, linked both
ways), each certificate as a Certificate object, the key's certificate named by the private and
the public key's PKCS#12 Certificate Link (and naming the public key by its Public Key Link), each
certificate's issuer (when inside) by its Certificate Link, and the friendly name as PKCS#12
Friendly Name. Password problems are Bad Password in 2.x, Invalid Field in 1.4.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import pkcs12 as asn1_pkcs12  # (python-pkcs11's dependency: reads the PFX structure)
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from kmip.core.enums import CryptographicAlgorithm as A
from kmip.core.enums import KeyFormatType, LinkType, ObjectType, ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError, missing
from ..protocol.ttlv import Item
from . import formats, keys, objects
from .context import RequestContext

FRIENDLY_NAME = "PKCS#12 Friendly Name"
MAX_CHAIN = 10  # certificates followed up the Certificate Links (a loop or a long chain stops here)
MAX_CERTIFICATES = MAX_CHAIN + 1  # in a registered PKCS#12: the key's own and a chain Get can give back


def _attributes(ctx: RequestContext, uid: str) -> list[objects.Attribute]:
    return [objects.from_row(r) for r in ctx.services.store.load_attributes(uid, ["Link"])]


def _certificate(ctx: RequestContext, uid: str) -> tuple[x509.Certificate, list[objects.Attribute]]:
    row = objects.load_visible(ctx, uid)
    if row.object_type != ObjectType.CERTIFICATE.value:
        raise KmipError(ResultReason.INVALID_FIELD, "a PKCS#12 certificate link names a non-certificate")
    der = objects.open_material(ctx, row).value_of(T.CERTIFICATE_VALUE.value)
    if not isinstance(der, bytes):
        raise KmipError(ResultReason.INVALID_FIELD, "the linked certificate has no value")
    return x509.load_der_x509_certificate(der), _attributes(ctx, uid)


def export(ctx: RequestContext, uid: str, obj: Item) -> Item:
    """``obj`` (a Private Key object) as a PKCS#12 Key Block."""
    attrs = _attributes(ctx, uid)
    password_uid = keys.linked(attrs, LinkType.PKCS12_PASSWORD_LINK.value)
    if password_uid is None:
        raise missing("a PKCS#12 needs the key's PKCS#12 Password Link to a password Secret Data")
    secret = objects.open_material(ctx, objects.load_visible(ctx, password_uid))
    password = formats.raw_bytes(secret) if secret.tag == T.SECRET_DATA.value else None
    if not password:
        raise KmipError(ResultReason.INVALID_FIELD, "the PKCS#12 Password Link names no usable password")
    key = formats.private_of(obj)
    friendly = next((a.value.value for a in _friendly(ctx, uid)), None)
    cert = None
    chain: list[x509.Certificate] = []
    cert_uid = keys.linked(attrs, LinkType.PKCS12_CERTIFICATE_LINK.value)
    public_uid = keys.linked(attrs, LinkType.PUBLIC_KEY_LINK.value)
    if cert_uid is None and public_uid is not None:
        # KMIP 2.x Get: the private key's Public Key Link, then that key's PKCS#12 Certificate Link.
        objects.load_visible(ctx, public_uid)
        cert_uid = keys.linked(_attributes(ctx, public_uid), LinkType.PKCS12_CERTIFICATE_LINK.value)
    if cert_uid is not None:
        cert, cert_attrs = _certificate(ctx, cert_uid)
        seen = {cert_uid}
        issuer = keys.linked(cert_attrs, LinkType.CERTIFICATE_LINK.value)
        while issuer is not None and issuer not in seen and len(chain) < MAX_CHAIN:
            seen.add(issuer)
            parent, parent_attrs = _certificate(ctx, issuer)
            chain.append(parent)
            issuer = keys.linked(parent_attrs, LinkType.CERTIFICATE_LINK.value)
    blob = pkcs12.serialize_key_and_certificates(
        friendly.encode() if isinstance(friendly, str) else None, key, cert, chain or None,  # type: ignore[arg-type]
        BestAvailableEncryption(password),
    )
    del key
    block = formats.block_of(obj)
    algorithm = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) if block is not None else None
    length = block.value_of(T.CRYPTOGRAPHIC_LENGTH.value) if block is not None else None
    return ttlv.struct_(T.PRIVATE_KEY, [formats.key_block(
        ObjectType.PRIVATE_KEY.value, KeyFormatType.PKCS_12.value, ttlv.bytes_(T.KEY_MATERIAL, blob),
        algorithm, length)])  # type: ignore[arg-type]


def _friendly(ctx: RequestContext, uid: str) -> list[objects.Attribute]:
    rows = ctx.services.store.load_attributes(uid, [FRIENDLY_NAME])
    return [objects.from_row(r) for r in rows]


# -- Register ----------------------------------------------------------------------------------------
@dataclass
class Opened:
    """What a registered PKCS#12 holds: the key (a PKCS#8 Private Key object with its algorithm
    and length), its public half (an X.509 Public Key object), its certificates (DER, leaf first
    when there is one), each one's issuer among them (index or None), whether the first is the
    key's own, and its friendly name."""

    key: Item
    public: Item
    certificates: list[bytes]
    issuers: list[int | None]
    has_leaf: bool
    friendly_name: str | None


def _bad_password(ctx: RequestContext, message: str) -> KmipError:
    # KMIP 2.x has a reason for it ("Key Format Type is PKCS#12, but missing or multiple PKCS#12
    # Password Links, or not Secret Data"); 1.4 says Invalid Field.
    return keys.by_version(ctx, ResultReason.INVALID_FIELD, ResultReason.BAD_PASSWORD, message)


def _password(ctx: RequestContext, attrs: list[objects.Attribute]) -> bytes | None:
    links = [a for a in attrs if a.name == "Link"
             and a.value.value_of(T.LINK_TYPE.value) == LinkType.PKCS12_PASSWORD_LINK.value]
    if not links:
        return None
    if len(links) > 1:
        raise _bad_password(ctx, "a PKCS#12 takes one PKCS#12 Password Link")
    row = objects.load_visible(ctx, keys.linked(attrs, LinkType.PKCS12_PASSWORD_LINK.value))  # type: ignore[arg-type]
    if row.object_type != ObjectType.SECRET_DATA.value:
        raise _bad_password(ctx, "the PKCS#12 Password Link must name a Secret Data password")
    return formats.raw_bytes(objects.open_material(ctx, row))


def _kind(key: formats.PrivateKey) -> tuple[int, int]:
    """Cryptographic Algorithm and Length of a key found inside a PKCS#12."""
    kind = formats.rfc_kind(key)
    if kind is not None:
        algorithm = {"ed25519": A.ED25519, "ed448": A.ED448}.get(kind, A.EC).value
        return algorithm, formats.RFC_LENGTHS[kind]
    if isinstance(key, rsa.RSAPrivateKey):
        return A.RSA.value, key.key_size
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return A.EC.value, key.curve.key_size
    if isinstance(key, dsa.DSAPrivateKey):
        return A.DSA.value, key.key_size
    raise formats.not_supported("the PKCS#12 holds a kind of private key this server does not keep")


def _charge_work(ctx: RequestContext, blob: bytes) -> None:
    """Charges the password-based work the PKCS#12 asks for (its MAC's and each PBE's iteration
    counts, chosen by whoever made the blob) to the request's budget before OpenSSL does it: a
    PKCS#12 with a billion iterations would otherwise hold a worker for minutes. The counts of
    key bags nested inside an encrypted content are not visible before decryption; OpenSSL and
    cryptography put the key bag in a plain one (docs/conformance.md)."""
    try:
        pfx = asn1_pkcs12.Pfx.load(blob, strict=True)
        mac = pfx["mac_data"].native
        units = max(1, mac["iterations"]) if mac else 0
        for info in pfx.authenticated_safe:
            if info["content_type"].native == "encrypted_data":
                algorithm = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
                units += max(1, algorithm.kdf_iterations)
            elif info["content_type"].native == "data":
                for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
                    if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                        units += max(1, bag["bag_value"]["encryption_algorithm"].kdf_iterations)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise KmipError(ResultReason.INVALID_FIELD, "the PKCS#12 is malformed (or uses an encryption this "
                        "server does not read)") from None
    ctx.charge_work(units, "opening this PKCS#12")


def open_for_register(ctx: RequestContext, obj: Item, attrs: list[objects.Attribute]) -> Opened:
    """The parts of the PKCS#12 a Register carries (``attrs``: the request's attributes)."""
    if ctx.version < (1, 4):
        raise KmipError(ResultReason.INVALID_FIELD, "PKCS#12 is a KMIP 1.4 Key Format Type")
    block = formats.block_of(obj)
    if block is None or block.get(T.KEY_WRAPPING_DATA.value) is not None:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "a wrapped PKCS#12 cannot be registered")
    material = formats.material_of(block)
    if material is None or material.type != ttlv.Type.BYTE_STRING or not material.value:
        raise KmipError(ResultReason.INVALID_FIELD, "a PKCS#12 Key Material is the PKCS#12 (PFX) DER bytes")
    password = _password(ctx, attrs)
    _charge_work(ctx, material.value)  # type: ignore[arg-type]
    try:
        bundle = pkcs12.load_pkcs12(material.value, password)  # type: ignore[arg-type]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Its structure read well (_charge_work): the password does not open it (OpenSSL does not
        # tell that from corrupted encrypted contents, so the message names both).
        raise _bad_password(ctx, "the PKCS#12 does not open with " + (
            "the password its PKCS#12 Password Link names" if password is not None else
            "no password (give its password as a PKCS#12 Password Link)") + ", or its contents are corrupt") from None
    key = bundle.key
    if key is None:
        raise KmipError(ResultReason.INVALID_FIELD, "the PKCS#12 holds no private key")
    algorithm, length = _kind(key)  # type: ignore[arg-type]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    own = key.public_key().public_bytes(*spki)
    found = ([bundle.cert] if bundle.cert is not None else []) + list(bundle.additional_certs)
    certs: list[x509.Certificate] = []
    for c in found:
        if c.certificate not in certs:
            certs.append(c.certificate)
    if len(certs) > MAX_CERTIFICATES:
        raise KmipError(ResultReason.INVALID_FIELD, f"the PKCS#12 holds {len(certs)} certificates; a key's "
                        f"certificate and chain are taken, at most {MAX_CERTIFICATES}")
    certs.sort(key=lambda c: c.public_key().public_bytes(*spki) != own)  # the key's own first
    has_leaf = bool(certs) and certs[0].public_key().public_bytes(*spki) == own
    issuers = [next((j for j, p in enumerate(certs) if j != i and p.subject == c.issuer), None)
               if c.issuer != c.subject else None for i, c in enumerate(certs)]
    friendly = bundle.cert.friendly_name if bundle.cert is not None else None
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    del key
    key_obj = ttlv.struct_(T.PRIVATE_KEY, [formats.key_block(
        ObjectType.PRIVATE_KEY.value, KeyFormatType.PKCS_8.value, der, algorithm, length)])
    public_obj = ttlv.struct_(T.PUBLIC_KEY, [formats.key_block(
        ObjectType.PUBLIC_KEY.value, KeyFormatType.X_509.value, own, algorithm, length)])
    return Opened(key_obj, public_obj, [c.public_bytes(serialization.Encoding.DER) for c in certs],
                  issuers, has_leaf, friendly.decode("utf-8", "replace") if friendly else None)
