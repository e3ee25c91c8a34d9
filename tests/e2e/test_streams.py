"""Multi-part (streaming) operations against real servers (issue 13): a stream lives in the
database, so it continues on a new connection and on another server process sharing the database
(a second node, ``serve --port``); it stays bound to the identity that opened it, its quotas hold
across parallel connections to both processes, its input is never in the database in the clear,
a restart keeps it and an idle one expires. Intermediate parts answer what KMIP 1.3+ says: no
Data / Signature Data / MAC Data before there is some, Validity Indicator Unknown until the end.
SQLite and PostgreSQL; every server runs two workers."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kmip.core import enums
from kmip.core.enums import CryptographicAlgorithm as A
from kmip.core.enums import CryptographicUsageMask as U
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.operations.stream_seal import derive
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server, free_port, start_node

pytestmark = pytest.mark.e2e

V14, V21 = (1, 4), (2, 1)
VERSIONS = pytest.mark.parametrize("version", [V14, V21], ids=["1.4", "2.1"])
INIT, FINAL = ttlv.boolean(T.INIT_INDICATOR, True), ttlv.boolean(T.FINAL_INDICATOR, True)
PER_IDENTITY, STREAM_BYTES, IDENTITY_BYTES = 4, 1000, 2500
QUOTAS = {"max_streams_per_identity": PER_IDENTITY, "max_stream_bytes": STREAM_BYTES,
          "max_stream_bytes_per_identity": IDENTITY_BYTES}
USERS = ("mallory", "bob", "carol", "dave")


class Conn:
    """One TLS connection, as ``name``, to the server listening on ``port``."""

    def __init__(self, instance: Instance, port: int, name: str = "admin") -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", port, ctx, timeout=120)

    def call(self, op: Operation, *fields: Item | None, version: tuple[int, int] = V14) -> Item:
        payload = ttlv.struct_(T.REQUEST_PAYLOAD, [f for f in fields if f is not None])
        return self.raw.call(request([(op.value, payload)], version=version)).all(T.BATCH_ITEM.value)[0]

    def ok(self, op: Operation, *fields: Item | None, version: tuple[int, int] = V14) -> Item:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]

    def fails(self, reason: ResultReason, op: Operation, *fields: Item | None, version: tuple[int, int] = V14) -> str:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value
        assert bi.value_of(T.RESULT_REASON.value) == reason.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.value_of(T.RESULT_MESSAGE.value) or ""  # type: ignore[return-value]

    def close(self) -> None:
        self.raw.close()


def a1(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def data(value: bytes, tag: T = T.DATA) -> Item:
    return ttlv.bytes_(tag, value)


def corr(payload: Item) -> Item:
    value = payload.value_of(T.CORRELATION_VALUE.value)
    assert isinstance(value, bytes) and len(value) >= 16
    return data(value, T.CORRELATION_VALUE)


def params(**fields: int) -> Item:
    return ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T[k.upper()], v) for k, v in fields.items()])


def _template(tag: T, alg: A, length: int, mask: int, name: str | None = None) -> Item:
    attrs = [a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, alg)),
             a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, length)),
             a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, mask))]
    if name is not None:
        attrs.append(a1("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
            ttlv.text(T.NAME_VALUE, name), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])))
    return ttlv.struct_(tag, attrs)


def create_key(c: Conn, alg: A = A.AES, length: int = 128, mask: int = U.ENCRYPT.value | U.DECRYPT.value,
               name: str | None = None) -> str:
    out = c.ok(Operation.CREATE, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
               _template(T.TEMPLATE_ATTRIBUTE, alg, length, mask, name))
    uid: str = out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
    c.ok(Operation.ACTIVATE, uid_(uid))
    return uid


def create_rsa_pair(c: Conn) -> tuple[str, str]:
    out = c.ok(Operation.CREATE_KEY_PAIR,
               ttlv.struct_(T.COMMON_TEMPLATE_ATTRIBUTE, [
                   a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, A.RSA)),
                   a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 2048))]),
               ttlv.struct_(T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE, [
                   a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, U.SIGN.value))]),
               ttlv.struct_(T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE, [
                   a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, U.VERIFY.value))]))
    priv: str = out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
    pub: str = out.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
    for uid in (priv, pub):
        c.ok(Operation.ACTIVATE, uid_(uid))
    return priv, pub


SHA256 = params(hashing_algorithm=enums.HashingAlgorithm.SHA_256)
CBC = params(block_cipher_mode=enums.BlockCipherMode.CBC, padding_method=enums.PaddingMethod.PKCS5)
IV = bytes(range(16))


def _db_engine(instance: Instance) -> sa.Engine:
    from kmip_bridge.store.store import normalise_url

    return sa.create_engine(normalise_url(instance.database_url))


def stream_rows(instance: Instance, sid: str, table: str = "streams") -> int:
    """Rows of one stream in ``table`` (streams: its header, stream_chunks: its input), read
    straight from the database."""
    engine = _db_engine(instance)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE id = :id"), {"id": sid}).scalar_one())
    finally:
        engine.dispose()


def database_holds(instance: Instance, marker: bytes) -> bool:
    """Whether ``marker`` (or its hex form) occurs anywhere in the database: every byte of the
    SQLite file and its write-ahead log, or every column of every row of every table on PostgreSQL."""
    forms = (marker, marker.hex().encode())
    url = instance.database_url
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
        return any(f in p.read_bytes().lower() for p in files for f in forms)
    engine = _db_engine(instance)
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # table names from the catalog
                    for value in row:
                        raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                        if any(f in raw.lower() for f in forms):
                            return True
    finally:
        engine.dispose()
    return False


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    for name in USERS:
        instance.client(name)
    srv = instance.start(workers=2, **QUOTAS)
    yield srv
    assert srv.stop() == 0, "".join(srv.log[-20:])


@pytest.fixture(scope="module")
def node2(instance: Instance, server: Server) -> Iterator[Server]:
    """A second server process on the same instance and database (its own port and workers)."""
    srv = start_node(instance, free_port())
    yield srv
    assert srv.stop() == 0, "".join(srv.log[-20:])


@pytest.fixture
def admin(instance: Instance, server: Server) -> Iterator[Conn]:
    c = Conn(instance, server.port)
    yield c
    c.close()


# -- 1. a stream outlives its connection and its process ------------------------------------------
@VERSIONS
def test_a_stream_continues_on_a_new_connection_and_on_another_node(
    instance: Instance, server: Server, node2: Server, admin: Conn, version: tuple[int, int]
) -> None:
    assert node2.proc.pid != server.proc.pid
    uid = create_key(admin)
    parts = [b"first part, 26 bytes long", b"a middle part" * 3, b"the last one"]
    one_shot = admin.ok(Operation.ENCRYPT, uid_(uid), CBC, data(b"".join(parts)), data(IV, T.IV_COUNTER_NONCE),
                        version=version).value_of(T.DATA.value)
    # Init on one connection, closed; the middle part on a new connection; the end on the other node.
    first_conn = Conn(instance, server.port)
    out = first_conn.ok(Operation.ENCRYPT, uid_(uid), CBC, data(parts[0]), data(IV, T.IV_COUNTER_NONCE), INIT,
                        version=version)
    first_conn.close()
    got = out.value_of(T.DATA.value) or b""
    second = Conn(instance, server.port)
    out = second.ok(Operation.ENCRYPT, data(parts[1]), corr(out), version=version)
    second.close()
    got += out.value_of(T.DATA.value) or b""
    other = Conn(instance, node2.port)
    last = other.ok(Operation.ENCRYPT, data(parts[2]), corr(out), FINAL, version=version)
    got += last.value_of(T.DATA.value)  # type: ignore[operator]
    assert got == one_shot
    # Over: neither process knows it any more.
    reason = ResultReason.INVALID_CORRELATION_VALUE if version >= (2, 0) else ResultReason.INVALID_FIELD
    other.fails(reason, Operation.ENCRYPT, data(b"x"), corr(out), version=version)
    admin.fails(reason, Operation.ENCRYPT, data(b"x"), corr(out), version=version)
    other.close()
    # Decrypt the other way round: started on node 2, finished here.
    back = Conn(instance, node2.port)
    out = back.ok(Operation.DECRYPT, uid_(uid), CBC, data(one_shot[:20]), data(IV, T.IV_COUNTER_NONCE), INIT,
                  version=version)
    back.close()
    plain = out.value_of(T.DATA.value) or b""
    last = admin.ok(Operation.DECRYPT, data(one_shot[20:]), corr(out), FINAL, version=version)
    assert plain + last.value_of(T.DATA.value) == b"".join(parts)  # type: ignore[operator]


def test_a_long_stream_alternating_between_processes_loses_nothing(
    instance: Instance, server: Server, node2: Server
) -> None:
    """More parts than a stream keeps chunks (operations/streams.MAX_CHUNKS: they get merged),
    each on the other process than the one before."""
    from kmip_bridge.operations.streams import MAX_CHUNKS

    conns = [Conn(instance, server.port), Conn(instance, node2.port)]
    pieces = [f"{i};".encode() * (i % 3) for i in range(2 * MAX_CHUNKS + 5)]  # some empty; < max_stream_bytes
    out = conns[0].ok(Operation.HASH, SHA256, data(pieces[0]), INIT, version=V21)
    for i, piece in enumerate(pieces[1:], start=1):
        out = conns[i % 2].ok(Operation.HASH, data(piece), corr(out), version=V21)
    last = conns[0].ok(Operation.HASH, corr(out), FINAL, version=V21)
    assert last.value_of(T.DATA.value) == hashlib.sha256(b"".join(pieces)).digest()
    for c in conns:
        c.close()


# -- 2. what each part answers --------------------------------------------------------------------
@VERSIONS
def test_intermediate_parts_carry_no_output_until_there_is_some(
    instance: Instance, server: Server, node2: Server, admin: Conn, version: tuple[int, int]
) -> None:
    """KMIP 1.3+ responses: Unique Identifier always, Correlation Value while the stream goes on,
    Data / Signature Data / MAC Data only with output, the Validity Indicator Unknown until the
    final part, the Authenticated Encryption Tag only at the end."""
    def no_output(payload: Item, *tags: T) -> None:
        assert payload.value_of(T.UNIQUE_IDENTIFIER.value)
        for tag in tags:
            assert payload.get(tag.value) is None, f"{tag.name} in an intermediate part"

    # Encrypt/Decrypt (CBC): 5 bytes are less than a block, so there is nothing to return yet.
    uid = create_key(admin)
    out = admin.ok(Operation.ENCRYPT, uid_(uid), CBC, data(b"12345"), data(IV, T.IV_COUNTER_NONCE), INIT,
                   version=version)
    no_output(out, T.DATA)
    mid = admin.ok(Operation.ENCRYPT, data(b"67890"), corr(out), version=version)
    no_output(mid, T.DATA)
    last = admin.ok(Operation.ENCRYPT, data(b"abc"), corr(mid), FINAL, version=version)
    assert last.get(T.CORRELATION_VALUE.value) is None
    ct = last.value_of(T.DATA.value)
    assert ct == admin.ok(Operation.ENCRYPT, uid_(uid), CBC, data(b"1234567890abc"), data(IV, T.IV_COUNTER_NONCE),
                          version=version).value_of(T.DATA.value)
    out = admin.ok(Operation.DECRYPT, uid_(uid), CBC, data(ct[:7]), data(IV, T.IV_COUNTER_NONCE), INIT,  # type: ignore[index]
                   version=version)
    no_output(out, T.DATA)
    last = admin.ok(Operation.DECRYPT, data(ct[7:]), corr(out), FINAL, version=version)  # type: ignore[index]
    assert last.value_of(T.DATA.value) == b"1234567890abc"
    # A one-part request always carries Data, even an empty one (KMIP 1.0-1.2 require it).
    ctr = params(block_cipher_mode=enums.BlockCipherMode.CTR)
    empty = admin.ok(Operation.ENCRYPT, uid_(uid), ctr, data(b""), data(IV, T.IV_COUNTER_NONCE), version=version)
    assert empty.value_of(T.DATA.value) == b""
    # GCM (1.4+): the tag only with the final part.
    gcm = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.GCM),
                                                    ttlv.integer(T.TAG_LENGTH, 16)])
    out = admin.ok(Operation.ENCRYPT, uid_(uid), gcm, data(b"gcm part one"), data(IV[:12], T.IV_COUNTER_NONCE),
                   INIT, version=version)
    assert out.get(T.AUTHENTICATED_ENCRYPTION_TAG.value) is None
    last = admin.ok(Operation.ENCRYPT, data(b" and two"), corr(out), FINAL, version=version)
    assert len(last.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value)) == 16  # type: ignore[arg-type]
    # Sign / Signature Verify, continued on the other node.
    priv, pub = create_rsa_pair(admin)
    pss = params(padding_method=enums.PaddingMethod.PSS, hashing_algorithm=enums.HashingAlgorithm.SHA_256,
                 cryptographic_algorithm=A.RSA)
    elsewhere = Conn(instance, node2.port)
    out = admin.ok(Operation.SIGN, uid_(priv), pss, data(b"message "), INIT, version=version)
    no_output(out, T.SIGNATURE_DATA)
    last = elsewhere.ok(Operation.SIGN, data(b"in two parts"), corr(out), FINAL, version=version)
    signature = last.value_of(T.SIGNATURE_DATA.value)
    assert isinstance(signature, bytes) and last.get(T.CORRELATION_VALUE.value) is None
    valid = admin.ok(Operation.SIGNATURE_VERIFY, uid_(pub), pss, data(b"message in two parts"),
                     data(signature, T.SIGNATURE_DATA), version=version)
    assert valid.value_of(T.VALIDITY_INDICATOR.value) == enums.ValidityIndicator.VALID.value
    out = elsewhere.ok(Operation.SIGNATURE_VERIFY, uid_(pub), pss, data(b"message "), INIT, version=version)
    assert out.value_of(T.VALIDITY_INDICATOR.value) == enums.ValidityIndicator.UNKNOWN.value
    no_output(out, T.DATA)
    last = admin.ok(Operation.SIGNATURE_VERIFY, data(b"in two parts"), data(signature, T.SIGNATURE_DATA),
                    corr(out), FINAL, version=version)
    assert last.value_of(T.VALIDITY_INDICATOR.value) == enums.ValidityIndicator.VALID.value
    # MAC / MAC Verify.
    mac_key = create_key(admin, A.HMAC_SHA256, 256, U.MAC_GENERATE.value | U.MAC_VERIFY.value)
    whole = admin.ok(Operation.MAC, uid_(mac_key), data(b"mac me, please"), version=version).value_of(T.MAC_DATA.value)
    out = admin.ok(Operation.MAC, uid_(mac_key), data(b"mac me"), INIT, version=version)
    no_output(out, T.MAC_DATA)
    last = elsewhere.ok(Operation.MAC, data(b", please"), corr(out), FINAL, version=version)
    assert last.value_of(T.MAC_DATA.value) == whole
    out = elsewhere.ok(Operation.MAC_VERIFY, uid_(mac_key), data(b"mac me"), INIT, version=version)
    assert out.value_of(T.VALIDITY_INDICATOR.value) == enums.ValidityIndicator.UNKNOWN.value
    last = admin.ok(Operation.MAC_VERIFY, data(b", please"), data(whole, T.MAC_DATA), corr(out), FINAL,  # type: ignore[arg-type]
                    version=version)
    assert last.value_of(T.VALIDITY_INDICATOR.value) == enums.ValidityIndicator.VALID.value
    elsewhere.close()


# -- 3. bound to its owner ------------------------------------------------------------------------
@VERSIONS
def test_another_identity_cannot_continue_or_end_a_stream(
    instance: Instance, server: Server, node2: Server, version: tuple[int, int]
) -> None:
    reason = ResultReason.INVALID_CORRELATION_VALUE if version >= (2, 0) else ResultReason.INVALID_FIELD
    mallory, bob = Conn(instance, server.port, "mallory"), Conn(instance, node2.port, "bob")
    out = mallory.ok(Operation.HASH, SHA256, data(b"mallory's "), INIT, version=version)
    stolen = corr(out)
    # Bob has the value (it leaked): he can neither add to the stream, nor end it, nor learn it exists.
    msg = bob.fails(reason, Operation.HASH, data(b"bob's"), stolen, version=version)
    bob.fails(reason, Operation.HASH, stolen, FINAL, version=version)
    # ... and a guessed value, of the right or a wrong length, gets the very same answer.
    assert bob.fails(reason, Operation.HASH, data(secrets.token_bytes(16), T.CORRELATION_VALUE), FINAL,
                     version=version) == msg
    assert bob.fails(reason, Operation.HASH, data(b"\x01", T.CORRELATION_VALUE), FINAL, version=version) == msg
    # The same identity, another operation: refused too.
    mallory.fails(reason, Operation.ENCRYPT, data(b"x"), stolen, version=version)
    # The owner's stream is intact, on any connection.
    again = Conn(instance, node2.port, "mallory")
    last = again.ok(Operation.HASH, data(b"stream"), stolen, FINAL, version=version)
    assert last.value_of(T.DATA.value) == hashlib.sha256(b"mallory's stream").digest()
    for c in (mallory, bob, again):
        c.close()


def test_streaming_fields_before_1_3_are_refused_and_start_nothing(
    instance: Instance, server: Server, admin: Conn
) -> None:
    """Init Indicator, Correlation Value and Final Indicator are KMIP 1.3 fields: a 1.2 request
    carrying any of them is Invalid Field, not a half-understood one-shot or a stream."""
    def all_streams() -> int:
        engine = _db_engine(instance)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM streams")).scalar_one())
        finally:
            engine.dispose()

    before = all_streams()
    for fields in ((INIT,), (FINAL,), (data(secrets.token_bytes(16), T.CORRELATION_VALUE),)):
        msg = admin.fails(ResultReason.INVALID_FIELD, Operation.HASH, SHA256, data(b"x"), *fields, version=(1, 2))
        assert "1.3" in msg
    assert all_streams() == before
    # The same Hash without them is served at 1.2, and with them at 1.3.
    one_shot = admin.ok(Operation.HASH, SHA256, data(b"x"), version=(1, 2))
    assert one_shot.value_of(T.DATA.value) == hashlib.sha256(b"x").digest()
    assert corr(admin.ok(Operation.HASH, SHA256, data(b"x"), INIT, version=(1, 3))) is not None


# -- 4. quotas hold across connections and processes ----------------------------------------------
def _parallel_inits(instance: Instance, ports: list[int], name: str, size: int, n: int) -> list[Item]:
    """``n`` Hash Init parts of ``size`` bytes, as ``name``, each on its own connection (spread
    over ``ports``), released together; their batch items."""
    conns = [Conn(instance, ports[i % len(ports)], name) for i in range(n)]
    barrier, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = conns[i].call(Operation.HASH, SHA256, data(b"q" * size), INIT, version=V21)  # type: ignore[call-overload]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return results  # type: ignore[return-value]


def _outcomes(items: list[Item]) -> tuple[list[Item], list[int]]:
    ok = [bi for bi in items if bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value]
    refused = [bi.value_of(T.RESULT_REASON.value) for bi in items if bi not in ok]
    return ok, refused  # type: ignore[return-value]


def test_quotas_hold_for_parallel_connections_to_two_processes(
    instance: Instance, server: Server, node2: Server
) -> None:
    ports = [server.port, node2.port]
    # Count: 12 Init parts at once, on both processes (4 workers): exactly PER_IDENTITY open.
    ok, refused = _outcomes(_parallel_inits(instance, ports, "carol", 1, 12))
    assert len(ok) == PER_IDENTITY and refused == [ResultReason.SERVER_LIMIT_EXCEEDED.value] * (12 - PER_IDENTITY)
    carol = Conn(instance, node2.port, "carol")
    carol.fails(ResultReason.SERVER_LIMIT_EXCEEDED, Operation.HASH, SHA256, data(b"q"), INIT, version=V21)
    for bi in ok:  # finishing them frees the places
        carol.ok(Operation.HASH, corr(bi.get(T.RESPONSE_PAYLOAD.value)), FINAL, version=V21)  # type: ignore[arg-type]
    carol.ok(Operation.HASH, corr(carol.ok(Operation.HASH, SHA256, data(b"q"), INIT, version=V21)), FINAL,
             version=V21)
    carol.close()
    # Bytes: 8 streams of STREAM_BYTES at once; the identity may buffer IDENTITY_BYTES in all.
    ok, refused = _outcomes(_parallel_inits(instance, ports, "dave", STREAM_BYTES, 8))
    assert len(ok) == IDENTITY_BYTES // STREAM_BYTES
    assert refused == [ResultReason.SERVER_LIMIT_EXCEEDED.value] * (8 - len(ok))
    # One stream past its own limit: that part is refused, the stream stays as it was before it.
    dave = Conn(instance, server.port, "dave")
    held = corr(ok[0].get(T.RESPONSE_PAYLOAD.value))  # type: ignore[arg-type]
    msg = dave.fails(ResultReason.SERVER_LIMIT_EXCEEDED, Operation.HASH, data(b"z"), held, version=V21)
    assert "max_stream_bytes" in msg
    last = dave.ok(Operation.HASH, held, FINAL, version=V21)
    assert last.value_of(T.DATA.value) == hashlib.sha256(b"q" * STREAM_BYTES).digest()
    dave.ok(Operation.HASH, corr(ok[1].get(T.RESPONSE_PAYLOAD.value)), FINAL, version=V21)  # type: ignore[arg-type]
    dave.close()


def test_two_parallel_parts_of_one_stream_cannot_both_be_kept(
    instance: Instance, server: Server, node2: Server
) -> None:
    """A hostile client sends the same next part to both processes at once, hoping to fork the
    stream: at most one part is kept; the final result has the input of the kept parts only."""
    admin = Conn(instance, server.port)
    value = corr(admin.ok(Operation.HASH, SHA256, data(b"a"), INIT, version=V21))
    conns = [Conn(instance, port) for port in (server.port, node2.port) for _ in range(3)]
    barrier, results = threading.Barrier(len(conns)), [None] * len(conns)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = conns[i].call(Operation.HASH, data(b"b"), value, version=V21)  # type: ignore[call-overload]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok, refused = _outcomes(results)  # type: ignore[arg-type]
    assert len(ok) >= 1 and set(refused) <= {ResultReason.INVALID_CORRELATION_VALUE.value}
    # Every part that succeeded was kept, each after the one before it (a part that read the
    # stream before a concurrent one was stored is refused): the input is "a" then one "b" each.
    last = admin.ok(Operation.HASH, value, FINAL, version=V21)
    assert last.value_of(T.DATA.value) == hashlib.sha256(b"a" + b"b" * len(ok)).digest()
    for c in [admin, *conns]:
        c.close()


# -- 5. the database never holds a stream's input in the clear ------------------------------------
def test_no_plaintext_of_a_streamed_input_in_the_database(instance: Instance, server: Server, admin: Conn) -> None:
    marker = b"stream-plaintext-" + secrets.token_hex(8).encode()  # lower case: the scan folds case
    uid = create_key(admin)
    out = admin.ok(Operation.ENCRYPT, uid_(uid), CBC, data(marker + b"-first"), data(IV, T.IV_COUNTER_NONCE), INIT)
    out = admin.ok(Operation.ENCRYPT, data(marker + b"-second"), corr(out))
    sid, _ = derive(out.value_of(T.CORRELATION_VALUE.value))  # type: ignore[arg-type]
    # The stream is in the database, its header and its two parts' input.
    assert (stream_rows(instance, sid), stream_rows(instance, sid, "stream_chunks")) == (1, 2)
    assert not database_holds(instance, marker)
    assert not database_holds(instance, out.value_of(T.CORRELATION_VALUE.value))  # type: ignore[arg-type]
    # Control: the scan does see what the database holds in the clear (a Name attribute).
    create_key(admin, name=marker.decode() + "-name")
    assert database_holds(instance, marker)
    admin.ok(Operation.ENCRYPT, corr(out), FINAL)
    # The final part deletes the stream, input and all.
    assert (stream_rows(instance, sid), stream_rows(instance, sid, "stream_chunks")) == (0, 0)


# -- 6. restart and expiry (last: restarts the module's server) -----------------------------------
def test_a_restart_keeps_streams_and_idle_streams_expire(instance: Instance, server: Server) -> None:
    c = Conn(instance, server.port)
    kept = corr(c.ok(Operation.HASH, SHA256, data(b"before the restart, "), INIT, version=V21))
    c.close()
    assert server.stop() == 0
    restarted = instance.start(workers=2, stream_idle_timeout=3, **QUOTAS)
    try:
        c = Conn(instance, restarted.port)
        last = c.ok(Operation.HASH, data(b"after it"), kept, FINAL, version=V21)
        assert last.value_of(T.DATA.value) == hashlib.sha256(b"before the restart, after it").digest()
        # Idle for longer than server.stream_idle_timeout (3 s here): gone, though its row remains
        # until the next stream write cleans it.
        out = c.ok(Operation.HASH, SHA256, data(b"idle"), INIT, version=V21)
        sid, _ = derive(out.value_of(T.CORRELATION_VALUE.value))  # type: ignore[arg-type]
        time.sleep(4)
        assert stream_rows(instance, sid) == 1
        c.fails(ResultReason.INVALID_CORRELATION_VALUE, Operation.HASH, data(b"late"), corr(out), version=V21)
        c.ok(Operation.HASH, corr(c.ok(Operation.HASH, SHA256, data(b"x"), INIT, version=V21)), FINAL, version=V21)
        assert (stream_rows(instance, sid), stream_rows(instance, sid, "stream_chunks")) == (0, 0)
        # Control: a stream used within the timeout lives on, part after part.
        out = c.ok(Operation.HASH, SHA256, data(b"a"), INIT, version=V21)
        for _ in range(3):
            time.sleep(1.5)
            out = c.ok(Operation.HASH, data(b"a"), corr(out), version=V21)
        last = c.ok(Operation.HASH, corr(out), FINAL, version=V21)
        assert last.value_of(T.DATA.value) == hashlib.sha256(b"aaaa").digest()
        c.close()
    finally:
        assert restarted.stop() == 0, "".join(restarted.log[-20:])
