"""Version gating, proved generally: a 2.1 client fills the server with every kind of object it
can make (AES, ChaCha20, HMAC-SHA3, RSA, EC on P-224/P-256/P-384/secp256k1, Ed25519, Secret Data,
Opaque Data, PGP Key, a certificate, split key parts, Compromised / Destroyed / Destroyed
Compromised states, links, URI names, 1.4 and 2.x attribute values); then a client of each
version 1.0..2.1 drives a broad set of operations over all of it, and every response's raw TTLV
is walked (our own decoder over the bytes: tag, type, value) and must hold only tags,
enumeration values, mask bits and attribute names its version defines (protocol/enumerations.py,
protocol/versions.py). Real server, SoftHSM2, mutual TLS, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kmip.core import enums
from kmip.core.enums import Operation, QueryFunction, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import request
from kmip_bridge.protocol import attributes as wire
from kmip_bridge.protocol import enumerations, ttlv, versions
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server
from .rawkmip import ALL, Conn, open_conn, uid_

pytestmark = pytest.mark.e2e

Version = tuple[int, int]
V21 = (2, 1)
A = enums.CryptographicAlgorithm
M = enums.CryptographicUsageMask


# -- the checker: a walker over the raw bytes -------------------------------------------------------
@dataclass
class Node:
    tag: int
    type: int
    value: object  # list[Node] for structures, else int / bytes


def _walk_bytes(data: bytes, start: int, end: int) -> list[Node]:
    nodes, at = [], start
    while at < end:
        tag = int.from_bytes(data[at:at + 3], "big")
        kind, length = data[at + 3], struct.unpack(">I", data[at + 4:at + 8])[0]
        body = data[at + 8:at + 8 + length]
        assert len(body) == length, "truncated TTLV"
        if kind == Type.STRUCTURE:
            value: object = _walk_bytes(data, at + 8, at + 8 + length)
        elif kind in (Type.INTEGER, Type.ENUMERATION, Type.INTERVAL):
            value = struct.unpack(">I" if kind != Type.INTEGER else ">i", body[:4])[0]
        elif kind == Type.BOOLEAN or kind == Type.LONG_INTEGER or kind == Type.DATE_TIME:
            value = int.from_bytes(body, "big")
        else:
            value = body
        nodes.append(Node(tag, kind, value))
        at += 8 + (length + 7) // 8 * 8
    assert at == end, "TTLV runs past its structure"
    return nodes


def violations(data: bytes, version: Version) -> list[str]:
    """Everything in a response message that ``version`` does not define."""
    found: list[str] = []
    (message,) = _walk_bytes(data, 0, len(data))
    _check(message, version, "", None, found)
    return found


def _check(node: Node, version: Version, path: str, meaning: int | None, found: list[str]) -> None:
    where = f"{path}/{ttlv.tag_name(node.tag)}"
    tag = node.tag if meaning is None else meaning
    if not enumerations.tag_in(node.tag, version):
        found.append(f"{where}: tag 0x{node.tag:06X}")
    if node.type == Type.ENUMERATION:
        if not enumerations.enumeration_known(tag):
            found.append(f"{where}: enumeration {ttlv.tag_name(tag)} has no version table")
        elif not enumerations.value_in(tag, node.value, version):  # type: ignore[arg-type]
            found.append(f"{where}: {ttlv.tag_name(tag)} value 0x{node.value:X}")
    if node.type == Type.INTEGER and tag in enumerations.MASK_SINCE:
        if not enumerations.mask_in(tag, node.value, version):  # type: ignore[arg-type]
            found.append(f"{where}: {ttlv.tag_name(tag)} bits 0x{node.value:X}")
    if node.type != Type.STRUCTURE:
        return
    children: list[Node] = node.value  # type: ignore[assignment]
    value_meaning = None
    if node.tag == T.ATTRIBUTE.value:
        name = next((c.value.decode() for c in children if c.tag == T.ATTRIBUTE_NAME.value), None)  # type: ignore[union-attr]
        vendor = any(c.tag == T.VENDOR_IDENTIFICATION.value for c in children)  # a 2.x vendor attribute
        if name is not None and not wire.is_custom(name) and not vendor:
            if not versions.attribute_in(name, version):
                found.append(f"{where}: attribute '{name}'")
            value_meaning = wire.tag_for(name)
    if version < (2, 0) and node.tag == T.KEY_VALUE.value:
        if any(c.tag in (T.ATTRIBUTE.value, T.ATTRIBUTES.value) for c in children):
            found.append(f"{where}: attributes inside a 1.x Key Value")
    for child in children:
        if node.tag == T.BATCH_ITEM.value and child.tag == T.OPERATION.value:
            continue  # the echo of the operation the client asked (refused if its version lacks it)
        _check(child, version, where, value_meaning if child.tag == T.ATTRIBUTE_VALUE.value else None, found)


# -- requests at any version ---------------------------------------------------------------------------
def _attrs(version: Version, *pairs: tuple[str, Item]) -> Item:
    """Attributes in the version's form: (name, value item with the attribute's own tag)."""
    if version >= (2, 0):
        return ttlv.struct_(T.ATTRIBUTES, [v for _, v in pairs])
    return ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
        ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, n), Item(T.ATTRIBUTE_VALUE.value, v.type, v.value)])
        for n, v in pairs])


@dataclass
class Client:
    """One connection; every response it receives is checked and its violations kept."""

    conn: Conn
    problems: list[str] = field(default_factory=list)
    seen: list[tuple[Version, bytes]] = field(default_factory=list)

    def call(self, op: Operation, fields: list[Item], version: Version) -> Item:
        data = self.conn.raw.send_raw(ttlv.encode(request(
            [(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, fields))], version=version)))
        assert data is not None, "server closed the connection"
        self.seen.append((version, data))
        self.problems += [f"KMIP {version} {op.name}: {v}" for v in violations(data, version)]
        return ttlv.decode(data).all(T.BATCH_ITEM.value)[0]

    def ok(self, op: Operation, fields: list[Item], version: Version = V21) -> Item:
        bi = self.call(op, fields, version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, (
            op.name, version, bi.value_of(T.RESULT_MESSAGE.value))
        return bi.get(T.RESPONSE_PAYLOAD.value) or ttlv.struct_(T.RESPONSE_PAYLOAD, [])


@pytest.fixture(scope="module")
def client(server: Server, instance: Instance) -> Iterator[Client]:
    for conn in open_conn(server, instance):
        yield Client(conn)


# -- what a 2.1 client makes -----------------------------------------------------------------------------
def _uid(payload: Item) -> str:
    return payload.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def _name(text: str, kind: enums.NameType = enums.NameType.UNINTERPRETED_TEXT_STRING) -> tuple[str, Item]:
    return "Name", ttlv.struct_(T.NAME, [ttlv.text(T.NAME_VALUE, text), ttlv.enum(T.NAME_TYPE, kind)])


def _symmetric(c: Client, algorithm: A, length: int, mask: int, *extra: tuple[str, Item]) -> str:
    return _uid(c.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), _attrs(V21,
        ("Cryptographic Algorithm", ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm)),
        ("Cryptographic Length", ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length)),
        ("Cryptographic Usage Mask", ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, mask)), *extra)]))


def _register_key(c: Client, kind: enums.ObjectType, algorithm: A, length: int, material: bytes,
                  fmt: enums.KeyFormatType, mask: int) -> str:
    block = ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, fmt),
        ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm), ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length)])
    tag = {enums.ObjectType.SYMMETRIC_KEY: T.SYMMETRIC_KEY, enums.ObjectType.PRIVATE_KEY: T.PRIVATE_KEY}[kind]
    return _uid(c.ok(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, kind), _attrs(
        V21, ("Cryptographic Usage Mask", ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, mask))),
        ttlv.struct_(tag, [block])]))


def _pair(c: Client, *common: Item, priv_mask: int = M.SIGN.value, pub_mask: int = M.VERIFY.value) -> list[str]:
    out = c.ok(Operation.CREATE_KEY_PAIR, [
        ttlv.struct_(T.COMMON_ATTRIBUTES, list(common)),
        ttlv.struct_(T.PRIVATE_KEY_ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, priv_mask)]),
        ttlv.struct_(T.PUBLIC_KEY_ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, pub_mask)])])
    return [out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value), out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value)]  # type: ignore[list-item]


def _certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gating")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _revoke(c: Client, uid: str, code: enums.RevocationReasonCode) -> None:
    c.ok(Operation.REVOKE, [uid_(uid), ttlv.struct_(T.REVOCATION_REASON, [ttlv.enum(T.REVOCATION_REASON_CODE, code)]),
                            ttlv.date_time(T.COMPROMISE_OCCURRENCE_DATE, int(time.time()) - 60)])


def _link(c: Client, uid: str, kind: enums.LinkType, target: str) -> None:
    c.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), ttlv.struct_(T.NEW_ATTRIBUTE, [ttlv.struct_(T.LINK, [
        ttlv.enum(T.LINK_TYPE, kind), ttlv.text(T.LINKED_OBJECT_IDENTIFIER, target)])])])


@pytest.fixture(scope="module")
def population(client: Client) -> dict[str, str]:
    c, now = client, int(time.time())
    objs: dict[str, str] = {}
    params = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
        ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.AEAD),  # 1.4
        ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA3_256),  # 1.4
        ttlv.enum(T.PADDING_METHOD, enums.PaddingMethod.NONE),
        ttlv.integer(T.TAG_LENGTH, 16)])  # a 1.2 field
    objs["aes"] = _symmetric(
        c, A.AES, 256, M.ENCRYPT.value | M.DECRYPT.value | M.AUTHENTICATE.value,  # a 2.0 mask bit
        _name("https://keys.example/aes", enums.NameType.URI), ("Cryptographic Parameters", params),
        ("Activation Date", ttlv.date_time(T.ACTIVATION_DATE, now - 60)),
        ("Description", ttlv.text(T.DESCRIPTION, "made by a 2.1 client")),
        ("x-Vendor", ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.VENDOR_IDENTIFICATION, "x"),
                                                ttlv.text(T.ATTRIBUTE_NAME, "Vendor"),
                                                ttlv.text(T.ATTRIBUTE_VALUE, "gating")])),
        ("Alternative Name", ttlv.struct_(T.ALTERNATIVE_NAME, [
            ttlv.text(T.ALTERNATIVE_NAME_VALUE, "10.0.0.1"),
            ttlv.enum(T.ALTERNATIVE_NAME_TYPE, enums.AlternativeNameType.IP_ADDRESS)])))
    objs["aes-plain"] = _symmetric(c, A.AES, 128, M.ENCRYPT.value | M.DECRYPT.value, _name("plain"))
    objs["chacha20"] = _symmetric(c, A.CHACHA20, 256, M.ENCRYPT.value | M.DECRYPT.value)  # 1.4
    objs["hmac-sha3"] = _register_key(c, enums.ObjectType.SYMMETRIC_KEY, A.HMAC_SHA3_256, 256, bytes(range(32)),
                                      enums.KeyFormatType.RAW, M.MAC_GENERATE.value | M.MAC_VERIFY.value)
    objs["rsa-private"], objs["rsa-public"] = _pair(
        c, ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, A.RSA), ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 2048))
    for curve in (enums.RecommendedCurve.P_224, enums.RecommendedCurve.P_256, enums.RecommendedCurve.P_384,
                  enums.RecommendedCurve.SECP256K1):
        objs[f"ec-{curve.name}-private"], objs[f"ec-{curve.name}-public"] = _pair(
            c, ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, A.EC), ttlv.enum(T.RECOMMENDED_CURVE, curve))
    objs["ed25519-private"], objs["ed25519-public"] = _pair(c, ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, A.ED25519))
    objs["secret-created"] = _uid(c.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                                                          _attrs(V21, ("Cryptographic Usage Mask", ttlv.integer(
                                                              T.CRYPTOGRAPHIC_USAGE_MASK, M.DERIVE_KEY.value)))]))
    objs["secret-password"] = _uid(c.ok(Operation.REGISTER, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
        _attrs(V21, ("Cryptographic Usage Mask", ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, M.DERIVE_KEY.value))),
        ttlv.struct_(T.SECRET_DATA, [ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                                     ttlv.struct_(T.KEY_BLOCK, [
                                         ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                                         ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"hunter2")])])])]))
    objs["opaque"] = _uid(c.ok(Operation.REGISTER, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.OPAQUE_DATA), _attrs(V21),
        ttlv.struct_(T.OPAQUE_OBJECT, [ttlv.enum(T.OPAQUE_DATA_TYPE, 0x80000001),
                                       ttlv.bytes_(T.OPAQUE_DATA_VALUE, b"opaque")])]))
    objs["pgp"] = _uid(c.ok(Operation.REGISTER, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.PGP_KEY), _attrs(V21),
        ttlv.struct_(T.PGP_KEY, [ttlv.integer(T.PGP_KEY_VERSION, 4), ttlv.struct_(T.KEY_BLOCK, [
            ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
            ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"pgp key bytes")])])])]))  # 1.2 object type
    objs["certificate"] = _uid(c.ok(Operation.REGISTER, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.CERTIFICATE), _attrs(V21),
        ttlv.struct_(T.CERTIFICATE, [ttlv.enum(T.CERTIFICATE_TYPE, enums.CertificateType.X_509),
                                     ttlv.bytes_(T.CERTIFICATE_VALUE, _certificate())])]))
    source = _symmetric(c, A.AES, 256, M.ENCRYPT.value | M.DECRYPT.value)
    parts = c.ok(Operation.CREATE_SPLIT_KEY, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), uid_(source), ttlv.integer(T.SPLIT_KEY_PARTS, 3),
        ttlv.integer(T.SPLIT_KEY_THRESHOLD, 2),
        ttlv.enum(T.SPLIT_KEY_METHOD, enums.SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_8),  # 1.2 method
        ttlv.struct_(T.ATTRIBUTES, [])]).all(T.UNIQUE_IDENTIFIER.value)
    objs["split-source"], objs["split-part"] = source, parts[0].value  # type: ignore[assignment]
    # Life-cycle states.
    objs["compromised"] = _symmetric(c, A.AES, 256, M.ENCRYPT.value,
                                     ("Activation Date", ttlv.date_time(T.ACTIVATION_DATE, now - 60)))
    _revoke(c, objs["compromised"], enums.RevocationReasonCode.KEY_COMPROMISE)
    objs["deactivated"] = _symmetric(c, A.AES, 256, M.ENCRYPT.value,
                                     ("Activation Date", ttlv.date_time(T.ACTIVATION_DATE, now - 60)))
    _revoke(c, objs["deactivated"], enums.RevocationReasonCode.CESSATION_OF_OPERATION)
    objs["destroyed"] = _symmetric(c, A.AES, 256, M.ENCRYPT.value)
    c.ok(Operation.DESTROY, [uid_(objs["destroyed"])])
    objs["destroyed-compromised"] = _symmetric(c, A.AES, 256, M.ENCRYPT.value)
    c.ok(Operation.DESTROY, [uid_(objs["destroyed-compromised"])])
    _revoke(c, objs["destroyed-compromised"], enums.RevocationReasonCode.KEY_COMPROMISE)
    # Links of every generation: Parent/Child (1.2), PKCS#12 Certificate (1.4), Wrapping Key (2.0).
    _link(c, objs["aes-plain"], enums.LinkType.WRAPPING_KEY_LINK, objs["aes"])
    _link(c, objs["aes"], enums.LinkType.CHILD_LINK, objs["aes-plain"])
    _link(c, objs["rsa-private"], enums.LinkType.PKCS12_CERTIFICATE_LINK, objs["certificate"])
    return objs


# -- what every version's client does ---------------------------------------------------------------------
def _everything(c: Client, version: Version, objs: dict[str, str]) -> dict[str, Item]:
    """Drives the operations over every object at ``version``; returns each Get's batch item."""
    gets: dict[str, Item] = {}
    for what, uid in objs.items():
        gets[what] = c.call(Operation.GET, [uid_(uid)], version)
        c.ok(Operation.GET_ATTRIBUTES, [uid_(uid)], version)  # all attributes: never refused
        c.ok(Operation.GET_ATTRIBUTE_LIST, [uid_(uid)], version)
        names = ["State", "Cryptographic Algorithm", "Link", "Name", "Cryptographic Usage Mask"]
        if version >= (2, 0):
            c.ok(Operation.GET_ATTRIBUTES, [uid_(uid), *(wire.reference_v2(n) for n in names)], version)
        else:
            c.ok(Operation.GET_ATTRIBUTES, [uid_(uid), *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names)], version)
        c.call(Operation.CHECK, [uid_(uid)], version)
        c.call(Operation.OBTAIN_LEASE, [uid_(uid)], version)
        if what in ("rsa-private", "ec-SECP256K1-private"):  # the formats a client may ask for
            for fmt in enums.KeyFormatType:
                c.call(Operation.GET, [uid_(uid), ttlv.enum(T.KEY_FORMAT_TYPE, fmt)], version)
    c.ok(Operation.LOCATE, [], version)
    c.ok(Operation.LOCATE, [ttlv.integer(T.MAXIMUM_ITEMS, 5), ttlv.integer(T.OFFSET_ITEMS, 1)], version)
    for function in QueryFunction:
        if versions.query_function_in(function.value, version):
            c.ok(Operation.QUERY, [ttlv.enum(T.QUERY_FUNCTION, function)], version)
    c.call(Operation.DISCOVER_VERSIONS, [], version)
    # What a client of this version makes itself: its own answers carry its own attributes.
    made = c.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), _attrs(version,
        ("Cryptographic Algorithm", ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, A.AES)),
        ("Cryptographic Length", ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)),
        ("Cryptographic Usage Mask", ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, M.ENCRYPT.value | M.DECRYPT.value)))],
        version)
    c.ok(Operation.GET_ATTRIBUTES, [uid_(_uid(made))], version)
    c.ok(Operation.ACTIVATE, [uid_(_uid(made))], version)
    if version >= (1, 2):
        c.call(Operation.ENCRYPT, [uid_(objs["aes"]), ttlv.bytes_(T.DATA, b"gated")], version)
        c.call(Operation.RNG_RETRIEVE, [ttlv.integer(T.DATA_LENGTH, 16)], version)
    return gets


