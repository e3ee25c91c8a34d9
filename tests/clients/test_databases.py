"""Database key managers: MongoDB Enterprise / Percona Server for MongoDB, libmongocrypt
(client-side field level and queryable encryption), MySQL Enterprise / Percona keyrings and
PostgreSQL pg_tde. Each conversation is scripted at the client's own protocol version."""

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
ACTIVE, PRE_ACTIVE = enums.State.ACTIVE.value, enums.State.PRE_ACTIVE.value


# -- MongoDB Enterprise / Percona Server for MongoDB -----------------------------------------------
@pytest.mark.parametrize("version", [(1, 0), (1, 2)], ids=["kmip-1.0-legacy", "kmip-1.2"])
def test_mongodb_encrypted_storage_engine(server: Server, instance: Instance, version: tuple[int, int]) -> None:
    """mongod --enableEncryption --kmipServerName: Create the master key (AES-256), Activate it
    (kmipActivateKeys), Get it at every start-up, and poll its State (kmipKeyStatePollingSeconds);
    kmipUseLegacyProtocol selects KMIP 1.0. A key no longer Active stops the node."""
    with Conversation(server, instance, "mongodb", version) as c:
        key = c.create_aes()
        assert c.state(key) == PRE_ACTIVE
        c.activate(key)
        c.reconnect()  # a restart of mongod: a new connection reads the key again
        _, material = c.get_key_material(key)
        assert len(material) == 32
        for _ in range(3):
            assert c.state(key) == ACTIVE
        c.revoke(key)  # the operator retires the key: the next poll sees it
        assert c.state(key) == enums.State.DEACTIVATED.value


def test_mongodb_legacy_get_attributes_all_speaks_1_0(server: Server, instance: Instance) -> None:
    """A KMIP 1.0 client asking for every attribute gets only attributes KMIP 1.0 defines (no
    Fresh, no Original Creation Date...): the response check refuses any other."""
    with Conversation(server, instance, "mongodb", (1, 0)) as c:
        key = c.create_aes()
        got = c.attributes(key)
        assert got["State"][0].value == PRE_ACTIVE


def test_percona_server_for_mongodb(server: Server, instance: Instance) -> None:
    """Percona Server for MongoDB (libkmip): the server generates its master key and Registers it
    as a Symmetric Key, Activates it (6.0.x+), Gets it at start-up, reads its State."""
    material = os.urandom(32)
    with Conversation(server, instance, "psmdb", (1, 0)) as c:
        p = c.call(Operation.REGISTER, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
            template(attr("Cryptographic Usage Mask", v("int", 12))),
            ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
                ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]),
                ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)])]),
        ))
        key = str(p.value_of(T.UNIQUE_IDENTIFIER.value))
        c.activate(key)
        c.reconnect()
        assert c.get_key_material(key)[1] == material
        assert c.state(key) == ACTIVE


# -- libmongocrypt (kms-message's KMIP requests, byte for byte) --------------------------------------
def test_libmongocrypt_secret_data_master_key(server: Server, instance: Instance) -> None:
    """kms_kmip_request_register_secretdata_new (1.0): Secret Data of 96 bytes, type Seed, Key
    Format Opaque, Cryptographic Usage Mask 0; then Activate and Get (1.0) on new connections."""
    secret = os.urandom(96)
    with Conversation(server, instance, "libmongocrypt", (1, 0)) as c:
        assert (1, 0) in c.discover()
        p = c.call(Operation.REGISTER, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
            template(attr("Cryptographic Usage Mask", v("int", 0))),
            ttlv.struct_(T.SECRET_DATA, [
                ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.SEED),
                ttlv.struct_(T.KEY_BLOCK, [
                    ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                    ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, secret)])])]),
        ))
        key = str(p.value_of(T.UNIQUE_IDENTIFIER.value))
        c.reconnect()
        c.activate(key)
        c.reconnect()
        obj, material = c.get_key_material(key)
        assert obj.tag == T.SECRET_DATA.value and material == secret
        # A short secret is the client's own check (kms-message refuses it); the server stores any.


