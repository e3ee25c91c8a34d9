"""Conformance vectors: XML codec, response comparison and replay (fake transports, no network)."""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from kmip.core.enums import Tags

from kmip_bridge.conformance import compare as cmp
from kmip_bridge.conformance import runner
from kmip_bridge.conformance import xml_codec as xc
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

VECTORS = Path(__file__).resolve().parents[1] / "conformance" / "vectors"
FILES = sorted(VECTORS.rglob("*.xml"))
T = cmp.T


def _id(path: Path) -> str:
    return path.name


def _walk(item: Item) -> list[Item]:
    out = [item]
    if item.type == Type.STRUCTURE:
        for child in item.value:  # type: ignore[union-attr]
            out += _walk(child)
    return out


def _dummy(item: Item) -> object:
    """A stand-in server value for a placeholder of ``item``'s type."""
    name = item.value.name  # type: ignore[union-attr]
    if item.type == Type.TEXT_STRING:
        return f"srv-{name}"
    return hashlib.sha256(name.encode()).digest()[:16]


def _fill(template: Item, values: dict[str, object], now: float) -> Item:
    if template.type == Type.STRUCTURE:
        return Item(template.tag, template.type, [_fill(c, values, now) for c in template.value])
    v = template.value
    if isinstance(v, xc.Placeholder):
        v = int(now) + v.offset if v.is_now else values.setdefault(v.name, _dummy(template))
    return Item(template.tag, template.type, v)


def _replace(item: Item, tag: int, value: object) -> Item:
    if item.type == Type.STRUCTURE:
        return Item(item.tag, item.type, [_replace(c, tag, value) for c in item.value])
    return Item(item.tag, item.type, value) if item.tag == tag else item


Tweak = Callable[[int, Item, Item], Item]


class VectorServer:
    """Answers step i with the vector's expected response i (placeholders filled in), through
    ``tweak(step, request, response)`` to play a server that chose other values."""

    def __init__(self, path: Path, tweak: Tweak | None = None) -> None:
        self.pairs = xc.parse_file(path)
        self.step = 0
        self.values: dict[str, object] = {}
        self.tweak = tweak

    def call(self, message: Item) -> Item:
        request = ttlv.decode(ttlv.encode(message))  # what travels must be valid TTLV
        response = _fill(self.pairs[self.step][1], self.values, time.time())
        if self.tweak is not None:
            response = self.tweak(self.step, request, response)
        self.step += 1
        return ttlv.decode(ttlv.encode(response))

    def close(self) -> None:
        pass


def _replay(name: str, tweak: Tweak | None = None) -> runner.FileResult:
    path = next(p for p in FILES if p.name == name)
    return runner.run_file(path, connect=lambda: VectorServer(path, tweak))


# -- codec ------------------------------------------------------------------------------------------
def test_all_vectors_present() -> None:
    assert len(list((VECTORS / "v1.4").glob("*.xml"))) == 68
    assert len(list((VECTORS / "v2.1").glob("*.xml"))) == 86


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_vector_parses_and_requests_roundtrip_ttlv(path: Path) -> None:
    pairs = xc.parse_file(path)
    assert pairs
    state = cmp.State()
    for request, response in pairs:
        for leaf in _walk(request) + _walk(response):
            if isinstance(leaf.value, xc.Placeholder) and not leaf.value.is_now:
                state.bindings.setdefault(leaf.value.name, _dummy(leaf))
    for request, response in pairs:
        assert request.tag == T.REQUEST_MESSAGE and response.tag == T.RESPONSE_MESSAGE
        concrete = cmp.substitute(request, state)
        assert not any(isinstance(i.value, xc.Placeholder) for i in _walk(concrete))
        assert ttlv.decode(ttlv.encode(concrete)) == concrete


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_to_xml_parses_back_and_keeps_the_vectors_spelling(path: Path) -> None:
    pairs = xc.parse_file(path)
    text = "<KMIP>" + "".join(xc.to_xml(r) + xc.to_xml(s) for r, s in pairs) + "</KMIP>"
    assert xc.parse_string(text) == pairs

    def names(root: ET.Element) -> list[tuple[str, str | None, str | None]]:
        # Tag names, text and enumeration names must come out as the vector spells them.
        return [
            (el.tag, el.get("type"), el.get("value") if el.get("type") in ("Enumeration", "TextString") else None)
            for el in root.iter()
            if el.tag != "KMIP"
        ]

    assert names(ET.fromstring(text)) == names(ET.parse(path).getroot())


