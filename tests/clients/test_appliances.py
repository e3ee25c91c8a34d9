"""Storage, backup and network appliances: Synology DSM, Veeam, NetApp ONTAP, FortiGate, VAST
Data and Nutanix, each scripted at its protocol version from its vendor's KMIP documentation."""

from __future__ import annotations

import os

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv

from ..e2e.conftest import Instance, Server
from .wire import Conversation, attr, name_value, payload, template, uid, v

pytestmark = pytest.mark.e2e
ACTIVE = enums.State.ACTIVE.value


def _secret(data: bytes) -> ttlv.Item:
    return ttlv.struct_(T.SECRET_DATA, [
        ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
        ttlv.struct_(T.KEY_BLOCK, [
            ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
            ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, data)])])])


def test_synology_dsm_vault(server: Server, instance: Instance) -> None:
    """Synology DSM (KMIP 1.2) keeps a volume's encryption key as Secret Data: Register, rename it
    at once with Modify Attribute (Name), Activate; after a reboot it reconnects and finds the
    key by Name; removing the volume Revokes and Destroys it."""
    tag = os.urandom(4).hex()
    secret = os.urandom(32)
    with Conversation(server, instance, "synology", (1, 2)) as c:
        p = c.call(Operation.REGISTER, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
            template(attr("Name", name_value(f"tmp-{tag}")), attr("Cryptographic Usage Mask", v("int", 0))),
            _secret(secret)))
        key = str(p.value_of(T.UNIQUE_IDENTIFIER.value))
        p = c.call(Operation.MODIFY_ATTRIBUTE, payload(uid(key), attr("Name", name_value(f"volume1-{tag}"), 0)))
        assert p.get(T.ATTRIBUTE.value).get(T.ATTRIBUTE_VALUE.value).value_of(T.NAME_VALUE.value) == f"volume1-{tag}"  # type: ignore[union-attr]
        c.activate(key)
        c.reconnect()
        assert c.locate(attr("Name", name_value(f"tmp-{tag}")))[0] == []
        found, located = c.locate(attr("Name", name_value(f"volume1-{tag}")))
        assert found == [key] and located is None
        assert c.get_key_material(key)[1] == secret
        c.revoke(key)
        c.destroy(key)
        failure = c.fails(Operation.GET, payload(uid(key)))
        assert failure.reason in (ResultReason.ITEM_NOT_FOUND.value, ResultReason.PERMISSION_DENIED.value)


def test_veeam_key_pair(server: Server, instance: Instance) -> None:
    """Veeam Backup & Replication (KMIP 1.4): Create Key Pair RSA-2048, Get the public and the
    private key, Activate both, Destroy them when the key is retired."""
    with Conversation(server, instance, "veeam", (1, 4)) as c:
        common = template(
            attr("Cryptographic Algorithm", v("enum", enums.CryptographicAlgorithm.RSA)),
            attr("Cryptographic Length", v("int", 2048)))
        common = ttlv.struct_(T.COMMON_TEMPLATE_ATTRIBUTE, common.value)  # type: ignore[arg-type]
        priv_t = ttlv.struct_(T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE, [attr("Cryptographic Usage Mask", v("int", 8))])
        pub_t = ttlv.struct_(T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE, [attr("Cryptographic Usage Mask", v("int", 4))])
        p = c.call(Operation.CREATE_KEY_PAIR, payload(common, priv_t, pub_t))
        priv = str(p.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value))
        pub = str(p.value_of(T.PUBLIC_KEY_UNIQUE_IDENTIFIER.value))
        obj, der = c.get_key_material(pub)
        assert obj.tag == T.PUBLIC_KEY.value and len(der) > 256
        obj, der = c.get_key_material(priv)
        assert obj.tag == T.PRIVATE_KEY.value and len(der) > 1000
        for u in (pub, priv):
            c.activate(u)
            assert c.state(u) == ACTIVE
        for u in (priv, pub):
            c.revoke(u)
            c.destroy(u)


def test_netapp_ontap_external_key_manager(server: Server, instance: Instance) -> None:
    """NetApp ONTAP (KMIP 1.2): Query of the server's operations and objects, Register of the
    authentication/volume keys it makes with its x-NETAPP custom attributes, Locate by those,
    Get on another node (a new connection)."""
    cluster = "cluster-" + os.urandom(4).hex()
    with Conversation(server, instance, "ontap", (1, 2)) as c:
        q = c.call(Operation.QUERY, payload(
            ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS),
            ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OBJECTS)))
        ops = {x.value for x in q.all(T.OPERATION.value)}
        assert {Operation.REGISTER.value, Operation.LOCATE.value, Operation.GET.value} <= ops
        material = os.urandom(32)
        p = c.call(Operation.REGISTER, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
            template(attr("x-NETAPP-ClusterId", v("text", cluster)),
                     attr("x-NETAPP-KeyTag", v("text", "node-1")),
                     attr("Cryptographic Usage Mask", v("int", 12))),
            ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
                ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]),
                ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)])])))
        key = str(p.value_of(T.UNIQUE_IDENTIFIER.value))
        c.reconnect()
        found, _ = c.locate(attr("x-NETAPP-ClusterId", v("text", cluster)))
        assert found == [key]
        assert c.get_key_material(key)[1] == material
        assert [x.value for x in c.attributes(key, "x-NETAPP-KeyTag")["x-NETAPP-KeyTag"]] == ["node-1"]


