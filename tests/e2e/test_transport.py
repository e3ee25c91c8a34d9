"""Mutual TLS, framing, bad input and per-request isolation, over real sockets."""

from __future__ import annotations

import ssl
import threading

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.admin import pki
from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _ctx(instance: Instance, name: str, **kw: object) -> ssl.SSLContext:
    folder = instance.dir / "clients" / name
    return client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem", **kw)


def _connect(server: Server, instance: Instance, name: str = "admin", **kw: object) -> RawClient:
    return RawClient("127.0.0.1", server.port, _ctx(instance, name, **kw))


def _create_payload(name: str | None = None) -> Item:
    attrs = [
        ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Algorithm"),
                                   ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)]),
        ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Length"),
                                   ttlv.integer(T.ATTRIBUTE_VALUE, 256)]),
    ]
    if name:
        attrs.append(ttlv.struct_(T.ATTRIBUTE, [
            ttlv.text(T.ATTRIBUTE_NAME, "Name"),
            ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.text(T.NAME_VALUE, name),
                                             ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)]),
        ]))
    return ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs),
    ])


def _results(response: Item) -> list[Item]:
    return response.all(T.BATCH_ITEM.value)


def _status(bi: Item) -> tuple[int, int | None]:
    return bi.value_of(T.RESULT_STATUS.value), bi.value_of(T.RESULT_REASON.value)  # type: ignore[return-value]


def test_tls13_negotiated_and_tls11_refused(server: Server, instance: Instance) -> None:
    with _connect(server, instance) as c:
        assert c.sock.version() == "TLSv1.3"
    with _connect(server, instance, maximum_version=ssl.TLSVersion.TLSv1_2) as c:
        assert c.sock.version() == "TLSv1.2"
        assert "GCM" in c.sock.cipher()[0] or "CHACHA20" in c.sock.cipher()[0]
    ctx = _ctx(instance, "admin")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, OSError)):
        RawClient("127.0.0.1", server.port, ctx)


def _request_over(client: RawClient) -> Item:
    return client.call(request([(Operation.QUERY.value, None)]))


def test_client_without_certificate_is_refused(server: Server, instance: Instance) -> None:
    ctx = client_context(instance.dir / "pki" / "ca.pem", None, None)
    with pytest.raises((ssl.SSLError, OSError, ConnectionError)):
        # TLS 1.3 reports the refusal on first use rather than in the handshake.
        with RawClient("127.0.0.1", server.port, ctx) as c:
            _request_over(c)


def test_certificate_from_another_ca_is_refused(server: Server, instance: Instance, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki.make_ca(tmp_path / "evil-ca.pem", tmp_path / "evil-ca.key")
    pki.issue(tmp_path / "evil-ca.pem", tmp_path / "evil-ca.key", tmp_path / "c.pem", tmp_path / "c.key",
              "admin", server=False, groups=("admin",))
    ctx = client_context(instance.dir / "pki" / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key")
    with pytest.raises((ssl.SSLError, OSError, ConnectionError)):
        with RawClient("127.0.0.1", server.port, ctx) as c:
            _request_over(c)
    assert server.alive()


def test_certificate_without_client_auth_usage_is_refused(server: Server, instance: Instance) -> None:
    """The server's own certificate (serverAuth only) chains to the CA but is no client."""
    ctx = client_context(instance.dir / "pki" / "ca.pem", instance.dir / "pki" / "server.pem",
                         instance.dir / "pki" / "server.key")
    with pytest.raises((ssl.SSLError, OSError, ConnectionError)):
        with RawClient("127.0.0.1", server.port, ctx) as c:
            _request_over(c)
    assert server.saw("unsuitable certificate purpose")


def test_garbage_closes_connection_and_server_stays_up(server: Server, instance: Instance) -> None:
    with _connect(server, instance) as c:
        assert c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None
    with _connect(server, instance) as c:  # a structure header whose body is not TTLV
        assert c.send_raw(bytes.fromhex("4200780100000010") + b"\xff" * 16) is None
    with _connect(server, instance) as c:
        assert _status(_results(_request_over(c))[0])[0] == ResultStatus.SUCCESS.value


def test_oversized_message_is_refused_from_its_header(server: Server, instance: Instance) -> None:
    with _connect(server, instance) as c:
        # The header announces 50 MB; the server answers without waiting for the body.
        data = c.send_raw(bytes.fromhex("42007801") + (50_000_000).to_bytes(4, "big"))
        assert data is not None
        bi = _results(ttlv.decode(data))[0]
        assert _status(bi) == (ResultStatus.OPERATION_FAILED.value, ResultReason.INVALID_MESSAGE.value)
        assert "exceeds the limit" in bi.value_of(T.RESULT_MESSAGE.value)


def test_pipelined_messages_are_answered_in_order_then_garbage_closes(server: Server, instance: Instance) -> None:
    """A client that does not wait for answers: 30 Creates written in one go (the server reads
    the next message while the previous one is still being handled and answered), then bytes that
    are not TTLV. Each Create gets its own answer, in order, then the connection closes."""
    names = [f"pipelined-{i}" for i in range(30)]
    messages = b"".join(ttlv.encode(request([(Operation.CREATE.value, _create_payload(n))])) for n in names)
    garbage = bytes.fromhex("4200780100000010") + b"\xff" * 16
    with _connect(server, instance) as c:
        c.sock.sendall(messages + garbage)
        uids = []
        for _ in names:
            data = c.read_message()
            assert data is not None
            bi = _results(ttlv.decode(data))[0]
            assert _status(bi)[0] == ResultStatus.SUCCESS.value
            uids.append(bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value))  # type: ignore[union-attr]
        assert c.read_message() is None  # the garbage: closed, no answer
    assert len(set(uids)) == len(names)
    with _connect(server, instance) as c:  # each answer belongs to the message at its place
        for name, uid in zip(names, uids, strict=True):
            found = c.call(request([(Operation.LOCATE.value, ttlv.struct_(T.REQUEST_PAYLOAD, [
                ttlv.struct_(T.ATTRIBUTE, [
                    ttlv.text(T.ATTRIBUTE_NAME, "Name"),
                    ttlv.struct_(T.ATTRIBUTE_VALUE, [
                        ttlv.text(T.NAME_VALUE, name),
                        ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)]),
                ])]))]))
            payload = _results(found)[0].get(T.RESPONSE_PAYLOAD.value)
            assert payload is not None and [i.value for i in payload.all(T.UNIQUE_IDENTIFIER.value)] == [uid]


