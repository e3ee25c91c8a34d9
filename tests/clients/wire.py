"""A scripted KMIP conversation at one protocol version, and the checks every response passes.

Each request is built byte for byte with the project's TTLV codec (as the field client sends it);
each response is decoded strictly and checked against what that protocol version defines: the
header echoes the version, every tag, enumeration value and mask bit exists in it (the tables of
protocol/enumerations.py), every 1.x attribute name is one of its attributes (or a custom x-/y-
one), the batch items answer the operations asked, and no attribute is carried inside a Key Value.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from kmip.core import enums
from kmip.core.enums import Operation, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context
from kmip_bridge.protocol import attributes as wire_attrs
from kmip_bridge.protocol import enumerations, gate, messages, ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from ..e2e.conftest import Instance, Server

Version = tuple[int, int]

_PYKMIP_VERSION = {
    (1, 0): enums.KMIPVersion.KMIP_1_0, (1, 1): enums.KMIPVersion.KMIP_1_1,
    (1, 2): enums.KMIPVersion.KMIP_1_2, (1, 3): enums.KMIPVersion.KMIP_1_3,
    (1, 4): enums.KMIPVersion.KMIP_1_4,
}


class KmipFailure(AssertionError):
    def __init__(self, operation: int, status: int, reason: int | None, message: str | None) -> None:
        super().__init__(f"{Operation(operation).name}: status {status} reason {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def check_well_formed(data: bytes, version: Version, operations: list[int]) -> Item:
    """Decodes ``data`` strictly and checks it is a response that ``version`` can carry."""
    message = ttlv.decode(data)  # strict lengths, known types, padding zero
    assert message.tag == T.RESPONSE_MESSAGE.value
    assert ttlv.encode(message) == data, "response does not re-encode to the same bytes"
    header = message.get(T.RESPONSE_HEADER.value)
    assert header is not None
    pv = header.get(T.PROTOCOL_VERSION.value)
    assert pv is not None
    got = (pv.value_of(T.PROTOCOL_VERSION_MAJOR.value), pv.value_of(T.PROTOCOL_VERSION_MINOR.value))
    assert got == version, f"response speaks {got}, the request {version}"
    assert header.value_of(T.TIME_STAMP.value) is not None
    items = message.all(T.BATCH_ITEM.value)
    assert header.value_of(T.BATCH_COUNT.value) == len(items)
    _check_tags(message, version, [])
    for item in items:  # every enumeration value, mask bit and attribute in the version (gate.py's rules)
        body = item.get(T.RESPONSE_PAYLOAD.value)
        found = gate.problem(body, version) if body is not None else None
        assert found is None, f"KMIP {version}: the response carries {found}"
    for item, op in zip(items, operations, strict=False):
        status = item.value_of(T.RESULT_STATUS.value)
        assert status is not None
        # A message refused as a whole (not parsed) names no operation; any other item echoes its own.
        if item.get(T.OPERATION.value) is None:
            assert status != ResultStatus.SUCCESS.value and len(items) == 1, "batch item names no operation"
        else:
            assert item.value_of(T.OPERATION.value) == op, "batch item answers another operation"
    if version < (2, 0):
        _check_v1_attributes(message, version)
    return message


def _check_tags(item: Item, version: Version, path: list[str]) -> None:
    where = "/".join([*path, ttlv.tag_name(item.tag)])
    assert enumerations.tag_in(item.tag, version), f"{where}: tag 0x{item.tag:06X} does not exist in KMIP {version}"
    assert item.tag >> 16 == 0x42, f"{where}: extension tag 0x{item.tag:06X} sent unasked"
    if item.type == Type.STRUCTURE:
        for child in item:
            _check_tags(child, version, [*path, ttlv.tag_name(item.tag)])


def _walk(item: Item):  # type: ignore[no-untyped-def]
    yield item
    if item.type == Type.STRUCTURE:
        for child in item:
            yield from _walk(child)


def _check_v1_attributes(message: Item, version: Version) -> None:
    for node in _walk(message):
        if node.tag == T.KEY_VALUE.value and node.type == Type.STRUCTURE:
            assert node.get(T.ATTRIBUTE.value) is None, "1.x response carries attributes inside Key Value"
        if node.tag != T.ATTRIBUTE.value:
            continue
        name = node.value_of(T.ATTRIBUTE_NAME.value)
        assert isinstance(name, str)
        if wire_attrs.is_custom(name):
            continue
        tag = wire_attrs.tag_for(name)
        assert tag is not None and enums.is_attribute(enums.Tags(tag), _PYKMIP_VERSION[version]), (
            f"attribute '{name}' does not exist in KMIP {version[0]}.{version[1]}"
        )


# -- request builders --------------------------------------------------------------------------------
def attr(name: str, value: Item, index: int | None = None) -> Item:
    """A 1.x Attribute; ``value`` is any item (its tag is replaced by Attribute Value)."""
    children = [ttlv.text(T.ATTRIBUTE_NAME, name)]
    if index is not None:
        children.append(ttlv.integer(T.ATTRIBUTE_INDEX, index))
    children.append(Item(T.ATTRIBUTE_VALUE.value, value.type, value.value))
    return ttlv.struct_(T.ATTRIBUTE, children)


def name_value(text: str) -> Item:
    return ttlv.struct_(T.ATTRIBUTE_VALUE, [
        ttlv.text(T.NAME_VALUE, text), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])


def v(kind: str, value: object) -> Item:
    """A bare attribute value: v("enum", 3), v("int", 256), v("text", "x"), ..."""
    make = {"enum": ttlv.enum, "int": ttlv.integer, "text": ttlv.text, "bool": ttlv.boolean,
            "date": ttlv.date_time, "bytes": ttlv.bytes_}[kind]
    return make(T.ATTRIBUTE_VALUE, value)  # type: ignore[operator]


def template(*attrs: Item) -> Item:
    return ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs)


def payload(*children: Item | None) -> Item:
    return ttlv.struct_(T.REQUEST_PAYLOAD, children)


def uid(u: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, u)


def aes_template(length: int = 256, mask: int = 12, *extra: Item) -> Item:
    return template(
        attr("Cryptographic Algorithm", v("enum", enums.CryptographicAlgorithm.AES)),
        attr("Cryptographic Length", v("int", length)),
        attr("Cryptographic Usage Mask", v("int", mask)),
        *extra,
    )


# -- the conversation ---------------------------------------------------------------------------------
@dataclass
class Reply:
    message: Item
    items: list[Item]

    @property
    def payload(self) -> Item:
        p = self.items[0].get(T.RESPONSE_PAYLOAD.value)
        return p if p is not None else ttlv.struct_(T.RESPONSE_PAYLOAD, [])


class Conversation:
    """One field client talking to the server at ``version`` with its own certificate."""

    def __init__(self, server: Server, instance: Instance, client: str, version: Version,
                 ctx: ssl.SSLContext | None = None) -> None:
        folder = instance.dir / "clients" / client
        if not folder.exists():
            instance.client(client)
        self.ctx = ctx or client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.server, self.version = server, version
        self.conn = RawClient("127.0.0.1", server.port, self.ctx)

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = RawClient("127.0.0.1", self.server.port, self.ctx)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, items: list[tuple[int, Item | None]], header_extra: list[Item] | None = None,
             version: Version | None = None) -> Reply:
        version = version or self.version
        header = [messages.protocol_version(version), *(header_extra or []),
                  ttlv.integer(T.BATCH_COUNT, len(items))]
        body = [ttlv.struct_(T.REQUEST_HEADER, header)]
        for op, p in items:
            body.append(ttlv.struct_(T.BATCH_ITEM, [ttlv.enum(T.OPERATION, op), p or payload()]))
        data = self.conn.send_raw(ttlv.encode(ttlv.struct_(T.REQUEST_MESSAGE, body)))
        assert data is not None, "server closed the connection"
        message = check_well_formed(data, version, [op for op, _ in items])
        return Reply(message, message.all(T.BATCH_ITEM.value))

    def call(self, op: Operation, p: Item | None = None, **kw: object) -> Item:
        """One operation that must succeed; returns its response payload."""
        reply = self.send([(op.value, p)], **kw)  # type: ignore[arg-type]
        item = reply.items[0]
        status = item.value_of(T.RESULT_STATUS.value)
        if status != ResultStatus.SUCCESS.value:
            raise KmipFailure(op.value, status, item.value_of(T.RESULT_REASON.value),  # type: ignore[arg-type]
                              item.value_of(T.RESULT_MESSAGE.value))  # type: ignore[arg-type]
        return reply.payload

    def fails(self, op: Operation, p: Item | None = None) -> KmipFailure:
        try:
            self.call(op, p)
        except KmipFailure as failure:
            return failure
        raise AssertionError(f"{op.name} succeeded where it should fail")

    # -- common steps ---------------------------------------------------------------------------------
    def discover(self, offered: list[Version] | None = None) -> list[Version]:
        children = [messages.protocol_version(x) for x in offered or []]
        p = self.call(Operation.DISCOVER_VERSIONS, payload(*children))
        return [(pv.value_of(T.PROTOCOL_VERSION_MAJOR.value), pv.value_of(T.PROTOCOL_VERSION_MINOR.value))  # type: ignore[misc]
                for pv in p.all(T.PROTOCOL_VERSION.value)]

    def create_aes(self, *extra: Item, length: int = 256, mask: int = 12) -> str:
        p = self.call(Operation.CREATE, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), aes_template(length, mask, *extra)))
        assert p.value_of(T.OBJECT_TYPE.value) == enums.ObjectType.SYMMETRIC_KEY.value
        return str(p.value_of(T.UNIQUE_IDENTIFIER.value))

    def attributes(self, u: str, *names: str) -> dict[str, list[Item]]:
        """Get Attributes (1.x form): name -> values."""
        p = self.call(Operation.GET_ATTRIBUTES, payload(uid(u), *[ttlv.text(T.ATTRIBUTE_NAME, n) for n in names]))
        assert p.value_of(T.UNIQUE_IDENTIFIER.value) == u
        out: dict[str, list[Item]] = {}
        for a in p.all(T.ATTRIBUTE.value):
            out.setdefault(str(a.value_of(T.ATTRIBUTE_NAME.value)), []).append(a.get(T.ATTRIBUTE_VALUE.value))  # type: ignore[arg-type]
        return out

    def state(self, u: str) -> int:
        return self.attributes(u, "State")["State"][0].value  # type: ignore[return-value]

    def activate(self, u: str) -> None:
        assert self.call(Operation.ACTIVATE, payload(uid(u))).value_of(T.UNIQUE_IDENTIFIER.value) == u

    def get_key_material(self, u: str, *extra: Item) -> tuple[Item, bytes]:
        p = self.call(Operation.GET, payload(uid(u), *extra))
        assert p.value_of(T.UNIQUE_IDENTIFIER.value) == u
        obj = next(c for c in p if c.tag not in (T.OBJECT_TYPE.value, T.UNIQUE_IDENTIFIER.value))
        material = _find(obj, T.KEY_MATERIAL.value)
        return obj, material.value if material is not None and material.type == Type.BYTE_STRING else b""  # type: ignore[return-value]

    def locate(self, *criteria: Item, maximum: int | None = None,
               offset: int | None = None) -> tuple[list[str], int | None]:
        children: list[Item | None] = [
            ttlv.integer(T.MAXIMUM_ITEMS, maximum) if maximum is not None else None,
            ttlv.integer(T.OFFSET_ITEMS, offset) if offset is not None else None,
            *criteria,
        ]
        p = self.call(Operation.LOCATE, payload(*children))
        located = p.value_of(T.LOCATED_ITEMS.value)
        return [str(x.value) for x in p.all(T.UNIQUE_IDENTIFIER.value)], located  # type: ignore[return-value]

    def revoke(self, u: str,
               reason: enums.RevocationReasonCode = enums.RevocationReasonCode.CESSATION_OF_OPERATION) -> None:
        self.call(Operation.REVOKE, payload(uid(u), ttlv.struct_(T.REVOCATION_REASON, [
            ttlv.enum(T.REVOCATION_REASON_CODE, reason)])))

    def destroy(self, u: str) -> None:
        assert self.call(Operation.DESTROY, payload(uid(u))).value_of(T.UNIQUE_IDENTIFIER.value) == u


def _find(item: Item, tag: int) -> Item | None:
    for node in _walk(item):
        if node.tag == tag:
            return node
    return None
