"""Identities, ownership, operation policies, tenants with their own KEKs, cross-tenant probes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import CLI, Instance, Server, make_instance, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def instance(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Instance:
    inst = make_instance(tmp_path_factory.mktemp("sec"), None)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["keyhsm"]["tenants"] = {"tenant-a": "kek_a", "tenant-b": "kek_b"}
    cfg["policy"]["groups_from"] = "both"
    inst.config.write_text(yaml.safe_dump(cfg))
    for kek in ("kek_a", "kek_b"):
        run_cli("keyhsm", "create", kek, "--config", str(inst.config))
    inst.client("alice", "tenant-a")
    inst.client("bob", "tenant-b")
    inst.client("carol", "readers")
    inst.client("mallory")
    return inst


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    srv = instance.start()
    yield srv
    assert srv.stop() == 0


class Client:
    def __init__(self, server: Server, instance: Instance, name: str) -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx)

    def call(self, op: Operation, *fields: Item) -> Item:
        payload = ttlv.struct_(T.REQUEST_PAYLOAD, list(fields))
        return self.raw.call(request([(op.value, payload)])).all(T.BATCH_ITEM.value)[0]

    def ok(self, op: Operation, *fields: Item) -> Item:
        bi = self.call(op, *fields)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value)

    def register_secret(self, value: bytes, policy: str | None = None, name: str | None = None) -> str:
        attrs = []
        if policy:
            attrs.append(_attr("Operation Policy Name", ttlv.text(T.ATTRIBUTE_VALUE, policy)))
        if name:
            attrs.append(_attr("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
                ttlv.text(T.NAME_VALUE, name), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])))
        secret = ttlv.struct_(T.SECRET_DATA, [
            ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
            ttlv.struct_(T.KEY_BLOCK, [
                ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, value)]),
            ]),
        ])
        out = self.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                      ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs), secret)
        return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]

    def get_value(self, uid: str) -> bytes:
        out = self.ok(Operation.GET, ttlv.text(T.UNIQUE_IDENTIFIER, uid))
        return out.get(T.SECRET_DATA.value).get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(
            T.KEY_MATERIAL.value)  # type: ignore[union-attr,return-value]

    def locate(self, *attrs: Item) -> set[str]:
        out = self.ok(Operation.LOCATE, *attrs)
        return {u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)}  # type: ignore[misc]

    def close(self) -> None:
        self.raw.close()


def _attr(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def _fails(bi: Item, reason: ResultReason) -> str:
    assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value
    assert bi.value_of(T.RESULT_REASON.value) == reason.value, bi.value_of(T.RESULT_MESSAGE.value)
    return bi.value_of(T.RESULT_MESSAGE.value) or ""  # type: ignore[return-value]


@pytest.fixture(scope="module")
def clients(server: Server, instance: Instance) -> Iterator[dict[str, Client]]:
    cs = {n: Client(server, instance, n) for n in ("alice", "bob", "carol", "mallory", "admin")}
    yield cs
    for c in cs.values():
        c.close()


def test_cross_tenant_probes_find_nothing(clients: dict[str, Client]) -> None:
    alice, bob = clients["alice"], clients["bob"]
    uid = alice.register_secret(b"alice-secret", name="alice-only-name")
    served = {o.value for o in bob.ok(Operation.QUERY, ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS)
                                        ).all(T.OPERATION.value)}
    probes: list[tuple[Operation, list[Item]]] = [
        (Operation.GET, []),
        (Operation.GET_ATTRIBUTES, []),
        (Operation.GET_ATTRIBUTE_LIST, []),
        (Operation.ACTIVATE, []),
        (Operation.REVOKE, [ttlv.struct_(T.REVOCATION_REASON, [
            ttlv.enum(T.REVOCATION_REASON_CODE, enums.RevocationReasonCode.KEY_COMPROMISE)])]),
        (Operation.DESTROY, []),
        (Operation.REKEY, []),
        (Operation.ENCRYPT, [ttlv.bytes_(T.DATA, b"x" * 16)]),
        (Operation.ADD_ATTRIBUTE, [_attr("x-tag", ttlv.text(T.ATTRIBUTE_VALUE, "b"))]),
        (Operation.MODIFY_ATTRIBUTE, [_attr("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
            ttlv.text(T.NAME_VALUE, "stolen"), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)]))]),
    ]
    for op, extra in probes:
        bi = bob.call(op, ttlv.text(T.UNIQUE_IDENTIFIER, uid), *extra)
        # An operation the server does not offer yet is refused as such; any it offers must
        # answer exactly as for an id that does not exist.
        expected = ResultReason.ITEM_NOT_FOUND if op.value in served else ResultReason.OPERATION_NOT_SUPPORTED
        message = _fails(bi, expected)
        assert uid not in message and "alice" not in message, op
    assert uid not in bob.locate()
    assert bob.locate(_attr("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
        ttlv.text(T.NAME_VALUE, "alice-only-name"),
        ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)]))) == set()
    assert alice.get_value(uid) == b"alice-secret"  # untouched by every probe


def test_admin_group_manages_everything(clients: dict[str, Client]) -> None:
    a = clients["alice"].register_secret(b"a1")
    b = clients["bob"].register_secret(b"b1")
    admin = clients["admin"]
    assert {a, b} <= admin.locate()
    assert admin.get_value(a) == b"a1" and admin.get_value(b) == b"b1"


def test_policy_selected_per_object(clients: dict[str, Client]) -> None:
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    shared = alice.register_secret(b"shared-value", policy="shared-readonly")
    private = alice.register_secret(b"private-value")
    assert carol.get_value(shared) == b"shared-value"
    assert shared in carol.locate() and private not in carol.locate()
    _fails(carol.call(Operation.DESTROY, ttlv.text(T.UNIQUE_IDENTIFIER, shared)), ResultReason.PERMISSION_DENIED)
    _fails(carol.call(Operation.GET, ttlv.text(T.UNIQUE_IDENTIFIER, private)), ResultReason.ITEM_NOT_FOUND)
    _fails(bob.call(Operation.GET, ttlv.text(T.UNIQUE_IDENTIFIER, shared)), ResultReason.ITEM_NOT_FOUND)
    assert alice.get_value(shared) == b"shared-value"
    bad = clients["alice"].call(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                                ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                                    _attr("Operation Policy Name", ttlv.text(T.ATTRIBUTE_VALUE, "no-such"))]))
    _fails(bad, ResultReason.INVALID_FIELD)


def test_revoking_one_tenants_kek_spares_the_other(clients: dict[str, Client], instance: Instance) -> None:
    alice, bob = clients["alice"], clients["bob"]
    a = alice.register_secret(b"tenant-a-data")
    b = bob.register_secret(b"tenant-b-data")
    listing = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout
    assert any(line.startswith("kek_a-v1 ") for line in listing.splitlines())
    run_cli("keyhsm", "revoke", "kek_a", "--config", str(instance.config))
    message = _fails(alice.call(Operation.GET, ttlv.text(T.UNIQUE_IDENTIFIER, a)), ResultReason.CRYPTOGRAPHIC_FAILURE)
    assert "kek_a-v1" in message and "irretrievable" in message
    assert bob.get_value(b) == b"tenant-b-data"
    admin_uid = clients["admin"].register_secret(b"default-kek-data")
    assert clients["admin"].get_value(admin_uid) == b"default-kek-data"


def test_disabling_an_identity_takes_effect_on_sighup(clients: dict[str, Client], server: Server,
                                                      instance: Instance) -> None:
    mallory = clients["mallory"]
    uid = mallory.register_secret(b"m")
    (instance.dir / "policies" / "identities.yaml").write_text(
        yaml.safe_dump({"identities": {"mallory": {"disabled": True}}}))
    try:
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            bi = mallory.call(Operation.GET, ttlv.text(T.UNIQUE_IDENTIFIER, uid))
            if bi.value_of(T.RESULT_STATUS.value) != ResultStatus.SUCCESS.value or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "disabled" in _fails(bi, ResultReason.PERMISSION_DENIED)
        assert clients["alice"].locate() is not None  # others unaffected
    finally:
        (instance.dir / "policies" / "identities.yaml").unlink()
        server.proc.send_signal(signal.SIGHUP)


def test_bad_policy_file_stops_startup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(tmp_path / "i", None)
    (inst.dir / "policies" / "broken.yaml").write_text(
        "policy: broken\nrules:\n  - groups: [x]\n    operations: [Get, Fly]\n")
    result = subprocess.run([*CLI, "serve", "--config", str(inst.config)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "broken.yaml:4: unknown operation 'Fly'" in result.stderr


def test_revoked_client_certificate_is_refused_after_sighup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(tmp_path / "crl", None)
    inst.client("eve")
    server = inst.start()
    try:
        eve = Client(server, inst, "eve")
        eve.register_secret(b"e")  # works before revocation
        eve.close()
        # Connections opened before the reload: the CRL must apply to them too.
        eve_open, admin_open = Client(server, inst, "eve"), Client(server, inst, "admin")
        eve_open.ok(Operation.QUERY)
        crl = run_cli("certs", "revoke", "eve", "--config", str(inst.config)).stdout.strip()
        cfg = yaml.safe_load(inst.config.read_text())
        cfg["tls"]["crl"] = crl
        inst.config.write_text(yaml.safe_dump(cfg))
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                c = Client(server, inst, "eve")
                c.call(Operation.QUERY)
                c.close()
                time.sleep(0.2)
            except (OSError, ConnectionError):
                refused = True
        assert refused, "a revoked certificate was still accepted after SIGHUP"
        assert server.saw("certificate revoked")
        deadline = time.monotonic() + 15
        while True:  # the worker serving eve's open connection has reloaded once this fails
            bi = eve_open.call(Operation.QUERY)
            if bi.value_of(T.RESULT_STATUS.value) != ResultStatus.SUCCESS.value or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "client certificate revoked" in _fails(bi, ResultReason.PERMISSION_DENIED)
        assert "client certificate revoked" in _fails(eve_open.call(Operation.QUERY), ResultReason.PERMISSION_DENIED)
        admin_open.ok(Operation.QUERY)  # an open connection of a valid certificate is unaffected
        eve_open.close()
        admin_open.close()
        admin = Client(server, inst, "admin")  # everyone else is unaffected
        assert admin.register_secret(b"a")
        admin.close()
    finally:
        assert server.stop() == 0
