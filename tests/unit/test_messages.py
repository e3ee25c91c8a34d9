"""Messages: PyKMIP's own encodings parse, and our responses parse with PyKMIP's classes."""

from __future__ import annotations

import pytest
from kmip.core import enums, secrets, utils
from kmip.core.enums import Tags as T
from kmip.core.messages import contents, messages, payloads

from kmip_bridge.protocol import attributes as wire
from kmip_bridge.protocol import messages as m
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.errors import KmipError


def _pykmip_get_request() -> bytes:
    header = messages.RequestHeader(
        protocol_version=contents.ProtocolVersion(1, 2), batch_count=contents.BatchCount(2)
    )
    items = [
        messages.RequestBatchItem(
            operation=contents.Operation(enums.Operation.GET),
            request_payload=payloads.GetRequestPayload(unique_identifier="abc"),
        ),
        messages.RequestBatchItem(
            operation=contents.Operation(enums.Operation.QUERY),
            request_payload=payloads.QueryRequestPayload(
                query_functions=[enums.QueryFunction.QUERY_OPERATIONS]
            ),
        ),
    ]
    stream = utils.BytearrayStream()
    messages.RequestMessage(request_header=header, batch_items=items).write(stream)
    return stream.buffer


def test_parses_pykmip_request() -> None:
    req = m.parse_request(ttlv.decode(_pykmip_get_request()))
    assert req.version == (1, 2)
    assert [b.operation for b in req.batch_items] == [enums.Operation.GET.value, enums.Operation.QUERY.value]
    assert req.batch_items[0].payload.value_of(T.UNIQUE_IDENTIFIER.value) == "abc"


def test_reencoding_pykmip_request_is_byte_identical() -> None:
    data = _pykmip_get_request()
    assert ttlv.encode(ttlv.decode(data)) == bytes(data)


def test_response_parses_with_pykmip() -> None:
    resp = m.Response(version=(1, 2), results=[
        m.Result(enums.Operation.GET.value, None, payload=ttlv.struct_(T.RESPONSE_PAYLOAD, [
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
            ttlv.text(T.UNIQUE_IDENTIFIER, "u1"),
            ttlv.struct_(T.SECRET_DATA, [
                ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                ttlv.struct_(T.KEY_BLOCK, [
                    ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                    ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"pw")]),
                ]),
            ]),
        ])),
        m.Result.failure(None, KmipError(enums.ResultReason.ITEM_NOT_FOUND, "nope")),
    ])
    data = ttlv.encode(m.build_response(resp, now=1_700_000_000))
    parsed = messages.ResponseMessage()
    parsed.read(utils.BytearrayStream(data))
    assert parsed.response_header.batch_count.value == 2
    ok, failed = parsed.batch_items
    assert ok.result_status.value == enums.ResultStatus.SUCCESS
    assert ok.response_payload.unique_identifier == "u1"
    assert isinstance(ok.response_payload.secret, secrets.SecretData)
    assert failed.result_reason.value == enums.ResultReason.ITEM_NOT_FOUND
    assert failed.result_message.value == "nope"


def test_batch_count_mismatch_is_invalid_message() -> None:
    msg = ttlv.decode(_pykmip_get_request())
    msg.value[0].value[-1] = ttlv.integer(T.BATCH_COUNT, 5)
    with pytest.raises(KmipError) as err:
        m.parse_request(msg)
    assert err.value.reason == enums.ResultReason.INVALID_MESSAGE.value


def test_correlation_values_echoed_in_v14() -> None:
    resp = m.Response(version=(1, 4), client_correlation_value="c-1", results=[])
    header = m.build_response(resp).get(T.RESPONSE_HEADER.value)
    assert header.value_of(T.CLIENT_CORRELATION_VALUE.value) == "c-1"
    resp.version = (1, 2)
    assert m.build_response(resp).get(T.RESPONSE_HEADER.value).get(T.CLIENT_CORRELATION_VALUE.value) is None


def test_attribute_wire_forms_round_trip() -> None:
    name = ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.text(T.NAME_VALUE, "k1"),
                                           ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])
    attr = wire.Attribute("Name", name, 0)
    v2 = wire.to_v2(attr)
    assert v2.tag == T.NAME.value
    back = wire.parse_v2(v2)
    assert back.name == "Name" and back.value == name
    custom = wire.Attribute("x-purpose", ttlv.text(T.ATTRIBUTE_VALUE, "backup"))
    assert wire.parse_v2(wire.to_v2(custom)) == custom
    assert wire.parse_v1(wire.to_v1(custom)) == custom
    assert wire.tag_for("Cryptographic Usage Mask") == T.CRYPTOGRAPHIC_USAGE_MASK.value
    assert wire.name_for(T.X_509_CERTIFICATE_ISSUER.value) == "X.509 Certificate Issuer"


def test_pykmip_credential_header_yields_usernames_never_the_password() -> None:
    """PyKMIP's encoding of a Username and Password credential (as FortiGate and others send it):
    the username is read, the password is not kept anywhere in the parsed request."""
    cred = contents.Authentication(credentials=[objects_credential("appliance", "pw-Zq81")])
    header = messages.RequestHeader(protocol_version=contents.ProtocolVersion(1, 2), authentication=cred,
                                    batch_count=contents.BatchCount(1))
    item = messages.RequestBatchItem(operation=contents.Operation(enums.Operation.DISCOVER_VERSIONS),
                                     request_payload=payloads.DiscoverVersionsRequestPayload())
    stream = utils.BytearrayStream()
    messages.RequestMessage(request_header=header, batch_items=[item]).write(stream)
    req = m.parse_request(ttlv.decode(bytes(stream.buffer)))
    assert req.credential_usernames == ("appliance",)
    kept = {k: v for k, v in vars(req).items() if k != "header"}
    assert "pw-Zq81" not in repr(kept)


def objects_credential(user: str, password: str):  # type: ignore[no-untyped-def]
    from kmip.core import objects

    return objects.Credential(
        credential_type=enums.CredentialType.USERNAME_AND_PASSWORD,
        credential_value=objects.UsernamePasswordCredential(username=user, password=password),
    )
