"""Export rules follow the material; ownership and tenancy belong to the object (issue 12, part A).

Each finding gets the request a hostile (or sloppy) client would send and the legitimate request
that must keep working; the last test walks the operation table and looks, in every byte any
response carried, for a protected key's bytes in any form the caller can undo with the keys it
holds (the clear, AES-ECB or AES Key Wrap under a key it can read).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from kmip.core import enums
from kmip.core.enums import BatchErrorContinuationOption, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server, make_instance, run_cli

pytestmark = pytest.mark.e2e

V14, V21 = (1, 4), (2, 1)
U = enums.CryptographicUsageMask
DM = enums.DerivationMethod
WORK_BUDGET = 100_000  # server.max_request_work for this module's server


class Conn:
    def __init__(self, server: Server, instance: Instance, name: str, seen: list[Item]) -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx)
        self.seen = seen  # every response this identity received (the walk scans them)

    def batch(self, items: list[tuple[Operation, list[Item]]], version: tuple[int, int] = V14,
              option: int | None = None) -> list[Item]:
        msg = request([(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, f)) for op, f in items], version, option)
        response = self.raw.call(msg)
        self.seen.append(response)
        return response.all(T.BATCH_ITEM.value)

    def call(self, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> Item:
        return self.batch([(op, list(fields))], version)[0]

    def ok(self, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> Item:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]

    def fails(self, reason: ResultReason, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> str:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value, "expected a refusal"
        assert bi.value_of(T.RESULT_REASON.value) == reason.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.value_of(T.RESULT_MESSAGE.value) or ""  # type: ignore[return-value]

    def register_key(self, material: bytes, *attrs: Item) -> str:
        out = self.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                      ttlv.struct_(T.TEMPLATE_ATTRIBUTE, list(attrs)),
                      ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                          ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
                          ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]),
                          ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                          ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, len(material) * 8)])]))
        uid: str = out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
        self.ok(Operation.ACTIVATE, uid_(uid))
        return uid

    def register_secret(self, value: bytes, *attrs: Item) -> str:
        out = self.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                      ttlv.struct_(T.TEMPLATE_ATTRIBUTE, list(attrs)),
                      ttlv.struct_(T.SECRET_DATA, [
                          ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                          ttlv.struct_(T.KEY_BLOCK, [
                              ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                              ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, value)])])]))
        uid: str = out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
        self.ok(Operation.ACTIVATE, uid_(uid))
        return uid

    def key_bytes(self, uid: str, *fields: Item) -> bytes:
        out = self.ok(Operation.GET, uid_(uid), *fields)
        return out.value[-1].get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(  # type: ignore[union-attr]
            T.KEY_MATERIAL.value)  # type: ignore[return-value]

    def attributes(self, uid: str, *names: str) -> dict[str, object]:
        out = self.ok(Operation.GET_ATTRIBUTES, uid_(uid), *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names))
        return {a.value_of(T.ATTRIBUTE_NAME.value): a.get(T.ATTRIBUTE_VALUE.value).value  # type: ignore[misc,union-attr]
                for a in out.all(T.ATTRIBUTE.value)}

    def derive(self, uids: list[str], method: DM, params: list[Item], *template: Item,
               object_type: enums.ObjectType = enums.ObjectType.SYMMETRIC_KEY, length: int = 256) -> Item:
        attrs = [a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, length)), *template]
        if object_type == enums.ObjectType.SYMMETRIC_KEY:
            attrs.append(a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)))
        return self.call(Operation.DERIVE_KEY, ttlv.enum(T.OBJECT_TYPE, object_type), *map(uid_, uids),
                         ttlv.enum(T.DERIVATION_METHOD, method), ttlv.struct_(T.DERIVATION_PARAMETERS, params),
                         ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs))

    def close(self) -> None:
        self.raw.close()


def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def a1(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def mask(bits: int) -> Item:
    return a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, bits))


def flag(name: str, value: bool) -> Item:
    return a1(name, ttlv.boolean(T.ATTRIBUTE_VALUE, value))


def policy(name: str) -> Item:
    return a1("Operation Policy Name", ttlv.text(T.ATTRIBUTE_VALUE, name))


def wrapping(uid: str) -> Item:
    return ttlv.struct_(T.KEY_WRAPPING_SPECIFICATION, [
        ttlv.enum(T.WRAPPING_METHOD, enums.WrappingMethod.ENCRYPT),
        ttlv.struct_(T.ENCRYPTION_KEY_INFORMATION, [uid_(uid)])])


def derived(bi: Item) -> str:
    assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr,return-value]


SHA256 = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_256)])
ECB = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.ECB)])


def ecb(key: bytes, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(data) + e.finalize()


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    inst = make_instance(tmp_path_factory.mktemp("export"), None)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["keyhsm"]["tenants"] = {"tenant-a": "kek_a"}
    inst.config.write_text(yaml.safe_dump(cfg))
    run_cli("keyhsm", "create", "kek_a", "--config", str(inst.config))
    inst.client("alice", "tenant-a")
    inst.client("carol", "readers")
    inst.client("dave", "wrappers")
    inst.client("erin", "derivers")
    # A policy letting "derivers" derive from (only) the objects that select it.
    (inst.dir / "policies" / "shared-derive.yaml").write_text(
        "policy: shared-derive\nrules:\n  - groups: ['*']\n    operations: ['*']\n    scope: owner\n"
        "  - groups: [derivers]\n    operations: [DeriveKey, GetAttributes]\n    scope: any\n")
    return inst


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    srv = instance.start(max_request_work=WORK_BUDGET)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def seen() -> list[Item]:
    return []


@pytest.fixture(scope="module")
def conns(server: Server, instance: Instance, seen: list[Item]) -> Iterator[dict[str, Conn]]:
    names = ("alice", "carol", "dave", "erin", "admin")
    cs = {n: Conn(server, instance, n, seen if n == "alice" else []) for n in names}
    yield cs
    for c in cs.values():
        c.close()


def stored(instance: Instance, uid: str) -> tuple[str, str]:
    """(owner, KEK label) of an object, read from the SQLite store."""
    path = instance.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT owner, kek_label FROM objects WHERE uid = ?", (uid,)).fetchone()
    assert row is not None
    return row[0], row[1]


# -- 1. DeriveKey: derivation data is material too --------------------------------------------------
def test_derivation_data_from_a_protected_key_stays_protected(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    k, p, e = secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(32)
    known = alice.register_key(k, mask(U.DERIVE_KEY.value))
    protected = alice.register_key(p, mask(U.DERIVE_KEY.value), flag("Extractable", False))
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(protected))
    # Hostile: E_K(protected) under a base key K the caller knows. The derived key is not
    # extractable, so it cannot be read (before the fix it came back, and ECB-decrypted to p).
    out = derived(alice.derive([known, protected], DM.ENCRYPT, [ECB]))
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(out))
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(out), wrapping(known))
    attrs = alice.attributes(out, "Extractable", "Never Extractable", "Sensitive")
    # Never Extractable only if every input always was: K was extractable.
    assert attrs == {"Extractable": False, "Never Extractable": False, "Sensitive": False}
    # Asking for an extractable key from a non-extractable input is refused, not ignored.
    bi = alice.derive([known, protected], DM.ENCRYPT, [ECB], flag("Extractable", True))
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.NOT_EXTRACTABLE.value
    # As the base: the derived key is Never Extractable (its only input always was).
    hkdf = derived(alice.derive([protected], DM.HKDF, [SHA256, ttlv.bytes_(T.DERIVATION_DATA, b"ctx")]))
    assert alice.attributes(hkdf, "Extractable", "Never Extractable") == {
        "Extractable": False, "Never Extractable": True}
    # Sensitive derivation data: the derived key is Sensitive.
    sensitive = alice.register_key(secrets.token_bytes(32), mask(U.DERIVE_KEY.value), flag("Sensitive", True))
    out = derived(alice.derive([known, sensitive], DM.ENCRYPT, [ECB]))
    alice.fails(ResultReason.SENSITIVE, Operation.GET, uid_(out))
    assert alice.attributes(out, "Sensitive", "Always Sensitive") == {"Sensitive": True, "Always Sensitive": False}
    # Derivation data needs Derive Key usage like the base key.
    no_derive = alice.register_key(secrets.token_bytes(32), mask(U.ENCRYPT.value))
    bi = alice.derive([known, no_derive], DM.ENCRYPT, [ECB])
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.PERMISSION_DENIED.value
    # Control: from extractable inputs the derived key is extractable, and is E_K(e).
    plain = alice.register_key(e, mask(U.DERIVE_KEY.value))
    out = derived(alice.derive([known, plain], DM.ENCRYPT, [ECB]))
    assert alice.key_bytes(out) == ecb(k, e)
    assert alice.attributes(out, "Extractable", "Sensitive") == {"Extractable": True, "Sensitive": False}


# -- 2. Wrapping with a key is a grant of its own ---------------------------------------------------
def test_get_permission_is_not_wrap_permission(conns: dict[str, Conn]) -> None:
    alice, carol, dave = conns["alice"], conns["carol"], conns["dave"]
    # Hostile: carol (readers) may Get alice's key under shared-readonly, not wrap with it.
    kek = alice.register_key(secrets.token_bytes(32), mask(U.WRAP_KEY.value), flag("Extractable", False),
                             policy("shared-readonly"))
    own = carol.register_key(secrets.token_bytes(16))
    message = carol.fails(ResultReason.PERMISSION_DENIED, Operation.GET, uid_(own), wrapping(kek))
    assert "WrapKey" in message
    # Control: under shared-wrap, dave (wrappers) may wrap with it — and still not Get it.
    shared = alice.register_key(secrets.token_bytes(32), mask(U.WRAP_KEY.value), policy("shared-wrap"))
    dave_key = dave.register_key(secrets.token_bytes(16))
    out = dave.ok(Operation.GET, uid_(dave_key), wrapping(shared))
    assert out.value[-1].get(T.KEY_BLOCK.value).get(T.KEY_WRAPPING_DATA.value) is not None  # type: ignore[union-attr]
    dave.fails(ResultReason.PERMISSION_DENIED, Operation.GET, uid_(shared))


def test_wrapping_key_needs_wrap_key_usage(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    target = alice.register_key(secrets.token_bytes(16))
    for no_wrap in (alice.register_key(secrets.token_bytes(32)),  # no usage mask at all
                    alice.register_key(secrets.token_bytes(32), mask(U.ENCRYPT.value | U.DECRYPT.value))):
        alice.fails(ResultReason.PERMISSION_DENIED, Operation.GET, uid_(target), wrapping(no_wrap))
    w = secrets.token_bytes(32)
    wrap_only = alice.register_key(w, mask(U.WRAP_KEY.value))
    out = alice.ok(Operation.GET, uid_(target), wrapping(wrap_only))
    wrapped = out.value[-1].get(T.KEY_BLOCK.value).value_of(T.KEY_VALUE.value)  # type: ignore[union-attr]
    assert isinstance(wrapped, bytes) and keywrap.aes_key_unwrap(w, wrapped)


def test_sensitive_key_is_wrapped_only_under_a_protected_non_decrypting_key(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    s = secrets.token_bytes(16)
    sensitive = alice.register_key(s, flag("Sensitive", True))
    readable = alice.register_key(secrets.token_bytes(32), mask(U.WRAP_KEY.value))
    alice.fails(ResultReason.SENSITIVE, Operation.GET, uid_(sensitive), wrapping(readable))
    decrypting = alice.register_key(secrets.token_bytes(32), mask(U.WRAP_KEY.value | U.DECRYPT.value),
                                    flag("Extractable", False))
    alice.fails(ResultReason.SENSITIVE, Operation.GET, uid_(sensitive), wrapping(decrypting))
    protected = alice.register_key(secrets.token_bytes(32), mask(U.WRAP_KEY.value), flag("Extractable", False))
    out = alice.ok(Operation.GET, uid_(sensitive), wrapping(protected))
    assert out.value[-1].get(T.KEY_BLOCK.value).get(T.KEY_WRAPPING_DATA.value) is not None  # type: ignore[union-attr]


# -- 3. Ownership and tenancy belong to the object ----------------------------------------------------
def test_rekey_by_admin_keeps_owner_and_tenant_kek(conns: dict[str, Conn], instance: Instance) -> None:
    alice, admin = conns["alice"], conns["admin"]
    name = ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.text(T.NAME_VALUE, "alice-rekeyed"),
                                            ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])
    key = alice.register_key(secrets.token_bytes(32), a1("Name", name), mask(U.DERIVE_KEY.value))
    assert stored(instance, key)[0] == "alice" and stored(instance, key)[1].startswith("kek_a-v")
    new = admin.ok(Operation.REKEY, uid_(key)).value_of(T.UNIQUE_IDENTIFIER.value)
    assert isinstance(new, str)
    owner, kek = stored(instance, new)
    assert owner == "alice" and kek.startswith("kek_a-v"), (owner, kek)
    assert len(alice.key_bytes(new)) == 32  # alice still reaches her key under its Name's new holder
    assert alice.attributes(new, "Name")["Name"] is not None
    # The same for a key pair re-keyed by the admin.
    out = alice.ok(Operation.CREATE_KEY_PAIR, ttlv.struct_(T.COMMON_TEMPLATE_ATTRIBUTE, [
        a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.RSA)),
        a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 1024))]))
    priv = out.value_of(T.PRIVATE_KEY_UNIQUE_IDENTIFIER.value)
    out = admin.ok(Operation.REKEY_KEY_PAIR, ttlv.text(T.PRIVATE_KEY_UNIQUE_IDENTIFIER, priv))  # type: ignore[arg-type]
    for tag in (T.PRIVATE_KEY_UNIQUE_IDENTIFIER, T.PUBLIC_KEY_UNIQUE_IDENTIFIER):
        owner, kek = stored(instance, out.value_of(tag.value))  # type: ignore[arg-type]
        assert owner == "alice" and kek.startswith("kek_a-v"), (tag, owner, kek)
    # DeriveKey by the admin from alice's key: the derived key is alice's, under her KEK.
    d = derived(admin.derive([new], DM.HKDF, [SHA256, ttlv.bytes_(T.DERIVATION_DATA, b"x")]))
    owner, kek = stored(instance, d)
    assert owner == "alice" and kek.startswith("kek_a-v")
    # Control: the admin's own keys stay the admin's, under the default KEK.
    own = admin.register_key(secrets.token_bytes(32))
    owner, kek = stored(instance, admin.ok(Operation.REKEY, uid_(own)).value_of(T.UNIQUE_IDENTIFIER.value))  # type: ignore[arg-type]
    assert owner == "admin" and kek.startswith("default-v")


def test_derived_key_belongs_to_the_base_keys_owner(conns: dict[str, Conn], instance: Instance) -> None:
    alice, erin = conns["alice"], conns["erin"]
    base = alice.register_key(secrets.token_bytes(32), mask(U.DERIVE_KEY.value), policy("shared-derive"))
    out = derived(erin.derive([base], DM.HKDF, [SHA256, ttlv.bytes_(T.DERIVATION_DATA, b"erin")]))
    owner, kek = stored(instance, out)
    assert owner == "alice" and kek.startswith("kek_a-v")
    # ... under the base key's policy: erin may use it as that policy says (derive), not read it.
    assert erin.attributes(out, "Operation Policy Name") == {"Operation Policy Name": "shared-derive"}
    erin.fails(ResultReason.PERMISSION_DENIED, Operation.GET, uid_(out))
    assert len(alice.key_bytes(out)) == 32
    # Control: erin's derivation from her own key is hers, under the default KEK.
    own = erin.register_key(secrets.token_bytes(32), mask(U.DERIVE_KEY.value))
    mine = derived(erin.derive([own], DM.HKDF, [SHA256, ttlv.bytes_(T.DERIVATION_DATA, b"erin")]))
    assert stored(instance, mine)[0] == "erin" and stored(instance, mine)[1].startswith("default-v")


def test_replacement_is_never_less_protected(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    key = alice.register_key(secrets.token_bytes(32), flag("Extractable", False))
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.REKEY, uid_(key),
                ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [flag("Extractable", True)]))
    new = alice.ok(Operation.REKEY, uid_(key)).value_of(T.UNIQUE_IDENTIFIER.value)
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(new))  # type: ignore[arg-type]
    # Control: a plain key's replacement is readable.
    plain = alice.register_key(secrets.token_bytes(32))
    new = alice.ok(Operation.REKEY, uid_(plain)).value_of(T.UNIQUE_IDENTIFIER.value)
    assert len(alice.key_bytes(new)) == 32  # type: ignore[arg-type]


# -- 4. Attribute values have the type their definition gives ---------------------------------------
def test_attribute_values_are_type_checked(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    k = secrets.token_bytes(16)
    for bad in (a1("Sensitive", ttlv.integer(T.ATTRIBUTE_VALUE, 1)),
                a1("Extractable", ttlv.integer(T.ATTRIBUTE_VALUE, 0)),
                a1("Cryptographic Usage Mask", ttlv.text(T.ATTRIBUTE_VALUE, "all")),
                a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, -1))):
        bi = alice.call(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [bad]),
                        ttlv.struct_(T.SYMMETRIC_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                            ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
                            ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, k)]),
                            ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                            ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 128)])]))
        assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value, bad
        assert "must be of type" in str(bi.value_of(T.RESULT_MESSAGE.value)) or "range" in str(
            bi.value_of(T.RESULT_MESSAGE.value))
    bi = alice.call(Operation.CREATE, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                    ttlv.struct_(T.ATTRIBUTES, [
                        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
                        ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 128), ttlv.integer(T.SENSITIVE, 1)]), version=V21)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    key = alice.register_key(k)
    alice.fails(ResultReason.INVALID_FIELD, Operation.ADD_ATTRIBUTE,
                uid_(key), a1("Extractable", ttlv.integer(T.ATTRIBUTE_VALUE, 0)))
    alice.fails(ResultReason.INVALID_ATTRIBUTE_VALUE, Operation.SET_ATTRIBUTE, uid_(key),
                ttlv.struct_(T.NEW_ATTRIBUTE, [ttlv.integer(T.SENSITIVE, 1)]), version=V21)
    # Control: Booleans are taken, and every reading agrees.
    alice.ok(Operation.MODIFY_ATTRIBUTE, uid_(key), a1("Extractable", ttlv.boolean(T.ATTRIBUTE_VALUE, False)))
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(key))
    locked = alice.register_key(k, flag("Extractable", False))
    assert alice.attributes(locked, "Extractable", "Never Extractable") == {
        "Extractable": False, "Never Extractable": True}
    alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(locked))


# -- 5. PBKDF2 work is charged to the request ---------------------------------------------------------
def _pbkdf2(iterations: int, salt: bytes = b"salt-0123456789") -> list[Item]:
    return [SHA256, ttlv.bytes_(T.SALT, salt), ttlv.integer(T.ITERATION_COUNT, iterations)]


def test_pbkdf2_work_is_budgeted_per_request(conns: dict[str, Conn]) -> None:
    alice = conns["alice"]
    password = alice.register_secret(b"hunter2", mask(U.DERIVE_KEY.value))
    # Hostile: a modest count but 32 SHA-256 blocks of output is 32 times the work.
    bi = alice.derive([password], DM.PBKDF2, _pbkdf2(50_000), length=8192,
                      object_type=enums.ObjectType.SECRET_DATA)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    assert "server.max_request_work" in str(bi.value_of(T.RESULT_MESSAGE.value))
    # Hostile: a batch of items each within the budget, together beyond it.
    item = (Operation.DERIVE_KEY, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA), uid_(password),
        ttlv.enum(T.DERIVATION_METHOD, DM.PBKDF2), ttlv.struct_(T.DERIVATION_PARAMETERS, _pbkdf2(40_000)),
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256))])])
    items = alice.batch([item, item, item], option=BatchErrorContinuationOption.CONTINUE.value)
    assert [i.value_of(T.RESULT_STATUS.value) for i in items] == [
        ResultStatus.SUCCESS.value, ResultStatus.SUCCESS.value, ResultStatus.OPERATION_FAILED.value]
    assert items[2].value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    # Control: the next request has a budget of its own, and the derivation is right.
    out = derived(alice.derive([password], DM.PBKDF2, _pbkdf2(50_000), object_type=enums.ObjectType.SECRET_DATA))
    assert alice.key_bytes(out) == PBKDF2HMAC(hashes.SHA256(), 32, b"salt-0123456789", 50_000).derive(b"hunter2")


# -- 6. The walk: no protected bytes in any reversible form -------------------------------------------
def _strings(item: Item) -> Iterator[bytes]:
    if item.type == Type.STRUCTURE:
        for child in item.value:  # type: ignore[union-attr]
            yield from _strings(child)
    elif item.type == Type.BYTE_STRING:
        yield item.value  # type: ignore[misc]
    elif item.type == Type.TEXT_STRING:
        yield item.value.encode()  # type: ignore[union-attr]


def _undo(blob: bytes, key: bytes) -> Iterator[bytes]:
    """What the holder of ``key`` can make of ``blob``: itself, AES-ECB decryption, AES key unwrap."""
    yield blob
    if len(blob) >= 16 and len(blob) % 16 == 0:
        d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
        yield d.update(blob) + d.finalize()
    for unwrap in (keywrap.aes_key_unwrap, keywrap.aes_key_unwrap_with_padding):
        try:
            yield unwrap(key, blob)
        except (ValueError, keywrap.InvalidUnwrap):
            pass


def test_walk_protected_key_never_comes_back(conns: dict[str, Conn], seen: list[Item]) -> None:
    alice = conns["alice"]
    seen.clear()
    k, p, s = secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(32)
    all_uses = U.DERIVE_KEY.value | U.ENCRYPT.value | U.WRAP_KEY.value | U.MAC_GENERATE.value
    known = alice.register_key(k, mask(all_uses))
    protected = alice.register_key(p, mask(all_uses), flag("Extractable", False))
    sensitive = alice.register_key(s, mask(all_uses), flag("Sensitive", True))
    data = ttlv.bytes_(T.DERIVATION_DATA, bytes(range(32)))
    methods: list[tuple[DM, list[Item]]] = [
        (DM.PBKDF2, _pbkdf2(1000)), (DM.HASH, [SHA256, data]), (DM.HMAC, [SHA256, data]),
        (DM.HKDF, [SHA256, data]), (DM.NIST800_108_C, [SHA256, data]), (DM.ENCRYPT, [ECB, data]),
    ]
    secrets_of = {protected: p, sensitive: s}
    for target, t in secrets_of.items():
        refusal = ResultReason.NOT_EXTRACTABLE if target == protected else ResultReason.SENSITIVE
        alice.fails(refusal, Operation.GET, uid_(target))
        alice.fails(refusal, Operation.GET, uid_(target), ttlv.enum(T.KEY_FORMAT_TYPE,
                                                                    enums.KeyFormatType.TRANSPARENT_SYMMETRIC_KEY))
        alice.fails(refusal, Operation.GET, uid_(target), wrapping(known))
        alice.ok(Operation.GET, uid_(known), wrapping(target))  # wrapping *with* it reveals nothing
        alice.ok(Operation.GET_ATTRIBUTES, uid_(target))
        alice.ok(Operation.ENCRYPT, uid_(target), ECB, ttlv.bytes_(T.DATA, bytes(32)))
        alice.ok(Operation.MAC, uid_(target), ttlv.bytes_(T.DATA, bytes(32)))  # AES-CMAC
        outputs = []
        for method, params in methods:  # the protected key as the base
            for otype in (enums.ObjectType.SYMMETRIC_KEY, enums.ObjectType.SECRET_DATA):
                if method == DM.ENCRYPT and otype == enums.ObjectType.SECRET_DATA:
                    continue
                outputs.append(derived(alice.derive([target], method, params, object_type=otype)))
            if method != DM.PBKDF2:  # ... and as the derivation data under the known base key
                params = [x for x in params if x.tag != T.DERIVATION_DATA.value]
                outputs.append(derived(alice.derive([known, target], method, params)))
        new = alice.ok(Operation.REKEY, uid_(target)).value_of(T.UNIQUE_IDENTIFIER.value)
        outputs.append(new)  # type: ignore[arg-type]
        for out in outputs:
            alice.fails(refusal, Operation.GET, uid_(out))
            alice.fails(refusal, Operation.GET, uid_(out), wrapping(known))
        # A derived key is no way around it either: derive again from one, with the known key.
        alice.ok(Operation.ACTIVATE, uid_(outputs[-2]))
        chained = derived(alice.derive([known, outputs[-2]], DM.ENCRYPT, [ECB]))
        alice.fails(refusal, Operation.GET, uid_(chained))
        seen_blobs = [b for response in seen for b in _strings(response)]
        assert seen_blobs, "the walk saw no responses"
        for blob in seen_blobs:
            for undone in _undo(blob, k):
                assert t not in undone, "protected bytes came back in a form the known key undoes"
    # The check itself can fail: an extractable key's E_K(bytes), derived the same way, is found.
    plain_bytes = secrets.token_bytes(32)
    plain = alice.register_key(plain_bytes, mask(all_uses))
    alice.key_bytes(derived(alice.derive([known, plain], DM.ENCRYPT, [ECB])))
    assert any(plain_bytes in u for b in _strings(seen[-1]) for u in _undo(b, k))


def test_walk_private_key_never_comes_back(conns: dict[str, Conn], seen: list[Item]) -> None:
    """The same walk for a non-extractable Private Key: Get in every format, wrapped, Sign."""
    alice = conns["alice"]
    seen.clear()
    k = secrets.token_bytes(32)
    known = alice.register_key(k, mask(U.WRAP_KEY.value))
    key = rsa.generate_private_key(65537, 2048)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    d = key.private_numbers().d.to_bytes(256, "big").lstrip(b"\0")
    out = alice.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.PRIVATE_KEY),
                   ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [mask(U.SIGN.value), flag("Extractable", False)]),
                   ttlv.struct_(T.PRIVATE_KEY, [ttlv.struct_(T.KEY_BLOCK, [
                       ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.PKCS_1),
                       ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, der)]),
                       ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.RSA),
                       ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 2048)])]))
    uid: str = out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
    alice.ok(Operation.ACTIVATE, uid_(uid))
    for kf in (None, enums.KeyFormatType.PKCS_8, enums.KeyFormatType.TRANSPARENT_RSA_PRIVATE_KEY):
        fields = [ttlv.enum(T.KEY_FORMAT_TYPE, kf)] if kf is not None else []
        alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(uid), *fields)
        alice.fails(ResultReason.NOT_EXTRACTABLE, Operation.GET, uid_(uid), *fields, wrapping(known))
    alice.ok(Operation.SIGN, uid_(uid), ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
        ttlv.enum(T.DIGITAL_SIGNATURE_ALGORITHM, enums.DigitalSignatureAlgorithm.SHA256_WITH_RSA_ENCRYPTION)]),
        ttlv.bytes_(T.DATA, b"message"))
    alice.ok(Operation.GET_ATTRIBUTES, uid_(uid))
    blobs = [b for response in seen for b in _strings(response)]
    assert blobs
    for blob in blobs:
        for undone in _undo(blob, k):
            assert der not in undone and d not in undone