def test_libmongocrypt_delegated_encryption(server: Server, instance: Instance) -> None:
    """'delegated: true': Create AES-256 with usage Encrypt|Decrypt (1.2), Activate (1.0), then
    Encrypt with CBC / PKCS5 / AES / Random IV and Decrypt with the returned IV (1.2)."""
    with Conversation(server, instance, "libmongocrypt", (1, 2)) as c:
        key = c.create_aes(mask=12)
        c.send([(Operation.ACTIVATE.value, payload(uid(key)))], version=(1, 0))

        def params(random_iv: bool) -> ttlv.Item:
            return ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
                ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.CBC),
                ttlv.enum(T.PADDING_METHOD, enums.PaddingMethod.PKCS5),
                ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                ttlv.boolean(T.RANDOM_IV, True) if random_iv else None])

        dek = os.urandom(96)
        enc = c.call(Operation.ENCRYPT, payload(uid(key), params(True), ttlv.bytes_(T.DATA, dek)))
        iv = enc.value_of(T.IV_COUNTER_NONCE.value)
        data = enc.value_of(T.DATA.value)
        assert isinstance(iv, bytes) and len(iv) == 16 and isinstance(data, bytes) and len(data) == 112
        dec = c.call(Operation.DECRYPT, payload(uid(key), params(False), ttlv.bytes_(T.DATA, data),
                                                 ttlv.bytes_(T.IV_COUNTER_NONCE, iv)))
        assert dec.value_of(T.DATA.value) == dek


# -- MySQL Enterprise keyring (component_keyring_kmip / keyring_okv) and Percona keyring ------------
def _mysql_key(c: Conversation, name: str, group: str) -> str:
    return c.create_aes(attr("Name", name_value(name)), attr("Object Group", v("text", group)))


def test_mysql_keyring_kmip_1_1(server: Server, instance: Instance) -> None:
    """KMIP 1.1 (MySQL documents it): keyring_key_generate -> Create with a Name and the server's
    Object Group; keyring start-up lists its keys by Locate on the Object Group (Maximum Items
    asked, no Offset Items in 1.1), Get, keyring_key_remove -> Destroy."""
    group = "mysql-" + os.urandom(4).hex()
    with Conversation(server, instance, "mysql", (1, 1)) as c:
        keys = [_mysql_key(c, f"{group}-k{i}", group) for i in range(5)]
        found, located = c.locate(attr("Object Group", v("text", group)), maximum=65535)
        assert sorted(found) == sorted(keys) and located is None
        first, _ = c.locate(attr("Object Group", v("text", group)), maximum=2)
        assert len(first) == 2 and set(first) <= set(keys)
        named, _ = c.locate(attr("Name", name_value(f"{group}-k3")))
        assert named == [keys[3]]
        assert len(c.get_key_material(keys[3])[1]) == 32
        c.destroy(keys[3])
        left, _ = c.locate(attr("Object Group", v("text", group)))
        assert sorted(left) == sorted(k for k in keys if k != keys[3])


@pytest.mark.parametrize("version", [(1, 4), (2, 0), (2, 1)])
def test_percona_keyring_pages_with_offset(server: Server, instance: Instance, version: tuple[int, int]) -> None:
    """Percona's keyring (kmippp) walks a group page by page with Maximum Items and Offset Items;
    KMIP 1.3+ answers Located Items (the total), and the pages are disjoint and complete."""
    group = "percona-" + os.urandom(4).hex()
    with Conversation(server, instance, "percona", (1, 4)) as setup:
        keys = {_mysql_key(setup, f"{group}-k{i}", group) for i in range(7)}
    with Conversation(server, instance, "percona", version) as c:
        crit = (attr("Object Group", v("text", group)) if version < (2, 0)
                else ttlv.struct_(T.ATTRIBUTES, [ttlv.text(T.OBJECT_GROUP, group)]))
        seen: list[str] = []
        for offset in range(0, 9, 3):
            page, located = c.locate(crit, maximum=3, offset=offset)
            assert located == 7
            seen += page
        assert len(seen) == 7 and set(seen) == keys
        again = [u for off in range(0, 9, 3) for u in c.locate(crit, maximum=3, offset=off)[0]]
        assert again == seen  # a defined, stable order
        plain, located = c.locate(crit)
        assert located is None and set(plain) == keys  # no paging asked: no Located Items
        bad = c.fails(Operation.LOCATE, payload(ttlv.integer(T.OFFSET_ITEMS, -1), crit))
        assert bad.reason == ResultReason.INVALID_FIELD.value


def test_paging_at_1_2_has_no_located_items(server: Server, instance: Instance) -> None:
    group = "p12-" + os.urandom(4).hex()
    with Conversation(server, instance, "percona", (1, 2)) as c:
        keys = {_mysql_key(c, f"{group}-k{i}", group) for i in range(3)}
        page, located = c.locate(attr("Object Group", v("text", group)), maximum=2)
        assert located is None and len(page) == 2 and set(page) <= keys