def _status(bi: Item) -> tuple[int, int | None]:
    return bi.value_of(T.RESULT_STATUS.value), bi.value_of(T.RESULT_REASON.value)  # type: ignore[return-value]


@pytest.mark.parametrize("version", ALL)
def test_every_response_holds_only_the_versions_tags_and_values(
        client: Client, population: dict[str, str], version: Version) -> None:
    client.problems.clear()
    gets = _everything(client, version, population)
    assert client.problems == [], "\n".join(client.problems[:40])

    ok = ResultStatus.SUCCESS.value
    # Objects every version can express are answered...
    for what in ("aes-plain", "rsa-private", "rsa-public", "secret-password", "certificate"):
        assert _status(gets[what])[0] == ok, (what, gets[what].value_of(T.RESULT_MESSAGE.value))
    # ...those it cannot are refused by name, not half-answered.
    cannot = {"ed25519-private": (2, 0), "ed25519-public": (2, 0), "pgp": (1, 2), "chacha20": (1, 4),
              "hmac-sha3": (1, 4), "ec-P_256-private": (1, 2)}
    for what, since in cannot.items():
        status, reason = _status(gets[what])
        if version >= since:
            assert status == ok, (what, version, gets[what].value_of(T.RESULT_MESSAGE.value))
        else:
            refused = (ResultStatus.OPERATION_FAILED.value, ResultReason.FEATURE_NOT_SUPPORTED.value)
            assert (status, reason) == refused, (
                what, version, gets[what].value_of(T.RESULT_MESSAGE.value))
            assert f"KMIP {version[0]}.{version[1]}" in str(gets[what].value_of(T.RESULT_MESSAGE.value))


