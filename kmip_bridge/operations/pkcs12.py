"""Get of a private key as PKCS#12 (KMIP 1.4 Key Format Type PKCS#12).

The PKCS#12 holds the private key, its certificate (the key's PKCS#12 Certificate Link) and that
certificate's chain (each certificate's Certificate Link to its issuer, as far as the server holds
it), encrypted under the password in the Secret Data the key's PKCS#12 Password Link names.
Without a password the server refuses: it does not hand out an unprotected PKCS#12. (The PKCS#12
Friendly Name attribute is not supported.) Every linked object is loaded as the caller,
so a link to an object the caller may not see is answered as not found.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from kmip.core.enums import KeyFormatType, LinkType, ObjectType, ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError, missing
from ..protocol.ttlv import Item
from . import formats, keys, objects
from .context import RequestContext

MAX_CHAIN = 10  # certificates followed up the Certificate Links (a loop or a long chain stops here)


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
    cert = None
    chain: list[x509.Certificate] = []
    cert_uid = keys.linked(attrs, LinkType.PKCS12_CERTIFICATE_LINK.value)
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
        None, key, cert, chain or None, BestAvailableEncryption(password),  # type: ignore[arg-type]
    )
    del key
    block = formats.block_of(obj)
    algorithm = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) if block is not None else None
    length = block.value_of(T.CRYPTOGRAPHIC_LENGTH.value) if block is not None else None
    return ttlv.struct_(T.PRIVATE_KEY, [formats.key_block(
        ObjectType.PRIVATE_KEY.value, KeyFormatType.PKCS_12.value, ttlv.bytes_(T.KEY_MATERIAL, blob),
        algorithm, length)])  # type: ignore[arg-type]
