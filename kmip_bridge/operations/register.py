"""Register: store a client-supplied object (keys, secrets, opaque data, certificates)."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID
from kmip.core.enums import ObjectType, ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type
from . import objects
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
    return out


def handle(ctx: RequestContext, payload: Item) -> Item:
    object_type = payload.value_of(T.OBJECT_TYPE.value)
    if object_type not in _REGISTRABLE:
        raise KmipError(ResultReason.INVALID_FIELD, "Register needs a supported Object Type")
    tag = objects.OBJECT_TAGS[object_type]  # type: ignore[index]
    obj = payload.get(tag)
    if obj is None or obj.type != Type.STRUCTURE:
        raise KmipError(ResultReason.INVALID_FIELD, "Register payload lacks the object of its Object Type")
    attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
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
    uid = objects.insert_new(ctx, object_type, obj, attrs)  # type: ignore[arg-type]
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)])
