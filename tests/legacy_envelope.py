"""Rows as kmip-bridge wrote them before, so that tests can make the old rows a real database may
still hold. Envelope format 1 (before migration 0004): one AAD (object id, KEK label, KEK kind,
context) binds both the material and the DEK wrap; rsa-oaep wraps the bare DEK. Format 2 before
the mechanism choice: kek_kind "aes-kwp" (AES-GCM, host IV) or "rsa-oaep" (OAEP SHA-1, DEK||binding).
Test code only."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmip_bridge.keyhsm import AES, KeyHsm, Sealed, envelope, mechanisms

LEGACY = {AES: mechanisms.LEGACY_AES_KWP, "rsa": mechanisms.LEGACY_RSA_OAEP}


def _wrap(hsm: KeyHsm, label: str, kind: str, dek_or_bound: bytes, associated: bytes) -> tuple[bytes, bytes]:
    m = LEGACY[kind]
    if kind == AES:
        return hsm._on_token(label, kind, "wrapping", lambda key: mechanisms.aes_wrap(m, key, dek_or_bound, associated))
    return hsm._rsa_public(label).encrypt(dek_or_bound, mechanisms._oaep(m)[0]), b""


def seal_v1(hsm: KeyHsm, object_id: str, material: bytes, context: str = "", kek_name: str | None = None) -> Sealed:
    info = hsm.current_kek(kek_name)
    name = LEGACY[info.kind].name
    associated = envelope.aad(object_id, info.label, name, context)
    dek = os.urandom(32)
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, material, associated)
    wrapped, wrap_nonce = _wrap(hsm, info.label, info.kind, dek, associated)
    return Sealed(info.label, name, nonce, ciphertext, wrapped, wrap_nonce, envelope.FORMAT_1)


def seal_v2_legacy_kind(
    hsm: KeyHsm, object_id: str, material: bytes, context: str = "", kek_name: str | None = None
) -> Sealed:
    """A format-2 row with the former kind name in kek_kind."""
    info = hsm.current_kek(kek_name)
    name = LEGACY[info.kind].name
    dek = os.urandom(32)
    nonce, ciphertext = envelope.encrypt(dek, material, envelope.material_aad(object_id, context))
    associated = envelope.wrap_aad(object_id, info.label, name, context)
    if info.kind == AES:
        wrapped, wrap_nonce = _wrap(hsm, info.label, info.kind, dek, associated)
    else:
        wrapped, wrap_nonce = _wrap(hsm, info.label, info.kind, dek + mechanisms.binding(associated), b"")
    return Sealed(info.label, name, nonce, ciphertext, wrapped, wrap_nonce, envelope.FORMAT_2)


def make_format_1(config: str, database_url: str, uids: list[str]) -> None:
    """Re-seals the rows of ``uids`` as envelope format 1 (same material), as the previous release
    wrote them. Run it in a process of its own (``python -m tests.legacy_envelope``): a PKCS#11
    library initialised in the test process keeps that token's state (openCryptoki's shared token
    is re-initialised between instances) and may leave errors on OpenSSL's queue for the test's
    own TLS connections."""
    import sqlalchemy as sa

    from kmip_bridge.app import open_keyhsm
    from kmip_bridge.config import load
    from kmip_bridge.operations.objects import _aad_context, sealed_columns, sealed_of
    from kmip_bridge.store import ObjectRow
    from kmip_bridge.store.store import normalise_url

    engine = sa.create_engine(normalise_url(database_url))
    try:
        with open_keyhsm(load(config)) as hsm, engine.begin() as conn:
            for uid in uids:
                row = conn.execute(sa.text("SELECT * FROM objects WHERE uid = :u"), {"u": uid}).one()
                ctx = _aad_context(row.object_type)
                # psycopg2 hands bytea over as memoryview through a text query: make it bytes.
                values = {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row._mapping.items()}
                plain = hsm.open(uid, sealed_of(ObjectRow(**values)), ctx)
                legacy = sealed_columns(seal_v1(hsm, uid, plain, ctx))
                sets = ", ".join(f"{k} = :{k}" for k in legacy)
                conn.execute(sa.text(f"UPDATE objects SET {sets} WHERE uid = :u"), {**legacy, "u": uid})
    finally:
        engine.dispose()


if __name__ == "__main__":
    import sys

    make_format_1(sys.argv[1], sys.argv[2], sys.argv[3:])
