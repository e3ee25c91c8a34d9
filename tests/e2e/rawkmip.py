"""Raw TTLV conversations at an exact protocol version, for the version-gated scenario tests
(test_versions, test_lifecycle_dates, test_query): the request is exactly what is written here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from kmip.core import enums
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server

Version = tuple[int, int]
V1X = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
ALL = [*V1X, (2, 0), (2, 1)]


class Conn:
    def __init__(self, server: Server, instance: Instance, name: str = "admin") -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx)

    def message(self, items: list[tuple[Operation, list[Item]]], version: Version) -> Item:
        msg = request([(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, f)) for op, f in items], version=version)
        return self.raw.call(msg)

    def call(self, op: Operation, fields: list[Item], version: Version) -> Item:
        return self.message([(op, fields)], version).all(T.BATCH_ITEM.value)[0]

    def ok(self, op: Operation, fields: list[Item], version: Version) -> Item:
        bi = self.call(op, fields, version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value) or ttlv.struct_(T.RESPONSE_PAYLOAD, [])

    def fails(self, op: Operation, fields: list[Item], version: Version, reason: ResultReason) -> Item:
        bi = self.call(op, fields, version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value, bi
        got = bi.value_of(T.RESULT_REASON.value)
        assert got == reason.value, (ResultReason(got).name, bi.value_of(T.RESULT_MESSAGE.value))  # type: ignore[arg-type]
        return bi


def open_conn(server: Server, instance: Instance) -> Iterator[Conn]:
    """The body of each module's ``conn`` fixture (one admin connection per module)."""
    c = Conn(server, instance)
    yield c
    c.raw.close()


def until(check: Callable[[], bool], attempts: int = 80) -> None:
    """Polls until ``check`` holds (0.25 s apart): waits for a date to pass without asserting
    anything about how long that took."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"condition still false after {attempts} attempts")


# -- request pieces -----------------------------------------------------------------------------------
def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def v1(name: str, value: Item, index: int | None = None) -> Item:
    parts = [ttlv.text(T.ATTRIBUTE_NAME, name)]
    if index is not None:
        parts.append(ttlv.integer(T.ATTRIBUTE_INDEX, index))
    return ttlv.struct_(T.ATTRIBUTE, [*parts, value])


def attr_value(tag: T, type_: Type, value: object) -> Item:
    """A 2.x tagged attribute, or (tag Attribute Value) the value of a 1.x one."""
    return Item(tag.value, type_, value)


def date_attr(name: str, when: int, version: Version) -> Item:
    """A Date-Time attribute in the version's template form."""
    if version >= (2, 0):
        return ttlv.date_time(T[name.upper().replace(" ", "_")], when)
    return v1(name, ttlv.date_time(T.ATTRIBUTE_VALUE, when))


def create_aes(c: Conn, version: Version, *extra: Item, mask: int | None = None) -> str:
    mask = mask if mask is not None else (enums.CryptographicUsageMask.ENCRYPT.value
                                          | enums.CryptographicUsageMask.DECRYPT.value)
    if version >= (2, 0):
        attrs = [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                 ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, mask), *extra]
        fields = [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), ttlv.struct_(T.ATTRIBUTES, attrs)]
    else:
        attrs = [v1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
                 v1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)),
                 v1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, mask)), *extra]
        fields = [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs)]
    out = c.ok(Operation.CREATE, fields, version)
    return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def attribute_names(payload: Item, version: Version) -> list[str]:
    """The attribute names a GetAttributes answer carries (1.x structures or 2.x tags)."""
    from kmip_bridge.protocol import attributes as wire

    if version >= (2, 0):
        attrs = payload.get(T.ATTRIBUTES.value)
        return [wire.parse_v2(a).name for a in (attrs or [])]
    return [a.value_of(T.ATTRIBUTE_NAME.value) for a in payload.all(T.ATTRIBUTE.value)]  # type: ignore[misc]


def get_attributes(c: Conn, uid: str, version: Version, *names: str) -> Item:
    from kmip_bridge.protocol import attributes as wire

    if version >= (2, 0):
        fields = [uid_(uid), *(wire.reference_v2(n) for n in names)]
    else:
        fields = [uid_(uid), *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names)]
    return c.ok(Operation.GET_ATTRIBUTES, fields, version)


def state_of(c: Conn, uid: str, version: Version = (1, 4)) -> int:
    payload = get_attributes(c, uid, version, "State")
    if version >= (2, 0):
        return payload.get(T.ATTRIBUTES.value).value_of(T.STATE.value)  # type: ignore[union-attr,return-value]
    return payload.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_VALUE.value)  # type: ignore[union-attr,return-value]


def locate_by_state(c: Conn, state: enums.State, version: Version, *extra: Item) -> list[str]:
    if version >= (2, 0):
        fields = [ttlv.struct_(T.ATTRIBUTES, [ttlv.enum(T.STATE, state), *extra])]
    else:
        fields = [v1("State", ttlv.enum(T.ATTRIBUTE_VALUE, state)), *extra]
    out = c.ok(Operation.LOCATE, fields, version)
    return [u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)]  # type: ignore[misc]


def name_attr(value: str, version: Version) -> Item:
    parts = [ttlv.text(T.NAME_VALUE, value), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)]
    if version >= (2, 0):
        return ttlv.struct_(T.NAME, parts)
    return v1("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, parts))
