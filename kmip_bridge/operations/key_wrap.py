"""What Get hands out: the export checks (Extractable, Sensitive), Key Format Type conversion and
Key Wrapping Specification (the returned key encrypted under another stored key).

Wrapping supports Wrapping Method Encrypt with
- an AES key: NIST Key Wrap (RFC 3394, the default) or AES Key Wrap with Padding (RFC 5649);
- an RSA public key or certificate: OAEP with MGF1 (hash and mask hash default to SHA-1, the
  PKCS#1 and KMIP defaults; a client should name SHA-256).
With no Encoding Option (or TTLV Encoding) the TTLV encoding of the Key Value structure is
wrapped, as KMIP specifies, and the Key Value becomes that Byte String; with No Encoding, the raw
Key Material bytes are wrapped and the Key Value stays a structure holding them as Key Material.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kmip.core.enums import (
    BlockCipherMode,
    CryptographicAlgorithm,
    CryptographicUsageMask,
    EncodingOption,
    HashingAlgorithm,
    KeyFormatType,
    KeyWrapType,
    MaskGenerator,
    ObjectType,
    PaddingMethod,
    ResultReason,
    WrappingMethod,
)
from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.errors import KmipError, invalid_field
from ..protocol.ttlv import Item, Type
from ..store import ObjectRow
from . import export, formats, keys, objects, pkcs12
from .context import RequestContext

HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    HashingAlgorithm.SHA_1.value: hashes.SHA1,
    HashingAlgorithm.SHA_224.value: hashes.SHA224,
    HashingAlgorithm.SHA_256.value: hashes.SHA256,
    HashingAlgorithm.SHA_384.value: hashes.SHA384,
    HashingAlgorithm.SHA_512.value: hashes.SHA512,
    HashingAlgorithm.SHA_512_224.value: hashes.SHA512_224,
    HashingAlgorithm.SHA_512_256.value: hashes.SHA512_256,
    HashingAlgorithm.SHA3_224.value: hashes.SHA3_224,
    HashingAlgorithm.SHA3_256.value: hashes.SHA3_256,
    HashingAlgorithm.SHA3_384.value: hashes.SHA3_384,
    HashingAlgorithm.SHA3_512.value: hashes.SHA3_512,
}


def hash_for(ctx: RequestContext, value: object, default: int | None = None) -> hashes.HashAlgorithm:
    algorithm = HASHES.get(value if value is not None else default)  # type: ignore[arg-type]
    if algorithm is None:
        raise unsupported(ctx, "unsupported or missing Hashing Algorithm")
    return algorithm()


def unsupported(ctx: RequestContext, message: str) -> KmipError:
    return keys.by_version(
        ctx, ResultReason.FEATURE_NOT_SUPPORTED, ResultReason.UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, message
    )


def prepare_for_get(ctx: RequestContext, row: ObjectRow, obj: Item, payload: Item | None) -> Item:
    """``obj`` as Get returns it for this request."""
    spec = payload.get(T.KEY_WRAPPING_SPECIFICATION.value) if payload is not None else None
    protection = export.require_export(ctx, row, wrapped=spec is not None)
    wrap_type = payload.value_of(T.KEY_WRAP_TYPE.value) if payload is not None else None
    if wrap_type == KeyWrapType.NOT_WRAPPED.value:
        obj = unwrap_stored(ctx, obj)
    wanted = payload.value_of(T.KEY_FORMAT_TYPE.value) if payload is not None else None
    if wanted is not None:
        if not isinstance(wanted, int):
            raise invalid_field("Key Format Type must be an enumeration")
        if wanted == KeyFormatType.PKCS_12.value and row.object_type == ObjectType.PRIVATE_KEY.value:
            obj = pkcs12.export(ctx, row.uid, obj)  # with its certificate chain, under its password
        else:
            obj = formats.convert(obj, row.object_type, wanted)
    if spec is not None:
        obj = wrap(ctx, row, obj, spec, protection)
    return obj


# -- wrapping --------------------------------------------------------------------------------------
def wrap(ctx: RequestContext, row: ObjectRow, obj: Item, spec: Item, protection: export.Protection) -> Item:
    if spec.value_of(T.WRAPPING_METHOD.value) != WrappingMethod.ENCRYPT.value:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "only Wrapping Method Encrypt is supported")
    if spec.get(T.MAC_SIGNATURE_KEY_INFORMATION.value) is not None:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "MAC/signature key wrapping is not supported")
    info = spec.get(T.ENCRYPTION_KEY_INFORMATION.value)
    wrapping_uid = info.value_of(T.UNIQUE_IDENTIFIER.value) if info is not None else None
    if info is None or not isinstance(wrapping_uid, str):
        raise invalid_field("Key Wrapping Specification needs Encryption Key Information with a Unique Identifier")
    block = formats.block_of(obj)
    if block is None:
        raise keys.by_version(ctx, ResultReason.ILLEGAL_OPERATION, ResultReason.ILLEGAL_OBJECT_TYPE,
                              "only objects with a Key Block can be wrapped")
    if block.get(T.KEY_WRAPPING_DATA.value) is not None:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "the key is stored wrapped; it cannot be wrapped again")
    value = block.get(T.KEY_VALUE.value)
    if value is None or value.type != Type.STRUCTURE:
        raise KmipError(ResultReason.KEY_VALUE_NOT_PRESENT, "the key has no Key Value")

    encoding = spec.value_of(T.ENCODING_OPTION.value)
    names = [n.value for n in spec.all(T.ATTRIBUTE_NAME.value) if isinstance(n.value, str)]
    if encoding == EncodingOption.NO_ENCODING.value:
        material = value.get(T.KEY_MATERIAL.value)
        if names or material is None or material.type != Type.BYTE_STRING:
            raise KmipError(ResultReason.ENCODING_OPTION_ERROR,
                            "No Encoding wraps byte-string key material only, without attributes")
        data: bytes = material.value  # type: ignore[assignment]
    elif encoding in (None, EncodingOption.TTLV_ENCODING.value):
        data = ttlv.encode(_key_value_with(ctx, row, value, names))
    else:
        raise KmipError(ResultReason.ENCODING_OPTION_ERROR, "unknown Encoding Option")

    wrapping_row = export.wrapping_key(ctx, wrapping_uid, protection)
    params = info.get(T.CRYPTOGRAPHIC_PARAMETERS.value) or _stored_parameters(ctx, wrapping_uid)
    try:
        wrapped = _encrypt(ctx, wrapping_row, objects.open_material(ctx, wrapping_row), params, data)
    except UnsupportedAlgorithm:  # e.g. a hash the linked OpenSSL lacks inside OAEP
        raise unsupported(ctx, "the wrapping parameters are not supported by this server") from None

    wrapping_data = ttlv.struct_(T.KEY_WRAPPING_DATA, [
        ttlv.enum(T.WRAPPING_METHOD, WrappingMethod.ENCRYPT),
        info,  # echoes the key and parameters the client asked for, as the vectors show
        ttlv.enum(T.ENCODING_OPTION, encoding) if encoding is not None else None,
    ])
    if encoding == EncodingOption.NO_ENCODING.value:
        # "The encoding of the Key Material within the Key Value structure": the structure stays,
        # its Key Material is the wrapped bytes (as PyKMIP's client and server read it).
        wrapped_value = ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, wrapped)])
    else:
        wrapped_value = ttlv.bytes_(T.KEY_VALUE, wrapped)
    children = [wrapped_value if c.tag == T.KEY_VALUE.value else c for c in block]
    new_block = ttlv.struct_(T.KEY_BLOCK, [*children, wrapping_data])
    return Item(obj.tag, Type.STRUCTURE, [new_block if c.tag == T.KEY_BLOCK.value else c for c in obj])


def _key_value_with(ctx: RequestContext, row: ObjectRow, value: Item, names: list[str]) -> Item:
    """The Key Value, carrying the named attributes when the specification asks for them."""
    if not names:
        return value
    attrs = [a for a in objects.row_attributes(row) if a.name in names]
    stored = [n for n in names if n not in objects.ROW_ATTRIBUTES]
    if stored:
        attrs += [objects.from_row(r) for r in ctx.services.store.load_attributes(row.uid, stored)]
    material = [c for c in value if c.tag == T.KEY_MATERIAL.value]
    if ctx.v2:
        extra = [ttlv.struct_(T.ATTRIBUTES, [wire.to_v2(a) for a in attrs])]
    else:
        extra = [wire.to_v1(a) for a in attrs]
    return ttlv.struct_(T.KEY_VALUE, [*material, *extra])


def _stored_parameters(ctx: RequestContext, uid: str) -> Item | None:
    """The wrapping key's own Cryptographic Parameters, used when the request names none."""
    rows = ctx.services.store.load_attributes(uid, ["Cryptographic Parameters"])
    return objects.from_row(rows[0]).value if rows else None