def _credential(user: str, password: str) -> ttlv.Item:
    return ttlv.struct_(T.AUTHENTICATION, [ttlv.struct_(T.CREDENTIAL, [
        ttlv.enum(T.CREDENTIAL_TYPE, enums.CredentialType.USERNAME_AND_PASSWORD),
        ttlv.struct_(T.CREDENTIAL_VALUE, [ttlv.text(T.USERNAME, user), ttlv.text(T.PASSWORD, password)])])])


def test_fortigate_locate_by_name_in_template(server: Server, instance: Instance) -> None:
    """FortiGate (KMIP 1.2) sends a Username/Password Credential in every request header (nested
    Authentication / Credential / Credential Value) besides its certificate, and wraps its Locate
    criteria in a Template-Attribute."""
    name = "fgt-" + os.urandom(4).hex()
    secret = "s3cr3t-" + os.urandom(4).hex()
    with Conversation(server, instance, "fortigate", (1, 2)) as c:
        header = [_credential("fortigate", secret)]
        key = str(c.call(Operation.CREATE, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
            template(attr("Cryptographic Algorithm", v("enum", enums.CryptographicAlgorithm.AES)),
                     attr("Cryptographic Length", v("int", 256)),
                     attr("Cryptographic Usage Mask", v("int", 12)),
                     attr("Name", name_value(name)))), header_extra=header).value_of(T.UNIQUE_IDENTIFIER.value))
        c.create_aes(attr("Name", name_value(name + "-other")))  # a Locate must tell them apart
        found = c.call(Operation.LOCATE, payload(template(attr("Name", name_value(name)))), header_extra=header)
        assert [x.value for x in found.all(T.UNIQUE_IDENTIFIER.value)] == [key]
        c.call(Operation.ACTIVATE, payload(uid(key)), header_extra=header)
        assert len(c.get_key_material(key)[1]) == 32
    assert not any(secret in line for line in server.log), "the Credential password reached the log"
    audit = instance.dir / "audit.jsonl"
    assert audit.exists() and secret not in audit.read_text(), "the Credential password reached the audit file"


def test_credential_bound_to_certificate_identity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """policy.bind_credential: a header credential naming another identity than the certificate's
    is refused (Authentication Not Successful); naming it, or sending none, is served. A malformed
    Authentication is Invalid Message whatever the setting."""
    import yaml

    from ..e2e.conftest import make_instance

    inst = make_instance(tmp_path / "bound", None)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["policy"]["bind_credential"] = True
    inst.config.write_text(yaml.safe_dump(cfg))
    srv = inst.start(workers=1)
    try:
        with Conversation(srv, inst, "fortigate", (1, 2)) as c:
            c.discover()  # no credential: the certificate alone
            c.call(Operation.DISCOVER_VERSIONS, payload(), header_extra=[_credential("fortigate", "pw")])
            reply = c.send([(Operation.DISCOVER_VERSIONS.value, payload())],
                           header_extra=[_credential("other-device", "pw")])
            item = reply.items[0]
            assert item.value_of(T.RESULT_REASON.value) == ResultReason.AUTHENTICATION_NOT_SUCCESSFUL.value
            broken = ttlv.struct_(T.AUTHENTICATION, [ttlv.struct_(T.CREDENTIAL, [
                ttlv.enum(T.CREDENTIAL_TYPE, enums.CredentialType.USERNAME_AND_PASSWORD)])])
            reply = c.send([(Operation.DISCOVER_VERSIONS.value, payload())], header_extra=[broken])
            assert reply.items[0].value_of(T.RESULT_REASON.value) == ResultReason.INVALID_MESSAGE.value
            # Device credentials (no username) are accepted as they are.
            device = ttlv.struct_(T.AUTHENTICATION, [ttlv.struct_(T.CREDENTIAL, [
                ttlv.enum(T.CREDENTIAL_TYPE, enums.CredentialType.DEVICE),
                ttlv.struct_(T.CREDENTIAL_VALUE, [ttlv.text(T.DEVICE_SERIAL_NUMBER, "FGT60F0000000001")])])])
            c.call(Operation.DISCOVER_VERSIONS, payload(), header_extra=[device])
    finally:
        assert srv.stop() == 0


