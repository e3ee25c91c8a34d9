"""The version table (protocol/versions.py) and the response builder's use of it."""

from __future__ import annotations

import pytest
from kmip.core.enums import ObjectType, Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import messages, ttlv, versions
from kmip_bridge.protocol.errors import KmipError
from kmip_bridge.protocol.messages import Response, Result


@pytest.mark.parametrize("name,first", [
    ("Name", (1, 0)), ("Fresh", (1, 1)), ("Certificate Length", (1, 1)), ("Alternative Name", (1, 2)),
    ("Original Creation Date", (1, 2)), ("Random Number Generator", (1, 3)), ("Comment", (1, 4)),
    ("Never Extractable", (1, 4)), ("Short Unique Identifier", (2, 0)), ("Nist Key Type", (2, 0)),
])
def test_attribute_first_version(name: str, first: tuple[int, int]) -> None:
    for v in [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]:
        assert versions.attribute_in(name, v) == (v >= first), (name, v)


def test_removed_in_20_and_custom_everywhere() -> None:
    for name in ("Operation Policy Name", "Certificate Subject", "Certificate Identifier"):
        assert versions.attribute_in(name, (1, 4)) and not versions.attribute_in(name, (2, 0))
    assert versions.attribute_in("x-anything", (1, 0)) and versions.attribute_in("y-b", (2, 1))
    assert not versions.attribute_in("Made Up Attribute", (2, 1))


def test_operations_and_object_types() -> None:
    assert not versions.operation_in(Operation.DISCOVER_VERSIONS.value, (1, 0))
    assert versions.operation_in(Operation.DISCOVER_VERSIONS.value, (1, 1))
    assert not versions.operation_in(Operation.ENCRYPT.value, (1, 1))
    assert not versions.operation_in(Operation.SET_ATTRIBUTE.value, (1, 4))
    assert versions.operation_in(Operation.SET_ATTRIBUTE.value, (2, 0))
    assert not versions.object_type_in(ObjectType.PGP_KEY.value, (1, 1))
    assert versions.object_type_in(ObjectType.TEMPLATE.value, (1, 4))
    assert not versions.object_type_in(ObjectType.TEMPLATE.value, (2, 0))


@pytest.mark.parametrize("reason,version,sent", [
    (ResultReason.WRONG_KEY_LIFECYCLE_STATE, (1, 4), ResultReason.PERMISSION_DENIED),
    (ResultReason.WRONG_KEY_LIFECYCLE_STATE, (2, 0), ResultReason.WRONG_KEY_LIFECYCLE_STATE),
    (ResultReason.OBJECT_NOT_FOUND, (1, 2), ResultReason.ITEM_NOT_FOUND),
    (ResultReason.SENSITIVE, (1, 3), ResultReason.PERMISSION_DENIED),
    (ResultReason.SENSITIVE, (1, 4), ResultReason.SENSITIVE),
    (ResultReason.KEY_VALUE_NOT_PRESENT, (1, 1), ResultReason.ITEM_NOT_FOUND),
    (ResultReason.ENCODING_OPTION_ERROR, (1, 0), ResultReason.INVALID_FIELD),
    (ResultReason.INVALID_ATTRIBUTE_VALUE, (1, 4), ResultReason.INVALID_FIELD),
    (ResultReason.ITEM_NOT_FOUND, (1, 0), ResultReason.ITEM_NOT_FOUND),
    (ResultReason.GENERAL_FAILURE, (1, 0), ResultReason.GENERAL_FAILURE),
])
def test_reason_for(reason: ResultReason, version: tuple[int, int], sent: ResultReason) -> None:
    assert versions.reason_for(reason.value, version) == sent.value


def test_every_reason_maps_to_one_the_version_defines() -> None:
    for reason in ResultReason:
        for v in [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]:
            assert versions.reason_since(versions.reason_for(reason.value, v)) <= v


def test_the_response_builder_translates_reasons() -> None:
    error = KmipError(ResultReason.WRONG_KEY_LIFECYCLE_STATE, "not active")
    for version, expected in (((1, 4), ResultReason.PERMISSION_DENIED),
                              ((2, 1), ResultReason.WRONG_KEY_LIFECYCLE_STATE)):
        built = messages.build_response(Response(version=version, results=[Result.failure(None, error)]), now=0)
        item = ttlv.decode(ttlv.encode(built)).get(T.BATCH_ITEM.value)
        assert item.value_of(T.RESULT_REASON.value) == expected.value  # type: ignore[union-attr]