def _param(params: Item | None, tag: T) -> object:
    return params.value_of(tag.value) if params is not None and params.type == Type.STRUCTURE else None


def _encrypt(ctx: RequestContext, row: ObjectRow, key_obj: Item, params: Item | None, data: bytes) -> bytes:
    if row.object_type == ObjectType.SYMMETRIC_KEY.value:
        block = formats.block_of(key_obj)
        algorithm = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) if block is not None else None
        if algorithm != CryptographicAlgorithm.AES.value:
            raise unsupported(ctx, "symmetric wrapping keys must be AES keys")
        key = formats.raw_bytes(key_obj)
        mode = _param(params, T.BLOCK_CIPHER_MODE)
        if mode in (None, BlockCipherMode.NIST_KEY_WRAP.value):
            if len(data) % 8 or len(data) < 16:
                raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE,
                                "NIST Key Wrap needs a multiple of 8 bytes (16 or more); use AES Key Wrap Padding")
            return keywrap.aes_key_wrap(key, data)
        if mode == BlockCipherMode.AES_KEY_WRAP_PADDING.value:
            return keywrap.aes_key_wrap_with_padding(key, data)
        raise unsupported(ctx, "AES wrapping supports NIST Key Wrap and AES Key Wrap Padding")
    if row.object_type == ObjectType.PUBLIC_KEY.value:
        public = formats.public_of(key_obj)
    elif row.object_type == ObjectType.CERTIFICATE.value:
        der = key_obj.value_of(T.CERTIFICATE_VALUE.value)
        public = x509.load_der_x509_certificate(der).public_key()  # type: ignore[arg-type,assignment]
    else:
        raise keys.by_version(ctx, ResultReason.INVALID_FIELD, ResultReason.ILLEGAL_OBJECT_TYPE,
                              "the wrapping key must be an AES key, an RSA public key or a certificate")
    if not isinstance(public, rsa.RSAPublicKey):
        raise unsupported(ctx, "asymmetric wrapping needs an RSA public key")
    if _param(params, T.PADDING_METHOD) not in (None, PaddingMethod.OAEP.value):
        raise unsupported(ctx, "RSA wrapping supports OAEP padding only")
    if _param(params, T.MASK_GENERATOR) not in (None, MaskGenerator.MGF1.value):
        raise unsupported(ctx, "OAEP supports the MGF1 mask generator only")
    algorithm = hash_for(ctx, _param(params, T.HASHING_ALGORITHM), HashingAlgorithm.SHA_1.value)
    mgf_hash = hash_for(ctx, _param(params, T.MASK_GENERATOR_HASHING_ALGORITHM), HashingAlgorithm.SHA_1.value)
    label = _param(params, T.P_SOURCE)
    oaep = padding.OAEP(mgf=padding.MGF1(mgf_hash), algorithm=algorithm,
                        label=label if isinstance(label, bytes) and label else None)
    try:
        return public.encrypt(data, oaep)
    except ValueError:
        raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE,
                        "the key is too large to wrap with this RSA key and OAEP hash") from None