def test_enumerations_masks_and_attribute_context() -> None:
    xml = """<KMIP><RequestMessage><BatchItem>
      <Attribute><AttributeName type="TextString" value="Cryptographic Algorithm"/>
        <AttributeValue type="Enumeration" value="DES3"/></Attribute>
      <Attribute><AttributeName type="TextString" value="Cryptographic Usage Mask"/>
        <AttributeValue type="Integer" value="Encrypt Decrypt"/></Attribute>
      <CryptographicUsageMask type="Integer" value="0x0000000C"/>
      <OpaqueDataType type="Enumeration" value="0x80000001"/>
      <AttributeReference type="Enumeration" value="ActivationDate"/>
      <TTLV tag="0x54FFFF" type="TextString" value="vendor"/>
      <TAG0x54FFFE type="BigInteger" value="0000000000010001"/>
      <ActivationDate type="DateTime" value="2000-02-02T00:00:00+10:00"/>
    </BatchItem></RequestMessage><ResponseMessage/></KMIP>"""
    (request, _), = xc.parse_string(xml)
    values = [i.value for i in _walk(request) if i.type != Type.STRUCTURE]
    assert values == ["Cryptographic Algorithm", 0x02, "Cryptographic Usage Mask", 0x0C, 0x0C, 0x80000001,
                      Tags.ACTIVATION_DATE.value, "vendor", 65537, 949413600]
    out = xc.to_xml(request)
    assert 'value="DES3"' in out and 'value="Encrypt Decrypt"' in out and '<TTLV tag="0x54FFFF"' in out
    assert xc.parse_string(f"<KMIP>{out}<ResponseMessage/></KMIP>")[0][0] == request


def test_bad_vectors_are_rejected() -> None:
    with pytest.raises(xc.XmlCodecError):
        xc.parse_string('<KMIP><RequestMessage><NoSuchTag type="Integer" value="1"/></RequestMessage>'
                        "<ResponseMessage/></KMIP>")
    with pytest.raises(xc.XmlCodecError):
        xc.parse_string('<KMIP><RequestMessage><ObjectType type="Enumeration" value="Nonsense"/>'
                        "</RequestMessage><ResponseMessage/></KMIP>")
    with pytest.raises(xc.XmlCodecError):
        xc.parse_string("<KMIP><RequestMessage/></KMIP>")


# -- compare ----------------------------------------------------------------------------------------
RESPONSE = """<KMIP><RequestMessage/>
<ResponseMessage>
  <ResponseHeader>
    <ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/>
      <ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
    <TimeStamp type="DateTime" value="$NOW"/>
    <BatchCount type="Integer" value="2"/>
  </ResponseHeader>
  <BatchItem>
    <Operation type="Enumeration" value="Create"/>
    <ResultStatus type="Enumeration" value="Success"/>
    <ResponsePayload>
      <ObjectType type="Enumeration" value="SymmetricKey"/>
      <UniqueIdentifier type="TextString" value="$UNIQUE_IDENTIFIER_0"/>
    </ResponsePayload>
  </BatchItem>
  <BatchItem>
    <Operation type="Enumeration" value="GetAttributes"/>
    <ResultStatus type="Enumeration" value="Success"/>
    <ResponsePayload>
      <UniqueIdentifier type="TextString" value="$UNIQUE_IDENTIFIER_0"/>
      <Attribute><AttributeName type="TextString" value="Cryptographic Algorithm"/>
        <AttributeValue type="Enumeration" value="AES"/></Attribute>
      <Attribute><AttributeName type="TextString" value="Cryptographic Length"/>
        <AttributeValue type="Integer" value="256"/></Attribute>
      <Attribute><AttributeName type="TextString" value="Initial Date"/>
        <AttributeValue type="DateTime" value="$NOW"/></Attribute>
    </ResponsePayload>
  </BatchItem>
</ResponseMessage></KMIP>"""

