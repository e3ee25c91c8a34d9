"""The per-version tag and enumeration tables (protocol/enumerations.py) against facts of the KMIP
specifications, and the response gate (protocol/gate.py) that applies them."""

from __future__ import annotations

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import enumerations as e
from kmip_bridge.protocol import gate, ttlv
from kmip_bridge.protocol.errors import KmipError
from kmip_bridge.protocol.ttlv import Item

ALL = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]
A, KF, RC, LT = enums.CryptographicAlgorithm, enums.KeyFormatType, enums.RecommendedCurve, enums.LinkType


def _first(tag: T, value: int) -> tuple[int, int] | None:
    return next((v for v in ALL if e.value_in(tag.value, value, v)), None)


@pytest.mark.parametrize("tag, value, first", [
    # KMIP 1.0 §9.1.3.2: every state, Destroyed Compromised included; both Name Types.
    (T.STATE, enums.State.DESTROYED_COMPROMISED.value, (1, 0)),
    (T.NAME_TYPE, enums.NameType.URI.value, (1, 0)),
    (T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA.value, (1, 0)),
    (T.OBJECT_TYPE, enums.ObjectType.PGP_KEY.value, (1, 2)),  # PGP Key object: 1.2
    (T.OBJECT_TYPE, enums.ObjectType.CERTIFICATE_REQUEST.value, (2, 0)),
    (T.CRYPTOGRAPHIC_ALGORITHM, A.ECDSA.value, (1, 0)),
    (T.CRYPTOGRAPHIC_ALGORITHM, A.EC.value, (1, 2)),  # generic EC: 1.2 (1.0 has ECDSA/ECDH/ECMQV)
    (T.CRYPTOGRAPHIC_ALGORITHM, A.CHACHA20.value, (1, 4)),
    (T.CRYPTOGRAPHIC_ALGORITHM, A.HMAC_SHA3_256.value, (1, 4)),
    (T.CRYPTOGRAPHIC_ALGORITHM, A.ED25519.value, (2, 0)),  # Ed25519: 2.0
    (T.RECOMMENDED_CURVE, RC.P_224.value, (1, 0)),
    (T.RECOMMENDED_CURVE, RC.SECP256K1.value, (1, 2)),
    (T.RECOMMENDED_CURVE, RC.CURVE25519.value, (2, 0)),
    (T.KEY_FORMAT_TYPE, KF.EC_PRIVATE_KEY.value, (1, 0)),
    (T.KEY_FORMAT_TYPE, KF.TRANSPARENT_EC_PRIVATE_KEY.value, (1, 3)),
    (T.KEY_FORMAT_TYPE, KF.PKCS_12.value, (1, 4)),
    (T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_512_256.value, (1, 2)),
    (T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA3_256.value, (1, 4)),
    (T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.GCM.value, (1, 0)),
    (T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.AEAD.value, (1, 4)),
    (T.LINK_TYPE, LT.REPLACED_OBJECT_LINK.value, (1, 0)),
    (T.LINK_TYPE, LT.CHILD_LINK.value, (1, 2)),
    (T.LINK_TYPE, LT.PKCS12_PASSWORD_LINK.value, (1, 4)),
    (T.LINK_TYPE, LT.WRAPPING_KEY_LINK.value, (2, 0)),
    (T.REVOCATION_REASON_CODE, enums.RevocationReasonCode.PRIVILEGE_WITHDRAWN.value, (1, 0)),
    (T.SPLIT_KEY_METHOD, enums.SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_8.value, (1, 2)),
    (T.DIGITAL_SIGNATURE_ALGORITHM, enums.DigitalSignatureAlgorithm.ECDSA_WITH_SHA256.value, (1, 1)),
    (T.ALTERNATIVE_NAME_TYPE, enums.AlternativeNameType.IP_ADDRESS.value, (1, 2)),
    (T.RNG_ALGORITHM, enums.RNGAlgorithm.UNSPECIFIED.value, (1, 3)),
    (T.RESULT_REASON, ResultReason.SENSITIVE.value, (1, 4)),
    (T.OPERATION, Operation.ENCRYPT.value, (1, 2)),
])
def test_first_version_of_a_value(tag: T, value: int, first: tuple[int, int]) -> None:
    assert _first(tag, value) == first
    for v in ALL:  # and, unless 2.0 removed it, every later version has it
        if v >= first:
            assert e.value_in(tag.value, value, v), (tag, value, v)


@pytest.mark.parametrize("tag, value", [
    (T.OBJECT_TYPE, enums.ObjectType.TEMPLATE.value),
    (T.KEY_FORMAT_TYPE, KF.TRANSPARENT_ECDSA_PRIVATE_KEY.value),
    (T.KEY_FORMAT_TYPE, KF.TRANSPARENT_ECMQV_PUBLIC_KEY.value),
])
def test_values_20_designated_reserved(tag: T, value: int) -> None:
    assert e.value_in(tag.value, value, (1, 4)) and not e.value_in(tag.value, value, (2, 0))