def test_vast_rekey(server: Server, instance: Instance) -> None:
    """VAST Data (KMIP 1.2): Create, three Add Attribute of its own tags, Activate, then Re-key
    (a new object with a new id) and poll Get Attributes of the new key until Active."""
    with Conversation(server, instance, "vast", (1, 2)) as c:
        key = c.create_aes()
        for n, val in (("x-VAST-Cluster", "vast-1"), ("x-VAST-Tenant", "default"), ("x-VAST-Purpose", "tenant-key")):
            c.call(Operation.ADD_ATTRIBUTE, payload(uid(key), attr(n, v("text", val))))
        c.activate(key)
        p = c.call(Operation.REKEY, payload(uid(key)))
        new = str(p.value_of(T.UNIQUE_IDENTIFIER.value))
        assert new != key
        for _ in range(3):
            got = c.attributes(new, "State", "Cryptographic Length", "x-VAST-Cluster")
            assert got["State"][0].value == ACTIVE and got["Cryptographic Length"][0].value == 256
        assert len(c.get_key_material(new)[1]) == 32
        links = c.attributes(new, "Link")["Link"]
        assert any(lk.value_of(T.LINKED_OBJECT_IDENTIFIER.value) == key for lk in links)


def test_nutanix_external_kms(server: Server, instance: Instance) -> None:
    """Nutanix AOS / Prism (KMIP 1.2): Discover Versions, Create a named AES-256 key per cluster,
    Activate, Get from every node (new connections), Locate by Name."""
    name = "nutanix-" + os.urandom(4).hex()
    with Conversation(server, instance, "nutanix", (1, 2)) as c:
        assert (1, 2) in c.discover()
        key = c.create_aes(attr("Name", name_value(name)))
        c.activate(key)
        material = c.get_key_material(key)[1]
        for _ in range(2):
            c.reconnect()
            assert c.get_key_material(key)[1] == material
        assert c.locate(attr("Name", name_value(name)))[0] == [key]


def test_header_indicators_answered_synchronously(server: Server, instance: Instance) -> None:
    """Asynchronous Indicator (the client *can* take an asynchronous answer: the server MAY still
    answer at once, and does), Batch Order Option true (items run in order) and Attestation
    Capable Indicator (this server asks no attestation) are accepted and change nothing."""
    with Conversation(server, instance, "appliance", (1, 2)) as c:
        reply = c.send(
            [(Operation.CREATE.value, payload(ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                              template(attr("Cryptographic Algorithm", v("enum", 3)),
                                                       attr("Cryptographic Length", v("int", 128))))),
             (Operation.ACTIVATE.value, None)],
            header_extra=[ttlv.boolean(T.ASYNCHRONOUS_INDICATOR, True),
                          ttlv.boolean(T.ATTESTATION_CAPABLE_INDICATOR, True),
                          ttlv.boolean(T.BATCH_ORDER_OPTION, True)])
        assert [i.value_of(T.RESULT_STATUS.value) for i in reply.items] == [enums.ResultStatus.SUCCESS.value] * 2
        assert all(i.get(T.ASYNCHRONOUS_CORRELATION_VALUE.value) is None for i in reply.items)


def test_unique_names_at_create_when_enabled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """policy.unique_names: a Create whose Name another visible object holds is refused, as Add
    Attribute already is, and stores nothing; another name, or the same name for a client that
    cannot see the first object, is served. (Off by default: PyKMIP names every object alike.)"""
    import yaml

    from ..e2e.conftest import make_instance
    from .wire import KmipFailure

    inst = make_instance(tmp_path / "unique", None)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["policy"]["unique_names"] = True
    inst.config.write_text(yaml.safe_dump(cfg))
    srv = inst.start(workers=1)
    try:
        with Conversation(srv, inst, "synology", (1, 2)) as c:
            first = c.create_aes(attr("Name", name_value("volume-1")))
            with pytest.raises(KmipFailure) as refused:
                c.create_aes(attr("Name", name_value("volume-1")))
            assert refused.value.reason == ResultReason.ILLEGAL_OPERATION.value
            found, _ = c.locate(attr("Name", name_value("volume-1")))
            assert found == [first], "the refused Create stored an object"
            c.create_aes(attr("Name", name_value("volume-2")))  # control: another name
        with Conversation(srv, inst, "veeam", (1, 4)) as other:  # cannot see synology's key
            other.create_aes(attr("Name", name_value("volume-1")))
    finally:
        assert srv.stop() == 0
