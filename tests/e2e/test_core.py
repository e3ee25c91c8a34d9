"""The core server end to end with PyKMIP's own client, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kmip.core import enums
from kmip.core.factories import attributes as attr_factory
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from kmip_bridge.store.store import normalise_url

from .conftest import Instance, Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(server: Server):  # type: ignore[no-untyped-def]
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    yield c
    c.close()


def _rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return public, private


@pytest.mark.parametrize("length", [128, 192, 256])
def test_create_get_aes(client, length: int) -> None:  # type: ignore[no-untyped-def]
    uid = client.create(enums.CryptographicAlgorithm.AES, length, name=f"aes-{length}")
    key = client.get(uid)
    assert isinstance(key, objects.SymmetricKey)
    assert key.cryptographic_algorithm == enums.CryptographicAlgorithm.AES
    assert key.cryptographic_length == length
    assert len(key.value) == length // 8
    assert client.get(uid).value == key.value  # stable across reads


def test_create_rejects_bad_length(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KmipOperationFailure) as err:
        client.create(enums.CryptographicAlgorithm.AES, 100)
    assert err.value.reason == enums.ResultReason.INVALID_FIELD


def _registrable() -> list[objects.ManagedObject]:
    public, private = _rsa_pair()
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2e")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(k, hashes.SHA256())
    )
    return [
        objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, bytes(range(32))),
        objects.SecretData(b"correct horse battery staple", enums.SecretDataType.PASSWORD),
        objects.OpaqueObject(b"\x00opaque\xff" * 5, enums.OpaqueDataType.NONE),
        objects.PublicKey(
            enums.CryptographicAlgorithm.RSA, 2048, public, enums.KeyFormatType.PKCS_1
        ),
        objects.PrivateKey(
            enums.CryptographicAlgorithm.RSA, 2048, private, enums.KeyFormatType.PKCS_8
        ),
        objects.X509Certificate(cert.public_bytes(serialization.Encoding.DER)),
    ]


def test_register_get_every_object_type(client) -> None:  # type: ignore[no-untyped-def]
    for obj in _registrable():
        uid = client.register(obj)
        back = client.get(uid)
        assert type(back) is type(obj)
        assert back.value == obj.value, type(obj).__name__


def test_get_attributes_and_list(client) -> None:  # type: ignore[no-untyped-def]
    uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="attr-probe")
    got_uid, attrs = client.get_attributes(uid)
    assert got_uid == uid
    by_name = {a.attribute_name.value: a.attribute_value for a in attrs}
    assert by_name["Unique Identifier"].value == uid
    assert by_name["Object Type"].value == enums.ObjectType.SYMMETRIC_KEY
    assert by_name["Cryptographic Algorithm"].value == enums.CryptographicAlgorithm.AES
    assert by_name["Cryptographic Length"].value == 256
    assert by_name["State"].value == enums.State.PRE_ACTIVE
    assert by_name["Name"].name_value.value == "attr-probe"
    assert "Initial Date" in by_name and "Last Change Date" in by_name
    _, some = client.get_attributes(uid, ["Cryptographic Length", "State"])
    assert sorted(a.attribute_name.value for a in some) == ["Cryptographic Length", "State"]
    names = client.get_attribute_list(uid)
    assert {"Unique Identifier", "Name", "Cryptographic Algorithm", "State"} <= set(names)


def test_locate(client) -> None:  # type: ignore[no-untyped-def]
    f = attr_factory.AttributeFactory()
    a = client.create(enums.CryptographicAlgorithm.AES, 128, name="locate-me")
    b = client.create(enums.CryptographicAlgorithm.AES, 128, name="locate-me")
    client.create(enums.CryptographicAlgorithm.AES, 128, name="other-name")
    found = client.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, "locate-me")])
    assert set(found) == {a, b}
    assert len(client.locate(maximum_items=1, attributes=[
        f.create_attribute(enums.AttributeType.NAME, "locate-me")])) == 1
    secrets_only = client.locate(attributes=[
        f.create_attribute(enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SECRET_DATA)])
    assert a not in secrets_only
    client.activate(a)
    active = client.locate(attributes=[
        f.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE),
        f.create_attribute(enums.AttributeType.NAME, "locate-me")])
    assert active == [a]
    assert client.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, "nobody")]) == []


def test_life_cycle_and_wrong_order(client) -> None:  # type: ignore[no-untyped-def]
    uid = client.create(enums.CryptographicAlgorithm.AES, 256)
    with pytest.raises(KmipOperationFailure) as err:  # Pre-Active cannot be revoked as superseded
        client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    client.activate(uid)
    with pytest.raises(KmipOperationFailure) as err:
        client.activate(uid)
    assert err.value.reason == enums.ResultReason.PERMISSION_DENIED
    with pytest.raises(KmipOperationFailure) as err:
        client.destroy(uid)
    assert err.value.reason == enums.ResultReason.PERMISSION_DENIED
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    _, attrs = client.get_attributes(uid, ["State", "Deactivation Date"])
    by_name = {a.attribute_name.value: a.attribute_value for a in attrs}
    assert by_name["State"].value == enums.State.DEACTIVATED
    client.get(uid)  # a deactivated key can still be read (e.g. to decrypt old data)
    client.destroy(uid)
    with pytest.raises(KmipOperationFailure) as err:
        client.get(uid)
    assert err.value.reason == enums.ResultReason.ITEM_NOT_FOUND
    _, attrs = client.get_attributes(uid, ["State"])  # metadata outlives the material
    assert attrs[0].attribute_value.value == enums.State.DESTROYED
    with pytest.raises(KmipOperationFailure):
        client.destroy(uid)


def test_compromise_then_destroy(client) -> None:  # type: ignore[no-untyped-def]
    uid = client.create(enums.CryptographicAlgorithm.AES, 128)
    client.activate(uid)
    client.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid)
    client.destroy(uid)
    _, attrs = client.get_attributes(uid, ["State"])
    assert attrs[0].attribute_value.value == enums.State.DESTROYED_COMPROMISED


def test_unknown_object(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KmipOperationFailure) as err:
        client.get("00000000-0000-0000-0000-000000000000")
    assert err.value.reason == enums.ResultReason.ITEM_NOT_FOUND


def test_query_and_discover_versions(client) -> None:  # type: ignore[no-untyped-def]
    result = client.proxy.query(query_functions=[
        enums.QueryFunction.QUERY_OPERATIONS, enums.QueryFunction.QUERY_OBJECTS])
    ops = {o for o in result.operations}
    assert {enums.Operation.CREATE, enums.Operation.GET, enums.Operation.LOCATE} <= ops
    assert enums.ObjectType.SYMMETRIC_KEY in set(result.object_types)
    from kmip.core.messages.contents import ProtocolVersion

    versions = client.proxy.discover_versions(protocol_versions=[ProtocolVersion(1, 2), ProtocolVersion(9, 9)])
    assert [(v.major, v.minor) for v in versions.protocol_versions] == [(1, 2)]


def test_database_holds_no_plaintext(client, instance: Instance) -> None:  # type: ignore[no-untyped-def]
    secrets_ = [bytes([7]) * 16 + b"unique-marker-42", b"a secret data value that is unique 0123"]
    client.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, secrets_[0]))
    client.register(objects.SecretData(secrets_[1], enums.SecretDataType.PASSWORD))
    created = client.create(enums.CryptographicAlgorithm.AES, 256)
    secrets_.append(client.get(created).value)
    engine = sa.create_engine(normalise_url(instance.database_url))
    scanned = 0
    with engine.connect() as conn:
        for table in sa.inspect(engine).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                for value in row:
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    for s in secrets_:
                        assert s not in blob, f"plaintext material found in table {table}"
                        assert s.hex().encode() not in blob.lower()
                    scanned += 1
    engine.dispose()
    assert scanned > 0
