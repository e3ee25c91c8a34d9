"""Structured logs of a real server: every line is one JSON object (or text, when configured), and
every line logged for a request carries its request id and connection id — what an operator
greps for when a client reports a failure."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator

import pytest
import yaml
from kmip.core import enums
from kmip.core.enums import Operation, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import CLI, Instance, Server, free_port, make_instance

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Server]]:
    # In-process Key HSM: the text-format restart below starts the server alone.
    instance = make_instance(tmp_path_factory.mktemp("logs"), None, keyhsm_mode="inprocess")
    cfg = yaml.safe_load(instance.config.read_text())
    # Without the audit file, each batch item is logged at INFO ("request" lines).
    cfg["audit"] = {"enabled": False}
    cfg["logging"] = {"level": "INFO", "format": "json"}
    instance.config.write_text(yaml.safe_dump(cfg))
    server = instance.start()
    yield instance, server
    assert server.stop() == 0


def connect(instance: Instance, server: Server) -> RawClient:
    folder = instance.dir / "clients" / "admin"
    ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
    return RawClient("127.0.0.1", server.port, ctx)


def create_fields() -> list[Item]:
    return [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
            ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Algorithm"),
                                       ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)]),
            ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Length"),
                                       ttlv.integer(T.ATTRIBUTE_VALUE, 256)])]),
    ]


def send(c: RawClient, items: list[tuple[Operation, list[Item]]], version: tuple[int, int] = (1, 4)) -> Item:
    return c.call(request([(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, f)) for op, f in items], version=version))


def request_lines(server: Server, count: int) -> list[dict[str, object]]:
    assert server.saw('"msg": "request"')
    lines = [json.loads(line) for line in server.log]  # every line is JSON, or this raises
    found = [rec for rec in lines if rec["msg"] == "request"]
    assert len(found) >= count, found
    return found


def test_every_request_line_carries_request_and_connection_ids(logged: tuple[Instance, Server]) -> None:
    instance, server = logged
    with connect(instance, server) as first:
        # One message with two items (Create, Get of the ID placeholder), then another message.
        response = send(first, [(Operation.CREATE, create_fields()), (Operation.GET, [])])
        statuses = [bi.value_of(T.RESULT_STATUS.value) for bi in response.all(T.BATCH_ITEM.value)]
        assert statuses == [ResultStatus.SUCCESS.value] * 2
        failed = send(first, [(Operation.GET, [ttlv.text(T.UNIQUE_IDENTIFIER, "no-such-object")])])
        assert failed.get(T.BATCH_ITEM.value).value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value
    with connect(instance, server) as second:
        v2 = send(second, [(Operation.QUERY, [ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS)])],
                  version=(2, 1))
        correlation = v2.get(T.RESPONSE_HEADER.value).value_of(T.SERVER_CORRELATION_VALUE.value)  # type: ignore[union-attr]

    lines = request_lines(server, 4)
    create, get, missing, query = lines[-4:]
    assert [r["operation"] for r in (create, get, missing, query)] == ["CREATE", "GET", "GET", "QUERY"]
    for rec in (create, get, missing, query):
        assert isinstance(rec["request_id"], str) and len(rec["request_id"]) == 16
        assert isinstance(rec["connection_id"], str) and len(rec["connection_id"]) == 16
    # Items of one message share its request id; each message has its own.
    assert create["request_id"] == get["request_id"] != missing["request_id"]
    assert missing["status"] == "OPERATION_FAILED"
    # One connection, one id; another connection, another id.
    assert create["connection_id"] == missing["connection_id"] != query["connection_id"]
    # A 2.x client gets the request id back: the Server Correlation Value names the log lines.
    assert correlation == query["request_id"]


def test_connection_lines_carry_the_connection_id(logged: tuple[Instance, Server]) -> None:
    instance, server = logged
    # A client without a certificate is refused at the handshake: logged, with its connection id.
    ctx = client_context(instance.dir / "pki" / "ca.pem", None, None)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the refusal then happens inside the handshake
    with pytest.raises((ssl.SSLError, OSError)):
        RawClient("127.0.0.1", server.port, ctx).call(request([(Operation.QUERY.value, None)]))
    assert server.saw('"msg": "handshake refused"')
    refused = [json.loads(line) for line in server.log if '"msg": "handshake refused"' in line][-1]
    assert len(refused["connection_id"]) == 16
    assert "request_id" not in refused  # no request was read


def test_text_format_carries_the_ids_too(logged: tuple[Instance, Server]) -> None:
    instance, server = logged
    assert server.stop() == 0
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["logging"]["format"] = "text"
    instance.config.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([*CLI, "serve", "--config", str(instance.config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    text_server = Server(instance.config, server.port, proc)

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            text_server.log.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert text_server.saw("kmip_bridge.server: ready", timeout=90), "".join(text_server.log[-20:])
        with connect(instance, text_server) as c:
            send(c, [(Operation.CREATE, create_fields())])
        assert text_server.saw("kmip_bridge.audit: request")
        line = next(ln for ln in text_server.log if "kmip_bridge.audit: request" in ln)
        assert not line.lstrip().startswith("{")
        assert "request_id=" in line and "connection_id=" in line and "operation=CREATE" in line
    finally:
        assert text_server.stop() == 0


FORGED_LINE = "2026-01-01 00:00:00,000 INFO kmip_bridge.server: forged"


def _hostile_traffic(instance: Instance, server: Server, evil_cert: tuple) -> None:  # type: ignore[type-arg]
    """A Log message and a CN with a newline and a forged line after it, a ~1 MB Interop
    identifier; then a plain Log message as the control. Log and Interop are KMIP 2.x operations
    (a 1.x request for them is Operation Not Supported and logs no client text)."""
    v2 = (2, 1)
    with connect(instance, server) as c:
        send(c, [(Operation.LOG, [ttlv.text(T.LOG_MESSAGE, "note\n" + FORGED_LINE)])], v2)
        send(c, [(Operation.INTEROP, [ttlv.enum(T.INTEROP_FUNCTION, enums.InteropFunction.BEGIN),
                                      ttlv.text(T.INTEROP_IDENTIFIER, "I" * 1_000_000)])], v2)
        send(c, [(Operation.LOG, [ttlv.text(T.LOG_MESSAGE, "plain-control-note")])], v2)
    ctx = client_context(instance.dir / "pki" / "ca.pem", *evil_cert)
    with RawClient("127.0.0.1", server.port, ctx) as c:
        send(c, [(Operation.QUERY, [])])


def _evil_cert(instance: Instance) -> tuple:  # type: ignore[type-arg]
    from kmip_bridge.admin import pki

    cert, key = instance.dir / "evil.pem", instance.dir / "evil.key"
    if not cert.exists():
        pki.issue(instance.dir / "pki" / "ca.pem", instance.dir / "pki" / "ca.key", cert, key,
                  "evil\n" + FORGED_LINE[:40], server=False)
    return cert, key


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_client_text_cannot_forge_or_flood_log_lines(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    instance = make_instance(tmp_path / fmt, None, keyhsm_mode="inprocess")
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["audit"] = {"enabled": False}  # "request" lines (with the identity) at INFO
    cfg["logging"] = {"level": "INFO", "format": fmt}
    instance.config.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([*CLI, "serve", "--config", str(instance.config), "--port", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = Server(instance.config, int(proc.args[-1]), proc)  # type: ignore[index]

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            server.log.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert server.saw("ready", timeout=90), "".join(server.log[-20:])
        _hostile_traffic(instance, server, _evil_cert(instance))
        assert server.saw("plain-control-note")  # control: client text is still logged
        assert server.saw("evil")
    finally:
        assert server.stop() == 0
    for line in server.log:
        assert len(line) < 16_384, f"a {len(line)}-character log line"
        assert not line.startswith(FORGED_LINE[:24]), "a client forged a log line: " + line
        if fmt == "json":
            json.loads(line)
        else:
            assert line[:4].isdigit(), "a line that is no log record: " + line[:200]
    joined = "".join(server.log)
    assert "more characters]" in joined  # the 1 MB identifier, clipped
    assert "note\\n2026-01-01" in joined  # the newline shows as \\n (text escape or JSON escape)