FAILURE = """<KMIP><RequestMessage/>
<ResponseMessage>
  <BatchItem>
    <Operation type="Enumeration" value="Get"/>
    <ResultStatus type="Enumeration" value="OperationFailed"/>
    <ResultReason type="Enumeration" value="ItemNotFound"/>
    <ResultMessage type="TextString" value="vector's wording"/>
  </BatchItem>
</ResponseMessage></KMIP>"""


def _template(xml: str) -> Item:
    return xc.parse_string(xml)[0][1]


def _actual(template: Item, uid: str = "key-1", now: float | None = None) -> Item:
    return _fill(template, {"UNIQUE_IDENTIFIER_0": uid}, time.time() if now is None else now)


def _mutate(item: Item, pick: Callable[[Item], bool], change: Callable[[Item], list[Item]]) -> Item:
    """Replaces each child for which ``pick`` holds by ``change(child)`` (zero or more items)."""
    if item.type != Type.STRUCTURE:
        return item
    out: list[Item] = []
    for child in item.value:  # type: ignore[union-attr]
        out += change(child) if pick(child) else [_mutate(child, pick, change)]
    return Item(item.tag, item.type, out)


def _is_attr(name: str) -> Callable[[Item], bool]:
    return lambda i: i.tag == T.ATTRIBUTE and i.value_of(T.ATTRIBUTE_NAME) == name


def test_matching_response_with_another_unique_id_passes() -> None:
    template = _template(RESPONSE)
    state = cmp.State()
    assert cmp.compare(template, _actual(template, "whatever-the-server-chose"), state) == []
    assert state.bindings["UNIQUE_IDENTIFIER_0"] == "whatever-the-server-chose"


def test_changed_enumeration_is_caught() -> None:
    template = _template(RESPONSE)
    actual = _replace(_actual(template), T.OBJECT_TYPE, 0x03)
    assert cmp.compare(template, actual, cmp.State()) == [
        "ResponseMessage/BatchItem[1]/ResponsePayload/ObjectType: expected SymmetricKey, got PublicKey"
    ]
    changed = _mutate(_actual(template), _is_attr("Cryptographic Algorithm"),
                      lambda a: [_replace(a, T.ATTRIBUTE_VALUE, 0x02)])
    diffs = cmp.compare(template, changed, cmp.State())
    assert diffs == ["ResponseMessage/BatchItem[2]/ResponsePayload/Attribute[Cryptographic Algorithm]/"
                     "AttributeValue: expected AES, got DES3"]


def test_missing_and_extra_attributes_are_caught() -> None:
    template = _template(RESPONSE)
    missing = _mutate(_actual(template), _is_attr("Cryptographic Length"), lambda a: [])
    assert cmp.compare(template, missing, cmp.State()) == [
        "ResponseMessage/BatchItem[2]/ResponsePayload/Attribute[Cryptographic Length]: missing (expected structure)"
    ]
    extra_attr = ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "State"),
                                            ttlv.enum(T.ATTRIBUTE_VALUE, 1)])
    extra = _mutate(_actual(template), _is_attr("Cryptographic Length"), lambda a: [a, extra_attr])
    diffs = cmp.compare(template, extra, cmp.State())
    assert diffs == ["ResponseMessage/BatchItem[2]/ResponsePayload/Attribute[State]: unexpected structure"]


def test_wrong_result_reason_is_caught_but_result_message_text_is_free() -> None:
    template = _template(FAILURE)
    other_words = _replace(_actual(template), T.RESULT_MESSAGE, "server's wording")
    assert cmp.compare(template, other_words, cmp.State()) == []
    wrong = _replace(other_words, T.RESULT_REASON, 0x0C)
    assert cmp.compare(template, wrong, cmp.State()) == [
        "ResponseMessage/BatchItem[1]/ResultReason: expected ItemNotFound, got PermissionDenied"
    ]
    silent = _mutate(other_words, lambda i: i.tag == T.RESULT_MESSAGE, lambda i: [])
    assert cmp.compare(template, silent, cmp.State()) == [
        "ResponseMessage/BatchItem[1]/ResultMessage: missing (expected TextString vector's wording)"
    ]