def test_the_population_really_crosses_the_lines(client: Client, population: dict[str, str]) -> None:
    """Control: what a 2.1 client reads back holds values each earlier version lacks, so the
    per-version runs above had something to leave out."""
    client.seen.clear()
    _everything(client, V21, population)
    # (2.1 adds nothing the server emits to 2.0: the 2.0 run checks 2.0's removals instead.)
    for version in [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]:
        would = [p for _, data in client.seen for p in violations(data, version)]
        assert would, f"nothing a 2.1 client reads would be foreign to KMIP {version}"
    at_10 = "\n".join(p for _, data in client.seen for p in violations(data, (1, 0)))
    for needle in ("CRYPTOGRAPHIC_ALGORITHM value", "RECOMMENDED_CURVE value", "LINK_TYPE value",
                   "HASHING_ALGORITHM value", "OBJECT_TYPE value", "CRYPTOGRAPHIC_USAGE_MASK bits",
                   "tag 0x", "ALTERNATIVE_NAME_TYPE value", "BLOCK_CIPHER_MODE value", "KEY_FORMAT_TYPE value",
                   "SPLIT_KEY_METHOD value"):
        assert needle in at_10, needle


def test_the_checker_catches_a_planted_violation(client: Client, population: dict[str, str]) -> None:
    client.seen.clear()
    client.ok(Operation.GET_ATTRIBUTES, [uid_(population["aes-plain"]), ttlv.text(T.ATTRIBUTE_NAME, "State")], (1, 0))
    bi_bytes = client.seen[-1][1]
    assert violations(bi_bytes, (1, 0)) == []
    message = ttlv.decode(bi_bytes)
    payload = message.all(T.BATCH_ITEM.value)[0].get(T.RESPONSE_PAYLOAD.value)
    assert payload is not None
    # Plant a 2.0 algorithm in a 1.0 attribute, a 2.0 tag, and an attribute inside a Key Value.
    payload.value.append(ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Algorithm"),
                                                     ttlv.enum(T.ATTRIBUTE_VALUE, A.ED25519)]))  # type: ignore[union-attr]
    found = violations(ttlv.encode(message), (1, 0))
    assert len(found) == 1 and "CRYPTOGRAPHIC_ALGORITHM value 0x37" in found[0], found
    payload.value.append(ttlv.struct_(T.ATTRIBUTES, []))  # type: ignore[union-attr]
    payload.value.append(ttlv.struct_(T.KEY_VALUE, [ttlv.struct_(T.ATTRIBUTE, [  # type: ignore[union-attr]
        ttlv.text(T.ATTRIBUTE_NAME, "State"), ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.ACTIVE)])]))
    found = violations(ttlv.encode(message), (1, 0))
    assert any("tag 0x420125" in f for f in found) and any("inside a 1.x Key Value" in f for f in found), found
    assert violations(ttlv.encode(message), (1, 0)) != violations(ttlv.encode(message), (2, 1))


@pytest.mark.parametrize("version", [(1, 0), (1, 4), (2, 0)])
def test_an_inexpressible_attribute_reads_as_absent(client: Client, population: dict[str, str],
                                                    version: Version) -> None:
    """A sloppy 1.x client asks by name for what its version cannot express: the attribute is
    absent, the rest of the answer is there (and the same key's algorithm is there at 2.0)."""
    uid = population["ed25519-private"]
    names = ["Cryptographic Algorithm", "State", "Object Type"]
    if version >= (2, 0):
        out = client.ok(Operation.GET_ATTRIBUTES, [uid_(uid), *(wire.reference_v2(n) for n in names)], version)
        attrs = out.get(T.ATTRIBUTES.value)
        assert attrs is not None and attrs.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) == A.ED25519.value
        return
    out = client.ok(Operation.GET_ATTRIBUTES, [uid_(uid), *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names)], version)
    got = [a.value_of(T.ATTRIBUTE_NAME.value) for a in out.all(T.ATTRIBUTE.value)]
    assert got == ["State", "Object Type"]