def test_values_no_version_defines() -> None:
    assert not any(e.value_in(T.STATE.value, 7, v) for v in ALL)
    assert not any(e.value_in(T.CRYPTOGRAPHIC_ALGORITHM.value, 0x100, v) for v in ALL)
    assert all(e.value_in(T.OPAQUE_DATA_TYPE.value, 0x80000001, v) for v in ALL)  # extension values


def test_usage_mask_bits() -> None:
    um = T.CRYPTOGRAPHIC_USAGE_MASK.value
    m = enums.CryptographicUsageMask
    assert e.mask_in(um, m.ENCRYPT.value | m.DECRYPT.value, (1, 0))
    assert e.mask_in(um, 0, (1, 0))
    assert not e.mask_in(um, m.AUTHENTICATE.value, (1, 4)) and e.mask_in(um, m.AUTHENTICATE.value, (2, 0))
    # Translate Encrypt and friends: 1.0 bits, "(Reserved)" in 2.0.
    assert e.mask_in(um, m.TRANSLATE_ENCRYPT.value, (1, 4)) and not e.mask_in(um, m.TRANSLATE_ENCRYPT.value, (2, 1))
    assert not e.mask_in(um, 1 << 30, (2, 1))


@pytest.mark.parametrize("tag, first", [
    (T.UNIQUE_IDENTIFIER, (1, 0)), (T.NAME_TYPE, (1, 0)), (T.DEVICE_IDENTIFIER, (1, 1)),
    (T.FRESH, (1, 1)), (T.ALTERNATIVE_NAME, (1, 2)), (T.KEY_VALUE_PRESENT, (1, 2)), (T.TAG_LENGTH, (1, 2)),
    (T.LOCATED_ITEMS, (1, 3)), (T.RNG_PARAMETERS, (1, 3)), (T.CLIENT_CORRELATION_VALUE, (1, 4)),
    (T.SENSITIVE, (1, 4)), (T.ATTRIBUTES, (2, 0)), (T.ATTRIBUTE_REFERENCE, (2, 0)),
    (T.PROTECTION_STORAGE_MASK, (2, 0)),
])
def test_tag_first_version(tag: T, first: tuple[int, int]) -> None:
    assert e.tag_since(tag.value) == first
    assert [v for v in ALL if e.tag_in(tag.value, v)] == [v for v in ALL if v >= first]


def test_tags_20_removed_and_extension_tags() -> None:
    for tag in (T.TEMPLATE_ATTRIBUTE, T.OPERATION_POLICY_NAME, T.ATTRIBUTE_INDEX, T.CUSTOM_ATTRIBUTE):
        assert e.tag_in(tag.value, (1, 4)) and not e.tag_in(tag.value, (2, 0)), tag
    assert not any(e.tag_in(0x540001, v) for v in ALL)
    assert e.tag_in(0x420166, (2, 1)) and not e.tag_in(0x420166, (2, 0))  # a 2.1 tag


def test_attribute_reference_values_are_tags() -> None:
    assert not e.value_in(T.ATTRIBUTE_REFERENCE.value, T.QUANTUM_SAFE.value, (1, 4))
    assert e.value_in(T.ATTRIBUTE_REFERENCE.value, T.QUANTUM_SAFE.value, (2, 0))
    assert not e.value_in(T.ATTRIBUTE_REFERENCE.value, T.OPERATION_POLICY_NAME.value, (2, 1))


# -- the gate --------------------------------------------------------------------------------------
def _attr(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name),
                                      Item(T.ATTRIBUTE_VALUE.value, value.type, value.value)])


def _payload(*children: Item) -> Item:
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "1"), *children])


def test_gate_leaves_out_attributes_a_version_cannot_express() -> None:
    ed = _attr("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, A.ED25519))
    state = _attr("State", ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.DESTROYED_COMPROMISED))
    link = _attr("Link", ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.enum(T.LINK_TYPE, LT.CHILD_LINK),
                                                          ttlv.text(T.LINKED_OBJECT_IDENTIFIER, "2")]))
    fresh = _attr("Fresh", ttlv.boolean(T.ATTRIBUTE_VALUE, True))
    out = gate.fit(_payload(ed, state, link, fresh), (1, 0), Operation.GET_ATTRIBUTES.value)
    assert [a.value_of(T.ATTRIBUTE_NAME.value) for a in out.all(T.ATTRIBUTE.value)] == ["State"]
    out = gate.fit(_payload(ed, state, link, fresh), (1, 2), Operation.GET_ATTRIBUTES.value)
    assert [a.value_of(T.ATTRIBUTE_NAME.value) for a in out.all(T.ATTRIBUTE.value)] == ["State", "Link", "Fresh"]
    same = _payload(state)
    assert gate.fit(same, (1, 0), Operation.GET_ATTRIBUTES.value) is same  # nothing to leave out: untouched