def test_inconsistent_reuse_of_a_placeholder_is_caught() -> None:
    template = _template(RESPONSE)
    actual = _actual(template, "key-1")
    second = actual.all(T.BATCH_ITEM)[1]
    actual = Item(actual.tag, actual.type, [actual.get(T.RESPONSE_HEADER), actual.all(T.BATCH_ITEM)[0],
                                            _replace(second, T.UNIQUE_IDENTIFIER, "key-2")])
    diffs = cmp.compare(template, actual, cmp.State())
    assert len(diffs) == 1 and "$UNIQUE_IDENTIFIER_0 is 'key-1'" in diffs[0] and "'key-2'" in diffs[0]
    # ... also across messages: the binding is carried in the state.
    state = cmp.State()
    assert cmp.compare(template, _actual(template, "key-1"), state) == []
    assert cmp.compare(template, _actual(template, "key-9"), state) != []


def test_two_placeholders_may_not_bind_one_id() -> None:
    xml = RESPONSE.replace('value="$UNIQUE_IDENTIFIER_0"/>\n    </ResponsePayload>\n  </BatchItem>\n  <BatchItem>',
                           'value="$UNIQUE_IDENTIFIER_1"/>\n    </ResponsePayload>\n  </BatchItem>\n  <BatchItem>', 1)
    template = _template(xml)
    actual = _fill(template, {"UNIQUE_IDENTIFIER_0": "same", "UNIQUE_IDENTIFIER_1": "same"}, time.time())
    diffs = cmp.compare(template, actual, cmp.State())
    assert len(diffs) == 1 and "already $UNIQUE_IDENTIFIER_1" in diffs[0]


def test_now_is_matched_within_the_tolerance() -> None:
    template = _template(RESPONSE)
    assert cmp.compare(template, _actual(template, now=time.time() - 60), cmp.State()) == []
    diffs = cmp.compare(template, _actual(template, now=time.time() - 3600), cmp.State())
    assert len(diffs) == 2 and all("from $NOW" in d for d in diffs)


def test_correlation_values_in_the_response_header_are_optional() -> None:
    template = _template(RESPONSE)
    actual = _actual(template)
    header = actual.get(T.RESPONSE_HEADER)
    header.value.insert(2, ttlv.text(T.SERVER_CORRELATION_VALUE, "abc"))  # type: ignore[union-attr]
    assert cmp.compare(template, actual, cmp.State()) == []


def test_placeholders_in_requests_are_substituted() -> None:
    (request, _), = xc.parse_string(
        '<KMIP><RequestMessage><UniqueIdentifier type="TextString" value="$UNIQUE_IDENTIFIER_0"/>'
        '<ActivationDate type="DateTime" value="$NOW-3600"/><Data type="ByteString" value="$DATA_0"/>'
        "</RequestMessage><ResponseMessage/></KMIP>")
    state = cmp.State(bindings={"UNIQUE_IDENTIFIER_0": "abc"})
    with pytest.raises(cmp.UnboundPlaceholder):
        cmp.substitute(request, state)
    state.latest[T.DATA] = b"\x01"  # fallback: the last Data the server returned
    assert [i.value for i in cmp.substitute(request, state, now=10_000).value] == ["abc", 6400, b"\x01"]


# -- replay -----------------------------------------------------------------------------------------
def test_replay_of_every_vector_against_its_own_expectations_passes() -> None:
    results = [runner.run_file(p, connect=lambda p=p: VectorServer(p)) for p in FILES]
    failing = {r.name: (r.error, r.differences[:3]) for r in results if not r.passed}
    assert failing == {}


def test_replay_tolerates_a_digest_over_a_generated_key() -> None:
    def tweak(step: int, request: Item, response: Item) -> Item:
        return _replace(response, T.DIGEST_VALUE, bytes(32)) if step == 1 else response

    assert _replay("SKLC-M-1-14.xml", tweak).passed
    short = _replay("SKLC-M-1-14.xml", lambda s, q, r: _replace(r, T.DIGEST_VALUE, bytes(20)) if s == 1 else r)
    assert not short.passed and "server-chosen value of 32 bytes expected, got 20" in short.differences[0]