def test_wrong_batch_count_and_unknown_operation(server: Server, instance: Instance) -> None:
    msg = request([(Operation.QUERY.value, None)])
    msg.value[0].value[-1] = ttlv.integer(T.BATCH_COUNT, 3)
    with _connect(server, instance) as c:
        bi = _results(c.call(msg))[0]
        assert _status(bi) == (ResultStatus.OPERATION_FAILED.value, ResultReason.INVALID_MESSAGE.value)
        bi = _results(c.call(request([(0x7E, None)])))[0]
        assert _status(bi) == (ResultStatus.OPERATION_FAILED.value, ResultReason.OPERATION_NOT_SUPPORTED.value)
        wrong_type = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.integer(T.OBJECT_TYPE, 2)])
        bi = _results(c.call(request([(Operation.CREATE.value, wrong_type)])))[0]
        assert _status(bi)[0] == ResultStatus.OPERATION_FAILED.value


def test_id_placeholder_is_per_message(server: Server, instance: Instance) -> None:
    """Create + Activate + Get without ids resolve to the batch's own object; the next message,
    on the same or another connection, starts with no placeholder."""
    with _connect(server, instance) as c:
        resp = c.call(request([
            (Operation.CREATE.value, _create_payload()),
            (Operation.ACTIVATE.value, None),
            (Operation.GET.value, None),
        ]))
        items = _results(resp)
        assert [_status(b)[0] for b in items] == [ResultStatus.SUCCESS.value] * 3
        uid = items[0].get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)
        assert items[2].get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value) == uid
        bi = _results(c.call(request([(Operation.GET.value, None)])))[0]
        assert _status(bi) == (ResultStatus.OPERATION_FAILED.value, ResultReason.MISSING_DATA.value)


def test_batch_stops_at_first_failure_unless_continue(server: Server, instance: Instance) -> None:
    bad_get = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "no-such-object")])
    items = [(Operation.GET.value, bad_get), (Operation.QUERY.value, None)]
    with _connect(server, instance) as c:
        assert len(_results(c.call(request(items)))) == 1
        out = _results(c.call(request(items, batch_error_option=enums.BatchErrorContinuationOption.CONTINUE.value)))
        assert [_status(b)[0] for b in out] == [ResultStatus.OPERATION_FAILED.value, ResultStatus.SUCCESS.value]


def test_two_clients_interleaving_batches_stay_isolated(server: Server, instance: Instance) -> None:
    instance.client("alice")
    instance.client("bob")
    errors: list[str] = []
    uids: dict[str, list[str]] = {"alice": [], "bob": []}

    def run(name: str) -> None:
        try:
            with _connect(server, instance, name) as c:
                for _ in range(25):
                    # A batch whose second item relies on the placeholder the first one set...
                    items = _results(c.call(request([
                        (Operation.CREATE.value, _create_payload(f"{name}-key")),
                        (Operation.GET_ATTRIBUTES.value, None),
                    ])))
                    uid = items[0].get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)
                    if items[1].get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value) != uid:
                        errors.append(f"{name}: placeholder resolved to another object")
                    uids[name].append(uid)
                    # ...and a batch that has none must not inherit anyone's.
                    bi = _results(c.call(request([(Operation.GET.value, None)])))[0]
                    if _status(bi)[0] != ResultStatus.OPERATION_FAILED.value:
                        errors.append(f"{name}: Get without id succeeded")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=run, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with _connect(server, instance, "bob") as c:
        for uid in uids["alice"][:5]:
            payload = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)])
            bi = _results(c.call(request([(Operation.GET.value, payload)])))[0]
            assert _status(bi) == (ResultStatus.OPERATION_FAILED.value, ResultReason.ITEM_NOT_FOUND.value)
            assert uid not in (bi.value_of(T.RESULT_MESSAGE.value) or "")
        located = _results(c.call(request([(Operation.LOCATE.value, None)])))[0]
        seen = {u.value for u in located.get(T.RESPONSE_PAYLOAD.value).all(T.UNIQUE_IDENTIFIER.value)}
        assert seen == set(uids["bob"])


