"""Key Format Type conversions and the Digest attribute (operations/formats.py), without a server."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from kmip.core import enums
from kmip.core.enums import Tags as T

from kmip_bridge.operations import formats
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.errors import KmipError
from kmip_bridge.protocol.ttlv import Item

KF = enums.KeyFormatType
OT = enums.ObjectType
PRIVATE_FORMATS = {
    "rsa": [KF.PKCS_1, KF.PKCS_8, KF.TRANSPARENT_RSA_PRIVATE_KEY],
    "ec": [KF.PKCS_8, KF.EC_PRIVATE_KEY, KF.TRANSPARENT_EC_PRIVATE_KEY, KF.TRANSPARENT_ECDSA_PRIVATE_KEY],
    "dsa": [KF.PKCS_8, KF.TRANSPARENT_DSA_PRIVATE_KEY],
}
PUBLIC_FORMATS = {
    "rsa": [KF.PKCS_1, KF.X_509, KF.TRANSPARENT_RSA_PUBLIC_KEY],
    "ec": [KF.X_509, KF.TRANSPARENT_EC_PUBLIC_KEY, KF.TRANSPARENT_ECDH_PUBLIC_KEY],
    "dsa": [KF.X_509, KF.TRANSPARENT_DSA_PUBLIC_KEY],
}


@pytest.fixture(scope="module")
def keys() -> dict[str, formats.PrivateKey]:
    return {
        "rsa": rsa.generate_private_key(65537, 1024),
        "ec": ec.generate_private_key(ec.SECP384R1()),
        "dsa": dsa.generate_private_key(1024),
    }


def _obj(tag: T, object_type: OT, material: Item, fmt: KF) -> Item:
    return ttlv.struct_(tag, [formats.key_block(object_type.value, fmt.value, material, None, None)])


def _fmt(obj: Item) -> int:
    return obj.get(T.KEY_BLOCK.value).value_of(T.KEY_FORMAT_TYPE.value)  # type: ignore[union-attr,return-value]


@pytest.mark.parametrize("kind", ["rsa", "ec", "dsa"])
def test_private_keys_convert_between_every_pair_of_formats(keys: dict[str, formats.PrivateKey], kind: str) -> None:
    key = keys[kind]
    for source in PRIVATE_FORMATS[kind]:
        obj = _obj(T.PRIVATE_KEY, OT.PRIVATE_KEY, formats.dump_private(key, source.value), source)
        for target in PRIVATE_FORMATS[kind]:
            out = formats.convert(obj, OT.PRIVATE_KEY.value, target.value)
            assert _fmt(out) == target.value
            assert formats.private_of(out).private_numbers() == key.private_numbers()  # type: ignore[union-attr]
            assert formats.public_of(out).public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["rsa", "ec", "dsa"])
def test_public_keys_convert_between_every_pair_of_formats(keys: dict[str, formats.PrivateKey], kind: str) -> None:
    public = keys[kind].public_key()
    for source in PUBLIC_FORMATS[kind]:
        obj = _obj(T.PUBLIC_KEY, OT.PUBLIC_KEY, formats.dump_public(public, source.value), source)
        for target in PUBLIC_FORMATS[kind]:
            out = formats.convert(obj, OT.PUBLIC_KEY.value, target.value)
            assert formats.public_of(out).public_numbers() == public.public_numbers()  # type: ignore[union-attr]


def test_transparent_rsa_without_primes_is_completed(keys: dict[str, formats.PrivateKey]) -> None:
    pn = keys["rsa"].private_numbers()  # type: ignore[union-attr]
    material = ttlv.struct_(T.KEY_MATERIAL, [
        Item(T.MODULUS.value, ttlv.Type.BIG_INTEGER, pn.public_numbers.n),
        Item(T.PUBLIC_EXPONENT.value, ttlv.Type.BIG_INTEGER, pn.public_numbers.e),
        Item(T.PRIVATE_EXPONENT.value, ttlv.Type.BIG_INTEGER, pn.d),
    ])
    obj = _obj(T.PRIVATE_KEY, OT.PRIVATE_KEY, material, KF.TRANSPARENT_RSA_PRIVATE_KEY)
    assert formats.private_of(formats.convert(obj, OT.PRIVATE_KEY.value, KF.PKCS_1.value)).private_numbers() == pn


def test_impossible_conversions_are_refused(keys: dict[str, formats.PrivateKey]) -> None:
    rsa_obj = _obj(T.PRIVATE_KEY, OT.PRIVATE_KEY, formats.dump_private(keys["rsa"], KF.PKCS_1.value), KF.PKCS_1)
    ec_obj = _obj(T.PRIVATE_KEY, OT.PRIVATE_KEY, formats.dump_private(keys["ec"], KF.PKCS_8.value), KF.PKCS_8)
    secret = ttlv.struct_(T.SECRET_DATA, [ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                                          formats.key_block(OT.SECRET_DATA.value, KF.OPAQUE.value, b"pw", None, None)])
    for obj, object_type, wanted in ((rsa_obj, OT.PRIVATE_KEY, KF.TRANSPARENT_EC_PRIVATE_KEY),
                                     (ec_obj, OT.PRIVATE_KEY, KF.PKCS_1),
                                     (rsa_obj, OT.PRIVATE_KEY, KF.RAW),
                                     (secret, OT.SECRET_DATA, KF.RAW)):
        with pytest.raises(KmipError) as err:
            formats.convert(obj, object_type.value, wanted.value)
        assert err.value.reason == enums.ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED.value
    garbage = _obj(T.PRIVATE_KEY, OT.PRIVATE_KEY, ttlv.bytes_(T.KEY_MATERIAL, b"not DER"), KF.PKCS_1)
    with pytest.raises(KmipError):
        formats.convert(garbage, OT.PRIVATE_KEY.value, KF.PKCS_8.value)


def test_symmetric_raw_and_transparent() -> None:
    raw = _obj(T.SYMMETRIC_KEY, OT.SYMMETRIC_KEY, ttlv.bytes_(T.KEY_MATERIAL, b"k" * 16), KF.RAW)
    transparent = formats.convert(raw, OT.SYMMETRIC_KEY.value, KF.TRANSPARENT_SYMMETRIC_KEY.value)
    assert formats.raw_bytes(transparent) == b"k" * 16
    assert formats.convert(transparent, OT.SYMMETRIC_KEY.value, KF.RAW.value) == raw


def test_digest_covers_keys_and_certificates_only() -> None:
    raw = _obj(T.SYMMETRIC_KEY, OT.SYMMETRIC_KEY, ttlv.bytes_(T.KEY_MATERIAL, b"k" * 16), KF.RAW)
    digest = formats.digest(OT.SYMMETRIC_KEY.value, raw)
    assert digest is not None
    assert digest.value_of(T.DIGEST_VALUE.value) == hashlib.sha256(b"k" * 16).digest()
    assert digest.value_of(T.KEY_FORMAT_TYPE.value) == KF.RAW.value
    secret = ttlv.struct_(T.SECRET_DATA, [formats.key_block(OT.SECRET_DATA.value, KF.OPAQUE.value, b"pw", None, None)])
    assert formats.digest(OT.SECRET_DATA.value, secret) is None
    cert = ttlv.struct_(T.CERTIFICATE, [ttlv.enum(T.CERTIFICATE_TYPE, enums.CertificateType.X_509),
                                        ttlv.bytes_(T.CERTIFICATE_VALUE, b"der")])
    cert_digest = formats.digest(OT.CERTIFICATE.value, cert)
    assert cert_digest is not None and cert_digest.get(T.KEY_FORMAT_TYPE.value) is None
    assert formats.convert(cert, OT.CERTIFICATE.value, KF.X_509.value) is cert