# -- unwrapping a key registered wrapped -----------------------------------------------------------
def unwrap_stored(ctx: RequestContext, obj: Item) -> Item:
    """A key Registered wrapped, unwrapped for a Get with Key Wrap Type Not Wrapped — when the
    wrapping key is an AES key on this server that the caller may use to Unwrap Key. (RSA-wrapped
    keys would need the private key behind the public one named: not offered.) A key that is not
    wrapped is returned as it is."""
    block = formats.block_of(obj)
    data = block.get(T.KEY_WRAPPING_DATA.value) if block is not None else None
    if block is None or data is None:
        return obj
    if data.value_of(T.WRAPPING_METHOD.value) != WrappingMethod.ENCRYPT.value:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "only keys wrapped by encryption can be unwrapped")
    info = data.get(T.ENCRYPTION_KEY_INFORMATION.value)
    uid = info.value_of(T.UNIQUE_IDENTIFIER.value) if info is not None else None
    if not isinstance(uid, str):
        raise invalid_field("the stored Key Wrapping Data names no wrapping key")
    wrapping_row = export.wrapping_key_row(ctx, uid, CryptographicUsageMask.UNWRAP_KEY.value)
    if wrapping_row.object_type != ObjectType.SYMMETRIC_KEY.value:
        raise unsupported(ctx, "only keys wrapped with an AES key on this server can be unwrapped")
    params = info.get(T.CRYPTOGRAPHIC_PARAMETERS.value) or _stored_parameters(ctx, uid)  # type: ignore[union-attr]
    key = formats.raw_bytes(objects.open_material(ctx, wrapping_row))
    no_encoding = data.value_of(T.ENCODING_OPTION.value) == EncodingOption.NO_ENCODING.value
    value = block.get(T.KEY_VALUE.value)
    wrapped = value.value_of(T.KEY_MATERIAL.value) if value is not None and value.type == Type.STRUCTURE else (
        value.value if value is not None else None)
    if not isinstance(wrapped, bytes):
        raise KmipError(ResultReason.KEY_VALUE_NOT_PRESENT, "the key has no wrapped Key Value")
    try:
        if _param(params, T.BLOCK_CIPHER_MODE) == BlockCipherMode.AES_KEY_WRAP_PADDING.value:
            plain = keywrap.aes_key_unwrap_with_padding(key, wrapped)
        else:
            plain = keywrap.aes_key_unwrap(key, wrapped)
    except (keywrap.InvalidUnwrap, ValueError):
        raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, "the key does not unwrap with its wrapping key") from None
    finally:
        del key
    if no_encoding:
        new_value = ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, plain)])
    else:
        try:
            new_value = ttlv.decode(plain)
        except ttlv.TtlvError:
            raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, "the unwrapped bytes are not a Key Value") from None
        if new_value.tag != T.KEY_VALUE.value or new_value.type != Type.STRUCTURE:
            raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, "the unwrapped bytes are not a Key Value")
    children = [new_value if c.tag == T.KEY_VALUE.value else c for c in block if c.tag != T.KEY_WRAPPING_DATA.value]
    new_block = ttlv.struct_(T.KEY_BLOCK, children)
    return Item(obj.tag, Type.STRUCTURE, [new_block if c.tag == T.KEY_BLOCK.value else c for c in obj])
