"""Reliability limits over real sockets: batch size, nesting depth, item count, the per-message
read deadline (slowloris), the idle timeout, the connection limit; a short socket fuzz; and a
graceful shutdown with requests in flight."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server, make_instance

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Every start passes all of these: Instance.start writes its overrides into server.yaml.
DEFAULTS: dict[str, object] = {
    "workers": 2, "max_message_size": 1_048_576, "max_connections": 1024, "idle_timeout": 300,
    "read_timeout": 30, "drain_timeout": 10, "max_batch_items": 1000, "max_depth": 32, "max_items": 100_000,
    # start() writes its overrides into the module's config file: reset what other tests lower
    # (a 1 s handshake_timeout left behind reset the drain test's handshakes on a busy machine).
    "handshake_timeout": 10, "max_handshakes": 128, "max_handshakes_per_ip": 32,
}
LIMITED: dict[str, object] = {
    **DEFAULTS, "workers": 1, "max_batch_items": 5, "max_depth": 8, "max_items": 60,
    "read_timeout": 1.5, "idle_timeout": 3,
}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return make_instance(tmp_path_factory.mktemp("inst-limits"), None)


@pytest.fixture(scope="module")
def limited(instance: Instance) -> Iterator[Server]:
    srv = instance.start(**LIMITED)
    yield srv
    assert srv.stop() == 0, "".join(srv.log[-20:])


def _connect(server: Server, instance: Instance, timeout: float = 30.0) -> RawClient:
    folder = instance.dir / "clients" / "admin"
    ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
    return RawClient("127.0.0.1", server.port, ctx, timeout=timeout)


def _statuses(response: Item) -> list[int]:
    return [bi.value_of(T.RESULT_STATUS.value) for bi in response.all(T.BATCH_ITEM.value)]  # type: ignore[misc]


def _query_ok(server: Server, instance: Instance) -> bool:
    with _connect(server, instance) as c:
        return _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]


def _query_with(children: list[Item]) -> Item:
    return request([(Operation.QUERY.value, ttlv.struct_(T.REQUEST_PAYLOAD, children))])


def test_batch_item_limit(limited: Server, instance: Instance) -> None:
    with _connect(limited, instance) as c:
        ok = c.call(request([(Operation.QUERY.value, None)] * 5))
        assert _statuses(ok) == [ResultStatus.SUCCESS.value] * 5
        refused = c.call(request([(Operation.QUERY.value, None)] * 6))
        (bi,) = refused.all(T.BATCH_ITEM.value)  # one failure for the message, nothing processed
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value
        assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_MESSAGE.value
        assert "more than the limit of 5" in bi.value_of(T.RESULT_MESSAGE.value)
        assert bi.get(T.OPERATION.value) is None
        # The connection stays usable.
        assert _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]


def _nest(depth: int) -> Item:
    item = ttlv.struct_(0x540000, [])
    for _ in range(depth - 1):
        item = ttlv.struct_(0x540000, [item])
    return item


def test_nesting_depth_limit(limited: Server, instance: Instance) -> None:
    # Message (depth 0) > Batch Item (1) > Request Payload (2) > the nest, from depth 3.
    with _connect(limited, instance) as c:
        assert c.send_raw(ttlv.encode(_query_with([_nest(5)]))) is not None  # depth 7: decoded
    with _connect(limited, instance) as c:
        assert c.send_raw(ttlv.encode(_query_with([_nest(7)]))) is None  # depth 9 > 8: closed
    assert limited.saw("nested too deeply")
    assert _query_ok(limited, instance)


def test_item_count_limit(limited: Server, instance: Instance) -> None:
    fn = enums.QueryFunction.QUERY_OPERATIONS
    with _connect(limited, instance) as c:  # 8 items of envelope + 40
        answer = c.send_raw(ttlv.encode(_query_with([ttlv.enum(T.QUERY_FUNCTION, fn)] * 40)))
        assert answer is not None
    with _connect(limited, instance) as c:  # 8 + 60 > 60
        assert c.send_raw(ttlv.encode(_query_with([ttlv.enum(T.QUERY_FUNCTION, fn)] * 60))) is None
    assert limited.saw("too many items in message")
    assert _query_ok(limited, instance)


def test_slowloris_is_cut_off_at_the_read_deadline(limited: Server, instance: Instance) -> None:
    """A client trickling a valid message, one byte every 0.2 s (15+ s in all), is closed after
    read_timeout (1.5 s), while another client is served meanwhile."""
    data = ttlv.encode(request([(Operation.QUERY.value, None)]))
    outcome: dict[str, object] = {}

    def slow() -> None:
        with _connect(limited, instance) as c:
            c.sock.settimeout(0.2)
            start = time.monotonic()
            sent = 0
            try:
                for b in data:
                    c.sock.sendall(bytes([b]))
                    sent += 1
                    try:
                        if c.sock.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
            except (ssl.SSLError, OSError):
                pass
            outcome.update(elapsed=time.monotonic() - start, sent=sent)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    served = time.monotonic()
    assert _query_ok(limited, instance)  # the trickling client holds nothing others need
    assert time.monotonic() - served < 1.0
    t.join(timeout=20)
    assert not t.is_alive()
    assert outcome["sent"] < len(data)  # closed before the message could complete
    assert 1.3 <= outcome["elapsed"] < 4.5  # type: ignore[operator]
    assert limited.saw("connection timed out")
    assert _query_ok(limited, instance)


def test_idle_connection_is_closed(limited: Server, instance: Instance) -> None:
    with _connect(limited, instance, timeout=15) as c:
        assert _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]
        start = time.monotonic()
        assert c.read_message() is None  # the server closes after idle_timeout (3 s)
        assert 2.5 <= time.monotonic() - start < 8


def test_socket_fuzz_keeps_the_server_serving(limited: Server, instance: Instance) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--target", f"127.0.0.1:{limited.port}",
         "--client-conf", str(instance.dir / "clients" / "admin"), "--count", "400", "--batch", "100",
         "--seed", "11"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "query_failures=0" in result.stdout
    assert limited.alive()
    assert _query_ok(limited, instance)
    assert not any("Traceback" in line for line in limited.log), "".join(limited.log[-40:])


def test_connection_limit(instance: Instance) -> None:
    srv = instance.start(**{**DEFAULTS, "workers": 1, "max_connections": 2})
    try:
        first, second = _connect(srv, instance), _connect(srv, instance)
        for c in (first, second):
            assert _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]
        with pytest.raises((ssl.SSLError, OSError, ConnectionError)):
            with _connect(srv, instance, timeout=10) as third:  # refused: closed before the handshake
                third.call(request([(Operation.QUERY.value, None)]))
        _wait_logged(srv, "connection limit reached", 1)  # the log is read by another thread
        for c in (first, second):  # the others are unaffected
            assert _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the freed slot is reused once the server has seen the close
            try:
                assert _query_ok(srv, instance)
                break
            except (ssl.SSLError, OSError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        second.close()
    finally:
        assert srv.stop() == 0, "".join(srv.log[-20:])


def test_connection_limit_is_shared_by_workers(instance: Instance) -> None:
    """Two workers with two slots each serve four clients, whichever worker wins each accept race;
    only a fifth connection, with every worker full, is refused."""
    srv = instance.start(**{**DEFAULTS, "workers": 2, "max_connections": 4})
    conns = []
    try:
        for _ in range(4):
            c = _connect(srv, instance)
            conns.append(c)
            assert _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]
        with pytest.raises((ssl.SSLError, OSError, ConnectionError)):
            with _connect(srv, instance, timeout=10) as fifth:
                fifth.call(request([(Operation.QUERY.value, None)]))
        # The server's log is read by another thread: wait for the line rather than race it.
        _wait_logged(srv, "connection limit reached", 1)
    finally:
        for c in conns:
            c.close()
        assert srv.stop() == 0, "".join(srv.log[-20:])


def _silent_sockets(port: int, count: int, source: str) -> list:  # type: ignore[type-arg]
    """TCP connections from ``source`` (another loopback address) that never start TLS."""
    import socket

    out = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def _wait_logged(server: Server, text: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(text in line for line in server.log) < count:
        assert time.monotonic() < deadline, f"expected {count}x {text!r}:\n" + "".join(server.log[-20:])
        time.sleep(0.05)


def test_silent_sockets_from_one_address_do_not_lock_out_clients(instance: Instance) -> None:
    """Ten sockets from one address that never start TLS (the red team's eight silent sockets
    locked a client out: each held a connection slot for read_timeout). Now at most
    max_handshakes_per_ip of them hold a handshake slot, none holds a connection slot: the
    legitimate clients (another address) get both connection slots."""
    srv = instance.start(**{**DEFAULTS, "workers": 1, "max_connections": 2, "handshake_timeout": 120,
                            "max_handshakes": 8, "max_handshakes_per_ip": 2})
    silent = _silent_sockets(srv.port, 10, "127.0.0.2")
    try:
        _wait_logged(srv, "handshake limit per address reached", 8)  # all ten were seen first
        first, second = _connect(srv, instance), _connect(srv, instance)
        for c in (first, second):
            assert _statuses(c.call(request([(Operation.QUERY.value, None)]))) == [ResultStatus.SUCCESS.value]
        first.close()
        second.close()
        # Two of the silent sockets are still pending (admitted, no handshake): one more from
        # their address is refused at once, before any TLS.
        extra = _silent_sockets(srv.port, 1, "127.0.0.2")[0]
        extra.settimeout(30)
        assert extra.recv(1) == b""
        extra.close()
    finally:
        for s in silent:
            s.close()
        assert srv.stop() == 0, "".join(srv.log[-20:])


def test_a_silent_socket_is_closed_at_the_handshake_timeout(instance: Instance) -> None:
    srv = instance.start(**{**DEFAULTS, "workers": 1, "handshake_timeout": 1})
    try:
        (silent,) = _silent_sockets(srv.port, 1, "127.0.0.3")
        silent.settimeout(60)
        assert silent.recv(1) == b""  # closed by the server, without a byte sent
        silent.close()
        _wait_logged(srv, "handshake timed out", 1)  # the log is read by another thread
        assert _query_ok(srv, instance)  # control: a real client completes its handshake in time
    finally:
        assert srv.stop() == 0, "".join(srv.log[-20:])


def _create_payload() -> Item:
    return ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
            ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Algorithm"),
                                       ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)]),
            ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Length"),
                                       ttlv.integer(T.ATTRIBUTE_VALUE, 256)]),
        ]),
    ])


def test_sigterm_drains_in_flight_requests(instance: Instance) -> None:
    drain = 20.0
    srv = instance.start(**{**DEFAULTS, "workers": 2, "drain_timeout": drain})
    try:
        # Calibrate: batches of Creates lasting about 2 s each, so that SIGTERM lands mid-request.
        with _connect(srv, instance) as c:
            start = time.monotonic()
            assert set(_statuses(c.call(request([(Operation.CREATE.value, _create_payload())] * 20)))) == {
                ResultStatus.SUCCESS.value}
            per_item = (time.monotonic() - start) / 20
        n = max(20, min(1000, int(2.0 / max(per_item, 1e-4))))
        clients = [_connect(srv, instance, timeout=60) for _ in range(4)]
        results: list[tuple[float, list[int]] | BaseException] = []

        def run(c: RawClient) -> None:
            try:
                response = c.call(request([(Operation.CREATE.value, _create_payload())] * n))
                results.append((time.monotonic(), _statuses(response)))
            except BaseException as exc:  # noqa: BLE001
                results.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(0.3)
        sigterm = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(timeout=drain + 10)
        exited = time.monotonic()
        for t in threads:
            t.join(timeout=10)
        for c in clients:
            c.close()
        assert code == 0, "".join(srv.log[-20:])
        assert exited - sigterm < drain + 6
        assert len(results) == 4 and all(not isinstance(r, BaseException) for r in results), results
        for _, statuses in results:  # type: ignore[misc]
            assert statuses == [ResultStatus.SUCCESS.value] * n
        assert any(done > sigterm for done, _ in results), "no response was in flight at SIGTERM"  # type: ignore[misc]
        assert srv.saw("stopping: draining workers")
    finally:
        if srv.alive():
            srv.stop()
