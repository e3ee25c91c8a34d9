"""TLS the way appliances connect: session resumption across workers (Veeam and others reconnect
often and resume)."""

from __future__ import annotations

import socket
import ssl

import pytest
from kmip.core.enums import Operation
from kmip.core.enums import Tags as T

from kmip_bridge.client import client_context, request
from kmip_bridge.protocol import ttlv

from ..e2e.conftest import Instance, Server

pytestmark = pytest.mark.e2e


def _exchange(sock: ssl.SSLSocket) -> None:
    """One Discover Versions: after it the client has read the TLS 1.3 tickets the server sent."""
    sock.sendall(ttlv.encode(request([(Operation.DISCOVER_VERSIONS.value, None)], (1, 2))))
    header = _read(sock, 8)
    body = _read(sock, ttlv.message_length(header))
    reply = ttlv.decode(header + body)
    assert reply.get(T.BATCH_ITEM.value).value_of(T.RESULT_STATUS.value) == 0  # type: ignore[union-attr]


def _read(sock: ssl.SSLSocket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "server closed the connection"
        out += chunk
    return out


@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_session_resumes_on_every_worker(server: Server, instance: Instance, tls_version: ssl.TLSVersion) -> None:
    """The server runs 2 workers; each reconnect lands on either. Every one of 16 reconnects with
    the saved session resumes it (about half would not, were ticket keys per worker: the chance
    that all 16 land on the first worker is 1 in 32,768), and the resumed connection still
    carries the client's certificate: its request is served."""
    folder = instance.dir / "clients" / "veeam"
    if not folder.exists():
        instance.client("veeam")
    ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ctx.minimum_version = ctx.maximum_version = tls_version
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port))) as first:
        _exchange(first)
        session = first.session
        assert not first.session_reused and session is not None
    reused = []
    for _ in range(16):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port)), session=session) as again:
            assert again.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2"}.get(tls_version, "TLSv1.3")
            _exchange(again)
            reused.append(again.session_reused)
    assert all(reused), f"resumed {sum(reused)} of {len(reused)}"


# -- tls.profile: modern (default) and legacy, with an ECDSA and an RSA server certificate -----------
def _rsa_server_cert(instance: Instance) -> tuple[str, str]:
    """An RSA-2048 server certificate from the instance's dev CA (the dev PKI issues ECDSA)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = instance.dir / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (pki / "server-rsa.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "server-rsa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (pki / "server-rsa.key").chmod(0o600)
    return "pki/server-rsa.pem", "pki/server-rsa.key"


def _appliance(instance: Instance, port: int, suites: str) -> str | None:
    """Connects as an appliance offering only ``suites`` on TLS 1.2; the cipher agreed, or None
    if the server refused the handshake."""
    folder = instance.dir / "clients" / "appliance"
    if not folder.exists():
        instance.client("appliance")
    ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(suites)
    try:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as sock:
            _exchange(sock)
            cipher = sock.cipher()
            return cipher[0] if cipher else None
    except (ssl.SSLError, ConnectionResetError):
        return None


RSA_KX_CBC = "AES128-SHA256:AES256-SHA256"  # RSA key exchange, AES-CBC, SHA-256
ECDSA_CBC = "ECDHE-ECDSA-AES128-SHA256"


@pytest.fixture(scope="module")
def tls_instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    from ..e2e.conftest import make_instance

    return make_instance(tmp_path_factory.mktemp("tls-profiles"), None)


@pytest.mark.parametrize("cert", ["ecdsa", "rsa"])
def test_legacy_profile_admits_cbc_appliances_modern_refuses(tls_instance: Instance, cert: str) -> None:
    import yaml

    inst = tls_instance
    cfg = yaml.safe_load(inst.config.read_text())
    if cert == "rsa":
        cfg["tls"]["cert"], cfg["tls"]["key"] = _rsa_server_cert(inst)
    legacy_only = RSA_KX_CBC if cert == "rsa" else ECDSA_CBC
    for profile in ("modern", "legacy"):
        cfg["tls"]["profile"] = profile
        inst.config.write_text(yaml.safe_dump(cfg))
        srv = inst.start(workers=1)
        try:
            agreed = _appliance(inst, srv.port, legacy_only)
            modern = _appliance(inst, srv.port, "ECDHE+AESGCM:" + legacy_only)
            if profile == "modern":
                assert agreed is None, f"the default profile accepted {agreed}"
                assert not srv.saw("tls.profile", timeout=0.5)
            else:
                assert agreed in legacy_only.split(":"), agreed
                assert srv.saw('"tls.profile: TLS 1.2 suites beyond ECDHE with AEAD')
            # A client that can do better gets an AEAD suite under either profile.
            assert modern is not None and "GCM" in modern, modern
        finally:
            assert srv.stop() == 0


def test_revoked_client_cannot_resume_after_crl_reload(tls_instance: Instance) -> None:
    """Resumption skips certificate checks, so a new CRL must end old sessions: after `certs
    revoke` + SIGHUP the revoked client's saved session is not resumed and its full handshake is
    refused; another client still connects."""
    import signal

    import yaml

    inst = tls_instance
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["tls"].update(profile="modern", cert="pki/server.pem", key="pki/server.key", crl=None)
    inst.config.write_text(yaml.safe_dump(cfg))
    for name in ("leaver", "stayer"):
        inst.client(name)
    srv = inst.start()

    def ctx(name: str) -> ssl.SSLContext:
        folder = inst.dir / "clients" / name
        c = client_context(inst.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        c.maximum_version = ssl.TLSVersion.TLSv1_2
        return c

    try:
        leaver = ctx("leaver")
        with leaver.wrap_socket(socket.create_connection(("127.0.0.1", srv.port))) as s:
            _exchange(s)
            session = s.session
        with leaver.wrap_socket(socket.create_connection(("127.0.0.1", srv.port)), session=session) as s:
            _exchange(s)
            assert s.session_reused
        from ..e2e.conftest import run_cli

        run_cli("certs", "revoke", "leaver", "--config", str(inst.config))
        cfg["tls"]["crl"] = "pki/crl.pem"
        inst.config.write_text(yaml.safe_dump(cfg))
        srv.proc.send_signal(signal.SIGHUP)

        def served() -> bool:
            try:
                with leaver.wrap_socket(socket.create_connection(("127.0.0.1", srv.port)), session=session) as s:
                    _exchange(s)
                    return True
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError, AssertionError):
                return False

        # Each worker logs "reloaded" just before it rebuilds its TLS context: wait for both
        # workers, then for the first refusal; from then on every attempt, on either worker, fails.
        assert eventually_true(lambda: sum('"msg": "reloaded"' in ln for ln in srv.log) >= 2)
        assert eventually_true(lambda: not served())
        assert not any(served() for _ in range(8)), "revoked client resumed its session after the CRL reload"
        with ctx("stayer").wrap_socket(socket.create_connection(("127.0.0.1", srv.port))) as s:
            _exchange(s)
    finally:
        assert srv.stop() == 0


def eventually_true(check, attempts: int = 40) -> bool:  # type: ignore[no-untyped-def]
    import time

    for _ in range(attempts):
        if check():
            return True
        time.sleep(0.25)
    return False