def test_batch_undo_rolls_back_earlier_items(server: Server, instance: Instance) -> None:
    bad_get = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "no-such-object")])
    items = [
        (Operation.CREATE.value, _create_payload("undo-probe")),
        (Operation.ACTIVATE.value, None),
        (Operation.GET.value, bad_get),
    ]
    undo = enums.BatchErrorContinuationOption.UNDO.value
    with _connect(server, instance) as c:
        out = _results(c.call(request(items, version=(2, 1), batch_error_option=undo)))
        assert [_status(b)[0] for b in out] == [ResultStatus.OPERATION_UNDONE.value] * 2 + [
            ResultStatus.OPERATION_FAILED.value]
        uid = out[0].get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)
        get = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)])
        assert _status(_results(c.call(request([(Operation.GET.value, get)])))[0]) == (
            ResultStatus.OPERATION_FAILED.value, ResultReason.ITEM_NOT_FOUND.value)
        # The same batch without the failing item commits both.
        out = _results(c.call(request(items[:2], version=(2, 1), batch_error_option=undo)))
        assert [_status(b)[0] for b in out] == [ResultStatus.SUCCESS.value] * 2


def test_maximum_response_size_and_server_correlation(server: Server, instance: Instance) -> None:
    query = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS)])
    msg = request([(Operation.QUERY.value, query)], version=(2, 1))
    header = msg.value[0]
    header.value.insert(1, ttlv.integer(T.MAXIMUM_RESPONSE_SIZE, 64))
    with _connect(server, instance) as c:
        response = c.call(msg)
        assert _status(_results(response)[0]) == (
            ResultStatus.OPERATION_FAILED.value, ResultReason.RESPONSE_TOO_LARGE.value)
        assert response.get(T.RESPONSE_HEADER.value).value_of(T.SERVER_CORRELATION_VALUE.value)
        header.value[1] = ttlv.integer(T.MAXIMUM_RESPONSE_SIZE, 100_000)
        assert _status(_results(c.call(msg))[0])[0] == ResultStatus.SUCCESS.value


def _make_client_cert(instance: Instance, folder, *, cns: tuple[str, ...] = ("forged",),  # type: ignore[no-untyped-def]
                      eku: bool = True, ca: bool = False) -> tuple:
    """A certificate signed by the instance's dev CA, shaped by the arguments; returns (cert, key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate((instance.dir / "pki" / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((instance.dir / "pki" / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]
                                + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "c.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return folder / "c.pem", folder / "c.key"


def _query_as(server: Server, instance: Instance, cert, key) -> tuple[tuple[int, int | None], str]:  # type: ignore[no-untyped-def]
    ctx = client_context(instance.dir / "pki" / "ca.pem", cert, key)
    with RawClient("127.0.0.1", server.port, ctx) as c:
        bi = _results(_request_over(c))[0]
        return _status(bi), str(bi.value_of(T.RESULT_MESSAGE.value) or "")


@pytest.mark.parametrize("shape, why", [
    ({"eku": False}, "no extended key usage"),
    ({"ca": True}, "CA certificate"),
    ({"cns": ("admin", "guest")}, "2 common names"),
    ({"cns": ("guest", "admin")}, "2 common names"),
])
def test_unfit_client_certificates_are_refused(server: Server, instance: Instance, tmp_path, shape, why) -> None:  # type: ignore[no-untyped-def]
    """Certificates that chain to the CA but must not identify a client: no EKU at all (OpenSSL
    lets it through), CA:TRUE, several subject CNs (which one would be the identity?). Every
    request is refused with Permission Denied naming the reason."""
    cert, key = _make_client_cert(instance, tmp_path / "bad", **shape)
    status, message = _query_as(server, instance, cert, key)
    assert status == (ResultStatus.OPERATION_FAILED.value, ResultReason.PERMISSION_DENIED.value)
    assert why in message
    # Control: the same shape made right (one CN, clientAuth, CA:FALSE) is served.
    good_cert, good_key = _make_client_cert(instance, tmp_path / "good", cns=("someone",))
    assert _query_as(server, instance, good_cert, good_key)[0][0] == ResultStatus.SUCCESS.value


def test_the_dev_ca_itself_is_no_client(server: Server, instance: Instance) -> None:
    pki_dir = instance.dir / "pki"
    status, message = _query_as(server, instance, pki_dir / "ca.pem", pki_dir / "ca.key")
    assert status == (ResultStatus.OPERATION_FAILED.value, ResultReason.PERMISSION_DENIED.value)
    assert "CA certificate" in message or "extended key usage" in message
    folder = instance.dir / "clients" / "admin"
    assert _query_as(server, instance, folder / "cert.pem", folder / "key.pem")[0][0] == ResultStatus.SUCCESS.value