def test_gate_2x_attributes_and_attribute_list() -> None:
    attrs = ttlv.struct_(T.ATTRIBUTES, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.TEMPLATE),
                                        ttlv.enum(T.STATE, enums.State.ACTIVE)])
    out = gate.fit(_payload(attrs), (2, 0), Operation.GET_ATTRIBUTES.value)
    assert [c.tag for c in out.get(T.ATTRIBUTES.value)] == [T.STATE.value]  # type: ignore[union-attr]
    names = [ttlv.text(T.ATTRIBUTE_NAME, "State"), ttlv.text(T.ATTRIBUTE_NAME, "Fresh")]
    out = gate.fit(_payload(*names), (1, 0), Operation.GET_ATTRIBUTE_LIST.value)
    assert out.value_of(T.UNIQUE_IDENTIFIER.value) == "1"
    assert [n.value for n in out.all(T.ATTRIBUTE_NAME.value)] == ["State"]  # Fresh is a 1.1 attribute


def _get(obj_type: enums.ObjectType, obj: Item) -> Item:
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.enum(T.OBJECT_TYPE, obj_type), ttlv.text(T.UNIQUE_IDENTIFIER, "1"),
                                             obj])


def _key(tag: T, fmt: KF, algorithm: A, *extra: Item) -> Item:
    return ttlv.struct_(tag, [ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, fmt),
        ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"k"), *extra]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm)])])


def test_gate_refuses_what_the_client_asked_for_by_name() -> None:
    pgp = _get(enums.ObjectType.PGP_KEY, _key(T.PGP_KEY, KF.OPAQUE, A.RSA))
    with pytest.raises(KmipError) as refused:
        gate.fit(pgp, (1, 1), Operation.GET.value)
    assert refused.value.reason == ResultReason.FEATURE_NOT_SUPPORTED.value
    assert "KMIP 1.1" in refused.value.message and "OBJECT_TYPE value 0x9" in refused.value.message
    assert gate.fit(pgp, (1, 2), Operation.GET.value) is pgp
    p12 = _get(enums.ObjectType.PRIVATE_KEY, _key(T.PRIVATE_KEY, KF.PKCS_12, A.RSA))
    with pytest.raises(KmipError) as refused:
        gate.fit(p12, (1, 3), Operation.GET.value)
    assert refused.value.reason == ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED.value
    ed = _get(enums.ObjectType.PRIVATE_KEY, _key(T.PRIVATE_KEY, KF.PKCS_8, A.ED25519))
    with pytest.raises(KmipError):
        gate.fit(ed, (1, 4), Operation.GET.value)
    assert gate.fit(ed, (2, 0), Operation.GET.value) is ed


def test_gate_strips_attributes_from_a_1x_key_value() -> None:
    inside = _attr("State", ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.ACTIVE))
    key = _get(enums.ObjectType.SYMMETRIC_KEY, _key(T.SYMMETRIC_KEY, KF.RAW, A.AES, inside))
    out = gate.fit(key, (1, 0), Operation.GET.value)
    value = out.get(T.SYMMETRIC_KEY.value).get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value)  # type: ignore[union-attr]
    assert [c.tag for c in value] == [T.KEY_MATERIAL.value]  # type: ignore[union-attr]


def test_gate_drops_query_entries() -> None:
    answer = ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.enum(T.OPERATION, Operation.CREATE),
                                               ttlv.enum(T.OPERATION, Operation.ENCRYPT),
                                               ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.PGP_KEY)])
    out = gate.fit(answer, (1, 1), Operation.QUERY.value)
    assert [(c.tag, c.value) for c in out] == [(T.OPERATION.value, Operation.CREATE.value)]


def test_profile_names_by_version() -> None:
    p = enums.ProfileName
    assert _first(T.PROFILE_NAME, p.SYMMETRIC_KEY_LIFECYCLE_SERVER_KMIPv12.value) == (1, 3)  # Query Profiles: 1.3
    assert _first(T.PROFILE_NAME, p.SYMMETRIC_KEY_LIFECYCLE_SERVER_KMIPv14.value) == (1, 4)
    assert not e.value_in(T.PROFILE_NAME.value, p.SYMMETRIC_KEY_LIFECYCLE_SERVER_KMIPv14.value, (2, 0))
    assert [v for v in ALL if e.value_in(T.PROFILE_NAME.value, p.BASELINE_SERVER.value, v)] == [(2, 0), (2, 1)]


def test_gate_keeps_vendor_attributes_everywhere() -> None:
    vendor = ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.VENDOR_IDENTIFICATION, "x"), ttlv.text(T.ATTRIBUTE_NAME, "Mine"),
                                        ttlv.text(T.ATTRIBUTE_VALUE, "v")])
    payload = _payload(ttlv.struct_(T.ATTRIBUTES, [vendor]))
    assert gate.fit(payload, (2, 1), Operation.GET_ATTRIBUTES.value) is payload
    reference = ttlv.struct_(T.ATTRIBUTE_REFERENCE, [ttlv.text(T.VENDOR_IDENTIFICATION, "x"),
                                                     ttlv.text(T.ATTRIBUTE_NAME, "Mine")])
    listed = _payload(reference)
    assert gate.fit(listed, (2, 0), Operation.GET_ATTRIBUTE_LIST.value) is listed
    custom = _payload(_attr("x-Mine", ttlv.text(T.ATTRIBUTE_VALUE, "v")))
    assert gate.fit(custom, (1, 0), Operation.GET_ATTRIBUTES.value) is custom
