"""The Key HSM as a local service: RemoteKeyHsm against KeyHsmService on a real SoftHSM2 token.
Same results and the same error classes and messages as in-process; the socket's protections;
reconnection after a service restart; a peer that breaks the protocol."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmip_bridge.keyhsm import (
    IntegrityError,
    KekExists,
    KekNotFound,
    KekRevoked,
    KeyHsm,
    KeyHsmError,
    TokenSettings,
    TokenUnavailable,
    wire,
)
from kmip_bridge.keyhsm.remote import RemoteKeyHsm
from kmip_bridge.keyhsm.service import KeyHsmService, ServiceError

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "kb-service"
PIN = "4321"

pytestmark = pytest.mark.skipif(
    not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None, reason="SoftHSM2 not installed"
)


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyHsm]:
    d = tmp_path_factory.mktemp("softhsm-svc")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", "8765", "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
    )
    settings = TokenSettings(
        module=MODULE, token_label=LABEL, pin=PIN, softhsm2_conf=str(conf),
        lock_file=str(d / "token.lock"), session_pool_size=4,
    )
    h = KeyHsm(settings, "default", kek_refresh_seconds=0)
    h.create_kek("default", "aes-kwp")
    h.create_kek("rsa", "rsa-oaep")
    yield h
    h.close()


class Running:
    def __init__(self, hsm: KeyHsm, path: Path, allowed_uid: int | None = None) -> None:
        self.service = KeyHsmService(hsm, path, allowed_uid)
        self.service.bind()
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.service.close(drain_timeout=5)
        self.thread.join(timeout=5)


@pytest.fixture
def sock_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sock") / "keyhsm.sock"  # short: AF_UNIX paths are limited


@pytest.fixture
def service(hsm: KeyHsm, sock_path: Path) -> Iterator[Running]:
    running = Running(hsm, sock_path)
    yield running
    running.stop()


@pytest.fixture
def remote(service: Running) -> Iterator[RemoteKeyHsm]:
    r = RemoteKeyHsm(service.service.path, "default", pool_size=4)
    yield r
    r.close()


@pytest.mark.parametrize("kek", ["default", "rsa"])
def test_seal_open_round_trip(remote: RemoteKeyHsm, hsm: KeyHsm, kek: str) -> None:
    material = bytes(range(256)) * 3
    sealed = remote.seal("obj-1", material, "object-type:2", kek_name=kek)
    assert sealed.kek_label == hsm.current_kek(kek).label
    assert remote.open("obj-1", sealed, "object-type:2") == material
    assert hsm.open("obj-1", sealed, "object-type:2") == material  # the same envelope as in-process
    assert remote.open("obj-1", hsm.seal("obj-1", material, "object-type:2", kek_name=kek), "object-type:2") == material
    assert remote.open("e", remote.seal("e", b"")) == b""
    assert remote.current_kek() == hsm.current_kek()
    remote.check()


def test_rewrap_through_the_service_keeps_the_ciphertext_and_converts_format_1(
    remote: RemoteKeyHsm, hsm: KeyHsm
) -> None:
    from tests.legacy_envelope import seal_v1

    remote.create_kek("svcrw", "aes-kwp")
    current = remote.seal("obj-2", b"two", "ctx", kek_name="svcrw")
    legacy = seal_v1(hsm, "obj-1", b"one", "ctx", kek_name="svcrw")
    assert remote.open("obj-1", legacy, "ctx") == b"one"  # format 1 crosses the socket too
    remote.rotate_kek("svcrw")
    moved = remote.rewrap("obj-2", current, "ctx")
    assert (moved.kek_label, moved.format, moved.ciphertext) == ("svcrw-v2", 2, current.ciphertext)
    converted = remote.rewrap("obj-1", legacy, "ctx")
    assert (converted.kek_label, converted.format) == ("svcrw-v2", 2)
    remote.revoke_kek("svcrw-v1")
    assert (remote.open("obj-2", moved, "ctx"), remote.open("obj-1", converted, "ctx")) == (b"two", b"one")


def test_large_material_spans_many_reads(remote: RemoteKeyHsm) -> None:
    material = os.urandom(3 * 1024 * 1024 + 17)
    assert remote.open("big", remote.seal("big", material)) == material


def test_an_oversized_request_is_refused_without_losing_a_connection(remote: RemoteKeyHsm) -> None:
    remote.check()
    before = remote._count
    with pytest.raises(KeyHsmError, match="frame limit"):
        remote.seal("huge", b"\0" * wire.MAX_FRAME)
    assert remote._count == before
    remote.check()


def _same_error(remote_call, local_call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyHsmError) as local:
        local_call()
    with pytest.raises(KeyHsmError) as far:
        remote_call()
    assert type(far.value) is type(local.value)
    assert str(far.value) == str(local.value)


def test_errors_cross_the_socket_unchanged(remote: RemoteKeyHsm, hsm: KeyHsm) -> None:
    sealed = hsm.seal("obj-a", b"material", "ctx")
    moved = dataclasses.replace(sealed)
    _same_error(lambda: remote.open("obj-b", moved, "ctx"), lambda: hsm.open("obj-b", moved, "ctx"))
    bad = dataclasses.replace(sealed, ciphertext=b"\0" * len(sealed.ciphertext))
    _same_error(lambda: remote.open("obj-a", bad, "ctx"), lambda: hsm.open("obj-a", bad, "ctx"))
    with pytest.raises(IntegrityError):
        remote.open("obj-a", bad, "ctx")
    malformed = dataclasses.replace(sealed, kek_label="nonsense")
    _same_error(lambda: remote.open("obj-a", malformed), lambda: hsm.open("obj-a", malformed))
    _same_error(lambda: remote.current_kek("missing"), lambda: hsm.current_kek("missing"))
    with pytest.raises(KekNotFound) as err:
        remote.current_kek("missing")
    assert err.value.name == "missing"
    _same_error(lambda: remote.create_kek("default", "aes-kwp"), lambda: hsm.create_kek("default", "aes-kwp"))
    _same_error(lambda: remote.seal("x", b"y", kek_name="bad name!"), lambda: hsm.seal("x", b"y", kek_name="bad name!"))


def test_kek_admin_through_the_service(remote: RemoteKeyHsm, hsm: KeyHsm) -> None:
    created = remote.create_kek("svc", "aes-kwp")
    assert created.label == "svc-v1"
    with pytest.raises(KekExists):
        remote.create_kek("svc", "aes-kwp")
    old = remote.seal("o", b"old secret", kek_name="svc")
    assert remote.rotate_kek("svc").label == "svc-v2"
    assert remote.current_kek("svc").label == "svc-v2"
    assert {k.label for k in remote.list_keks()} == {k.label for k in hsm.list_keks()}
    assert remote.revoke_kek("svc-v1") == ["svc-v1"]
    with pytest.raises(KekRevoked) as err:
        remote.open("o", old)
    assert err.value.label == "svc-v1" and "irretrievable" in str(err.value)
    with pytest.raises(KekRevoked) as local:
        hsm.open("o", old)
    assert str(err.value) == str(local.value)
    assert remote.revoke_kek("svc") == ["svc-v2"]
    with pytest.raises(KekNotFound):
        remote.revoke_kek("svc")


def test_concurrent_threads_share_a_small_pool(remote: RemoteKeyHsm) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                data = f"{t}-{i}".encode() * 10
                assert remote.open(f"o{t}", remote.seal(f"o{t}", data)) == data
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert remote._count <= 4


def test_socket_is_owner_only_and_single(service: Running, hsm: KeyHsm) -> None:
    path = service.service.path
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ServiceError, match="already listening"):
        KeyHsmService(hsm, path).bind()


def test_stale_socket_is_replaced_and_a_file_is_not(hsm: KeyHsm, sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()  # a socket file nobody listens on
    running = Running(hsm, sock_path)
    try:
        with RemoteKeyHsm(sock_path, "default") as r:
            r.check()
    finally:
        running.stop()
    assert not sock_path.exists()  # removed on close
    sock_path.write_text("not a socket")
    with pytest.raises(ServiceError, match="not a socket"):
        KeyHsmService(hsm, sock_path).bind()


def test_a_peer_with_another_uid_is_refused(hsm: KeyHsm, sock_path: Path) -> None:
    running = Running(hsm, sock_path, allowed_uid=os.getuid() + 1)
    try:
        with pytest.raises(TokenUnavailable, match="not reachable"):
            RemoteKeyHsm(sock_path, "default").check()
    finally:
        running.stop()


def test_client_refuses_a_service_of_another_uid(service: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    from kmip_bridge.keyhsm import remote as remote_module

    real = os.getuid()
    monkeypatch.setattr(remote_module.os, "getuid", lambda: real + 7)
    with pytest.raises(TokenUnavailable, match=f"belongs to uid {real}"):
        RemoteKeyHsm(service.service.path, "default").check()


def test_no_service_is_token_unavailable(sock_path: Path) -> None:
    with pytest.raises(TokenUnavailable, match=r"not reachable .*keyhsm serve"):
        RemoteKeyHsm(sock_path, "default").current_kek()


def test_pooled_connections_survive_a_service_restart(hsm: KeyHsm, sock_path: Path) -> None:
    running = Running(hsm, sock_path)
    r = RemoteKeyHsm(sock_path, "default", pool_size=2)
    try:
        sealed = r.seal("x", b"before restart")
        running.stop()
        with pytest.raises(TokenUnavailable):
            r.open("x", sealed)
        running = Running(hsm, sock_path)
        assert r.open("x", sealed) == b"before restart"
        # a pooled connection from before this restart is retried once, transparently
        r.check()
        running.stop()
        running = Running(hsm, sock_path)
        assert r.open("x", sealed) == b"before restart"
    finally:
        r.close()
        running.stop()


def test_protocol_garbage_closes_that_connection_only(service: Running, remote: RemoteKeyHsm) -> None:
    path = str(service.service.path)
    for junk in (
        b"\xff\xff\xff\xff",  # over the frame limit
        struct.pack(">I", 3) + b"\x02\x00\x00",  # a truncated field
        struct.pack(">I", 1) + b"\x63",  # an unknown operation
        struct.pack(">I", 1) + b"\x09" + b"more",  # bytes after the frame
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(junk)
            assert s.recv(100) == b""  # closed by the service
    assert remote.open("z", remote.seal("z", b"still serving")) == b"still serving"


def test_wire_frames() -> None:
    frame = wire.pack(wire.SEAL, [b"a", b"", b"\x00" * 5])
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert wire.unpack(frame[4:]) == (wire.SEAL, [b"a", b"", b"\x00" * 5])
    with pytest.raises(wire.ProtocolError):
        wire.unpack(frame[4:-1])
    for exc in (KekRevoked("k-v1"), KekNotFound("k"), KekExists("k"), IntegrityError("tampered"),
                TokenUnavailable("down"), KeyHsmError("other")):
        back = wire.error_from(wire.error_fields(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