def test_replay_sends_the_servers_ciphertext_back() -> None:
    # CS-BC-M-3: the key is generated, so the ciphertext differs; Decrypt must then get ours.
    ours = bytes(range(16))

    def tweak(step: int, request: Item, response: Item) -> Item:
        if step == 1:
            return _replace(response, T.DATA, ours)
        if step == 2 and request.get(T.BATCH_ITEM).get(T.REQUEST_PAYLOAD).value_of(T.DATA) != ours:  # type: ignore[union-attr]
            return _replace(response, T.DATA, b"garbage decrypt!")
        return response

    result = _replay("CS-BC-M-3-14.xml", tweak)
    assert result.passed, result.differences


def test_replay_of_server_chosen_iv_and_undefined_request_placeholders() -> None:
    # CS-BC-M-13-14 (RandomIV): expects literal IV and ciphertext, later sends $DATA_0/$IV_COUNTER_NONCE.
    iv, data = b"\x11" * 16, b"\x22" * 48

    def tweak(step: int, request: Item, response: Item) -> Item:
        if step == 1:
            return _replace(_replace(response, T.IV_COUNTER_NONCE, iv), T.DATA, data)
        payload = request.get(T.BATCH_ITEM).get(T.REQUEST_PAYLOAD)  # type: ignore[union-attr]
        if step == 3 and (payload.value_of(T.DATA), payload.value_of(T.IV_COUNTER_NONCE)) != (data, iv):  # type: ignore[union-attr]
            return _replace(response, T.DATA, b"wrong")
        return response

    result = _replay("CS-BC-M-13-14.xml", tweak)
    assert result.passed, result.differences


def test_replay_reports_a_changed_value_with_its_step() -> None:
    def activate(step: int, request: Item, response: Item) -> Item:
        if step != 1:
            return response
        return _mutate(response, _is_attr("State"), lambda a: [_replace(a, T.ATTRIBUTE_VALUE, 2)])

    result = _replay("SKLC-M-1-14.xml", activate)
    assert not result.passed and result.failed_step == 1 and 'value="Active"' in (result.actual_xml or "")
    assert result.differences == [
        "step 1: ResponseMessage/BatchItem[1]/ResponsePayload/Attribute[State]/AttributeValue: "
        "expected PreActive, got Active"
    ]


def test_replay_stops_when_an_id_was_never_returned() -> None:
    def fail_create(step: int, request: Item, response: Item) -> Item:
        return _mutate(response, lambda i: i.tag == T.RESPONSE_PAYLOAD, lambda i: [])

    result = _replay("SKLC-M-1-14.xml", fail_create)
    assert not result.passed and result.steps_run == 1 and "UNIQUE_IDENTIFIER_0" in (result.error or "")


# -- runner helpers ---------------------------------------------------------------------------------
def test_profiles_expected_failures_and_report(tmp_path: Path) -> None:
    assert runner.profile_of("CS-BC-M-GCM-1-14.xml") == ("CS-BC", "1.4")
    assert runner.profile_of("SUITEB_128-M-1-14.xml") == ("SUITEB_128", "1.4")
    assert runner.profile_of("BL-M-10-21.xml") == ("BL", "2.1")
    listing = tmp_path / "xfail.yaml"
    listing.write_text("# known\nTL-M-1-21: Query lists this server's operations\n- 'QS-M-1-21.xml': same\n")
    expected = runner.load_expected_failures(listing)
    assert expected == {"TL-M-1-21": "Query lists this server's operations", "QS-M-1-21": "same"}
    results = [
        runner.FileResult("TL-M-1-21.xml", "TL", "2.1", passed=False, differences=["step 0: x"]),
        runner.FileResult("BL-M-1-21.xml", "BL", "2.1", passed=True),
    ]
    lines: list[str] = []
    assert runner.report(results, expected, verbose=True, out=lines.append) == 0
    assert any(line.startswith("total: 1/2 passed strictly; 1 expected failures, 0 unexpected") for line in lines)
    assert runner.report(results, {}, out=lines.append) == 1
