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