def test_locate_cap_bounds_an_unbounded_request(server: Server, instance: Instance, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """server.max_located_items caps every answer (Maximum Items absent or larger); the client
    still learns the total (1.3+) and pages on."""
    import yaml

    from ..e2e.conftest import make_instance

    inst = make_instance(tmp_path / "capped", None)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["server"]["max_located_items"] = 2
    inst.config.write_text(yaml.safe_dump(cfg))
    srv = inst.start(workers=1)
    try:
        with Conversation(srv, inst, "admin", (1, 4)) as c:
            keys = {_mysql_key(c, f"cap-{i}", "cap") for i in range(5)}
            crit = attr("Object Group", v("text", "cap"))
            assert len(c.locate(crit)[0]) == 2
            page, located = c.locate(crit, maximum=1000)
            assert len(page) == 2 and located == 5
            rest = c.locate(crit, maximum=1000, offset=2)[0] + c.locate(crit, maximum=1000, offset=4)[0]
            assert set(page + rest) == keys
    finally:
        assert srv.stop() == 0


# -- PostgreSQL pg_tde ---------------------------------------------------------------------------------
def test_pg_tde_principal_key(server: Server, instance: Instance) -> None:
    """pg_tde's KMIP key provider (libkmip, KMIP 1.4): a principal key generated by pg_tde is
    Registered under its name, found again by Locate on the Name, and read with Get."""
    name = "pg_tde-principal-" + os.urandom(4).hex()
    material = os.urandom(32)
    with Conversation(server, instance, "pg_tde", (1, 4)) as c:
        p = c.call(Operation.REGISTER, payload(
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
            template(attr("Name", name_value(name)), attr("Cryptographic Usage Mask", v("int", 12))),
            ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
                ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]),
                ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256)])]),
        ))
        key = str(p.value_of(T.UNIQUE_IDENTIFIER.value))
        c.reconnect()
        found, _ = c.locate(attr("Name", name_value(name)))
        assert found == [key]
        assert c.get_key_material(key)[1] == material


def test_encrypt_without_a_block_cipher_mode_is_refused_not_defaulted(server: Server, instance: Instance) -> None:
    """docs/clients.md: no silent default mode. Neither request nor key naming a Block Cipher Mode
    is refused (1.x: Feature Not Supported); the mode set once on the key makes the same request
    work."""
    with Conversation(server, instance, "libmongocrypt", (1, 2)) as c:
        key = c.create_aes(mask=12)
        c.activate(key)
        plain = payload(uid(key), ttlv.bytes_(T.DATA, b"0123456789abcdef"))
        failure = c.fails(Operation.ENCRYPT, plain)
        assert failure.reason == ResultReason.FEATURE_NOT_SUPPORTED.value
        assert "Block Cipher Mode" in str(failure.message)
        c.call(Operation.ADD_ATTRIBUTE, payload(uid(key), attr("Cryptographic Parameters", ttlv.struct_(
            T.ATTRIBUTE_VALUE, [ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.CBC),
                                ttlv.enum(T.PADDING_METHOD, enums.PaddingMethod.PKCS5)]))))
        out = c.call(Operation.ENCRYPT, plain)
        assert len(out.value_of(T.IV_COUNTER_NONCE.value)) == 16  # type: ignore[arg-type]
        assert len(out.value_of(T.DATA.value)) == 32  # type: ignore[arg-type]


def test_gcm_encrypt_at_1_2_carries_only_1_2_tags(server: Server, instance: Instance) -> None:
    with Conversation(server, instance, "libmongocrypt", (1, 2)) as c:
        key = c.create_aes(mask=12)
        c.activate(key)
        gcm = payload(uid(key), ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
            ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.GCM)]), ttlv.bytes_(T.DATA, b"x" * 16))
        # 1.2 has no Authenticated Encryption Tag: the mode is refused (every response the
        # conversation reads is still checked for 1.2 tags only), never answered with a 1.4 tag.
        failure = c.fails(Operation.ENCRYPT, gcm)
        assert failure.reason == enums.ResultReason.FEATURE_NOT_SUPPORTED.value, failure.message
    # Control: the same request at 1.4 is answered, with its tag.
    with Conversation(server, instance, "libmongocrypt", (1, 4)) as c:
        out = c.call(Operation.ENCRYPT, gcm)
        assert len(out.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value)) == 16  # type: ignore[arg-type]


def test_located_items_past_the_last_page(server: Server, instance: Instance) -> None:
    """Located Items is the total whatever page is asked for, the empty one past the end too;
    a destroyed object leaves the count."""
    group = "past-" + os.urandom(4).hex()
    with Conversation(server, instance, "percona", (1, 4)) as c:
        keys = {_mysql_key(c, f"{group}-k{i}", group) for i in range(4)}
        crit = attr("Object Group", v("text", group))
        page, located = c.locate(crit, maximum=2, offset=10)
        assert page == [] and located == 4
        page, located = c.locate(crit, maximum=3, offset=2)
        assert len(page) == 2 and set(page) <= keys and located == 4
        c.destroy(page[0])
        assert c.locate(crit, maximum=1, offset=0)[1] == 3
