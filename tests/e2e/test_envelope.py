"""The Key HSM envelope end to end: AAD binding, KEK rotation and revocation, both KEK kinds, on
SoftHSM2 and on openCryptoki's soft token (which has no AES wrap mechanism: rsa KEKs only)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from kmip_bridge.store.store import normalise_url

from .conftest import Instance, Server, make_instance, run_cli
from .tokens import OPENCRYPTOKI, SOFTHSM2

pytestmark = pytest.mark.e2e

SEALED = ("kek_label", "kek_kind", "nonce", "ciphertext", "wrapped_dek", "wrap_nonce")


# (implementation, KEK kind, the wrap mechanism the server must pick there)
TOKENS = {
    "softhsm2-aes": (SOFTHSM2, "aes", "aes-gcm"),
    "softhsm2-rsa": (SOFTHSM2, "rsa", "rsa-oaep-sha1"),  # SoftHSM2 refuses OAEP with SHA-256
    "opencryptoki-rsa": (OPENCRYPTOKI, "rsa", "rsa-oaep-sha256"),
}


@pytest.fixture(scope="module", params=list(TOKENS))
def token(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    return TOKENS[request.param]


@pytest.fixture(scope="module")
def instance(backend: str, token: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Instance:
    url = request.getfixturevalue("pg_database")() if backend == "postgresql" else None
    implementation, kind, _ = token
    return make_instance(tmp_path_factory.mktemp(f"env-{backend}-{implementation}-{kind}"), url, kind,
                         token=implementation)


def _row_mechanisms(instance: Instance) -> set[str]:
    engine = sa.create_engine(normalise_url(instance.database_url))
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT kek_kind FROM objects WHERE kek_kind IS NOT NULL"))
        kinds = {r[0] for r in rows}
    engine.dispose()
    return kinds


def test_rows_record_the_mechanism_the_token_gave(server: Server, instance: Instance,
                                                  token: tuple[str, str, str]) -> None:
    c = _client(server)
    try:
        uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, b"M" * 16))
        assert c.get(uid).value == b"M" * 16
    finally:
        c.close()
    assert _row_mechanisms(instance) == {token[2]}


def _client(server: Server) -> ProxyKmipClient:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    return c


def _copy_sealed(instance: Instance, src: str, dst: str) -> None:
    engine = sa.create_engine(normalise_url(instance.database_url))
    cols = ", ".join(SEALED)
    with engine.begin() as conn:
        row = conn.execute(sa.text(f"SELECT {cols} FROM objects WHERE uid = :u"), {"u": src}).one()
        sets = ", ".join(f"{c} = :{c}" for c in SEALED)
        conn.execute(sa.text(f"UPDATE objects SET {sets} WHERE uid = :u"), {**row._mapping, "u": dst})
    engine.dispose()


def test_sealed_blob_moved_to_another_object_fails_cleanly(server: Server, instance: Instance) -> None:
    c = _client(server)
    try:
        a = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, b"A" * 16))
        b = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, b"B" * 16))
        _copy_sealed(instance, a, b)
        with pytest.raises(KmipOperationFailure) as err:
            c.get(b)
        assert err.value.reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE
        assert "integrity" in err.value.message
        assert c.get(a).value == b"A" * 16  # the original is untouched, the server still serves
    finally:
        c.close()
    assert server.alive()


def test_revoking_a_kek_loses_exactly_its_objects(server: Server, instance: Instance) -> None:
    def listing() -> dict[str, str]:
        out = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout.splitlines()
        return {line.split()[0]: " ".join(line.split()[1:]) for line in out}

    kind = "rsa" if "rsa" in instance.dir.name else "aes"
    before = int(listing()["default-v1"].split()[-1])  # objects earlier tests left under v1
    c = _client(server)
    try:
        old = [c.create(enums.CryptographicAlgorithm.AES, 256) for _ in range(3)]
        old_secret = c.register(objects.SecretData(b"s3cret-v1", enums.SecretDataType.PASSWORD))
        out = run_cli("keyhsm", "rotate", "--config", str(instance.config)).stdout
        assert "default-v2" in out
        new = [c.create(enums.CryptographicAlgorithm.AES, 256) for _ in range(2)]
        new_values = {u: c.get(u).value for u in new}

        assert listing() == {"default-v1": f"{kind} retired {before + 4}", "default-v2": f"{kind} current 2"}

        run_cli("keyhsm", "revoke", "default-v1", "--config", str(instance.config))
        for uid in [*old, old_secret]:
            with pytest.raises(KmipOperationFailure) as err:
                c.get(uid)
            assert err.value.status == enums.ResultStatus.OPERATION_FAILED
            assert err.value.reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE
            assert "irretrievable" in err.value.message and "default-v1" in err.value.message
            assert "revoked" in err.value.message
        for uid, value in new_values.items():
            assert c.get(uid).value == value
        # Metadata of the lost objects is still there; new objects keep working.
        assert c.get_attributes(old[0], ["State"])[0] == old[0]
        fresh = c.create(enums.CryptographicAlgorithm.AES, 128)
        assert len(c.get(fresh).value) == 16
        assert listing() == {"default-v1": f"- revoked {before + 4}", "default-v2": f"{kind} current 3"}
    finally:
        c.close()
    assert server.alive()
