"""DeriveKey: a new Symmetric Key or Secret Data derived from a stored key or secret.

Derivation Methods (the base object's bytes are K, Derivation Data is D, the output is truncated
to the requested Cryptographic Length; a method whose output is too short fails):
- PBKDF2: RFC 8018 over K (usually a password in Secret Data) with Salt and Iteration Count; the
  PRF is HMAC with the Hashing Algorithm of the Cryptographic Parameters, HMAC-SHA-1 by default.
- HASH: Hash(K || D) — the key always enters, so the result is as secret as the base key.
- HMAC and HKDF: RFC 5869 (HMAC-based Extract-and-Expand) with Salt and Info D. HMAC(K, D) alone
  could not give more bits than the hash, and PyKMIP, the reference client and server, reads the
  HMAC method this way too.
- NIST800-108-C: SP 800-108 counter-mode KDF with HMAC, D as the fixed input.
- ENCRYPT: D encrypted under the base key (AES, 3DES or Blowfish; ECB, CBC or CTR, Initialization
  Vector as given; padding None or PKCS5).
The second Unique Identifier, if any, names a Symmetric Key or Secret Data whose bytes are D.
Both inputs need Derive Key usage; the new object is as Sensitive / non-Extractable as its most
protected input (export.derived_protection), and belongs to the base key's owner and tenant KEK.
"""

from __future__ import annotations

import uuid

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from kmip.core.enums import (
    BlockCipherMode,
    CryptographicAlgorithm,
    DerivationMethod,
    HashingAlgorithm,
    KeyFormatType,
    LinkType,
    ObjectType,
    PaddingMethod,
    ResultReason,
    SecretDataType,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, invalid_field, missing
from ..protocol.ttlv import Item, Type
from . import create, export, formats, keys, objects
from .context import RequestContext
from .keyuse import hash_for, unsupported  # every Hashing Algorithm the server lists, MD5 included

# A client-chosen iteration count runs on a worker thread: bound it (OWASP asks ~1.3M for SHA-1).
MAX_ITERATIONS = 2_000_000
MAX_BITS = 8192
_BASE_TYPES = frozenset({ObjectType.SYMMETRIC_KEY.value, ObjectType.SECRET_DATA.value})


class _Inputs:
    def __init__(self, key: bytes, algorithm: object, data: bytes | None, params: Item) -> None:
        self.key = key
        self.algorithm = algorithm  # the base key's Cryptographic Algorithm (ENCRYPT)
        self.data = data
        self.params = params
        self.crypto = params.get(T.CRYPTOGRAPHIC_PARAMETERS.value)

    def crypto_param(self, tag: T) -> object:
        return self.crypto.value_of(tag.value) if self.crypto is not None else None

    def bytes_param(self, tag: T) -> bytes | None:
        v = self.params.value_of(tag.value)
        return v if isinstance(v, bytes) else None

    def need_data(self) -> bytes:
        if self.data is None:
            raise missing("this Derivation Method needs Derivation Data")
        return self.data


def _pbkdf2(ctx: RequestContext, i: _Inputs, n: int) -> bytes:
    salt = i.bytes_param(T.SALT)
    count = i.params.value_of(T.ITERATION_COUNT.value)
    if salt is None or not isinstance(count, int) or isinstance(count, bool):
        raise missing("PBKDF2 needs a Salt and an Iteration Count")
    if not 1 <= count <= MAX_ITERATIONS:
        raise invalid_field(f"Iteration Count must be 1 to {MAX_ITERATIONS}")
    algorithm = hash_for(ctx, i.crypto_param(T.HASHING_ALGORITHM), HashingAlgorithm.SHA_1.value)
    # The cost is iterations per output block of the hash, times the blocks asked for (RFC 8018
    # §5.2): 8192 bits of SHA-1 output is 410 blocks, 410 times the iterations.
    ctx.charge_work(count * -(-n // algorithm.digest_size), "this PBKDF2 derivation")
    return PBKDF2HMAC(algorithm, n, salt, count).derive(i.key)


def _hash(ctx: RequestContext, i: _Inputs, n: int) -> bytes:
    h = hashes.Hash(hash_for(ctx, i.crypto_param(T.HASHING_ALGORITHM)))
    h.update(i.key)
    h.update(i.data or b"")
    return h.finalize()


def _hkdf(ctx: RequestContext, i: _Inputs, n: int) -> bytes:
    algorithm = hash_for(ctx, i.crypto_param(T.HASHING_ALGORITHM))
    return HKDF(algorithm, n, i.bytes_param(T.SALT), i.data).derive(i.key)


def _kbkdf(ctx: RequestContext, i: _Inputs, n: int) -> bytes:
    algorithm = hash_for(ctx, i.crypto_param(T.HASHING_ALGORITHM))
    kdf = KBKDFHMAC(algorithm, Mode.CounterMode, n, rlen=4, llen=4, location=CounterLocation.BeforeFixed,
                    label=None, context=None, fixed=i.need_data())
    return kdf.derive(i.key)


def _encrypt(ctx: RequestContext, i: _Inputs, n: int) -> bytes:
    algorithm = i.crypto_param(T.CRYPTOGRAPHIC_ALGORITHM) or i.algorithm
    cipher: algorithms.AES | algorithms.TripleDES | Blowfish
    if algorithm == CryptographicAlgorithm.AES.value:
        cipher = algorithms.AES(i.key)
    elif algorithm == CryptographicAlgorithm.TRIPLE_DES.value:
        cipher = algorithms.TripleDES(i.key)
    elif algorithm == CryptographicAlgorithm.BLOWFISH.value:
        cipher = Blowfish(i.key)
    else:
        raise unsupported(ctx, "encryption-based derivation needs an AES, 3DES or Blowfish base key")
    data = i.need_data()
    iv = i.bytes_param(T.INITIALIZATION_VECTOR)
    mode_value = i.crypto_param(T.BLOCK_CIPHER_MODE)
    mode: modes.Mode
    if mode_value in (None, BlockCipherMode.ECB.value):
        mode = modes.ECB()
    elif mode_value == BlockCipherMode.CBC.value and iv is not None:
        mode = modes.CBC(iv)
    elif mode_value == BlockCipherMode.CTR.value and iv is not None:
        mode = modes.CTR(iv)
    else:
        raise unsupported(ctx, "encryption-based derivation supports ECB, and CBC or CTR with an IV")
    pad = i.crypto_param(T.PADDING_METHOD)
    if pad == PaddingMethod.PKCS5.value and not isinstance(mode, modes.CTR):
        padder = padding.PKCS7(cipher.block_size).padder()
        data = padder.update(data) + padder.finalize()
    elif pad not in (None, PaddingMethod.NONE.value):
        raise unsupported(ctx, "encryption-based derivation supports padding None or PKCS5")
    if not isinstance(mode, modes.CTR) and len(data) * 8 % cipher.block_size:
        raise invalid_field("Derivation Data is not a whole number of cipher blocks; ask for PKCS5 padding")
    encryptor = Cipher(cipher, mode).encryptor()
    return encryptor.update(data) + encryptor.finalize()


_METHODS = {
    DerivationMethod.PBKDF2.value: _pbkdf2,
    DerivationMethod.HASH.value: _hash,
    DerivationMethod.HMAC.value: _hkdf,
    DerivationMethod.HKDF.value: _hkdf,
    DerivationMethod.NIST800_108_C.value: _kbkdf,
    DerivationMethod.ENCRYPT.value: _encrypt,
}


def _new_object(object_type: int, algorithm: object, length: int, material: bytes) -> Item:
    if object_type == ObjectType.SYMMETRIC_KEY.value:
        return create.symmetric_key(algorithm, length, material)  # type: ignore[arg-type]
    return ttlv.struct_(T.SECRET_DATA, [
        ttlv.enum(T.SECRET_DATA_TYPE, SecretDataType.SEED),
        formats.key_block(object_type, KeyFormatType.OPAQUE.value, material, None, None),
    ])


def handle(ctx: RequestContext, payload: Item) -> Item:
    object_type = payload.value_of(T.OBJECT_TYPE.value)
    if object_type not in _BASE_TYPES:
        raise invalid_field("DeriveKey makes a Symmetric Key or Secret Data")
    uids = [u.value for u in payload.all(T.UNIQUE_IDENTIFIER.value)] or [objects.target_uid(ctx, None)]
    if len(uids) > 2 or not all(isinstance(u, str) for u in uids):
        raise invalid_field("DeriveKey takes a base object and, optionally, Secret Data for the derivation data")
    method = _METHODS.get(payload.value_of(T.DERIVATION_METHOD.value))  # type: ignore[arg-type]
    if method is None:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "unsupported or missing Derivation Method")
    params = payload.get(T.DERIVATION_PARAMETERS.value) or ttlv.struct_(T.DERIVATION_PARAMETERS, [])
    if params.type != Type.STRUCTURE:
        raise invalid_field("Derivation Parameters must be a structure")
    attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
    length = keys.value(attrs, "Cryptographic Length")
    algorithm = keys.value(attrs, "Cryptographic Algorithm")
    if not isinstance(length, int) or length <= 0 or length % 8 or length > MAX_BITS:
        raise invalid_field("DeriveKey needs a Cryptographic Length in whole bytes")
    if object_type == ObjectType.SYMMETRIC_KEY.value and not isinstance(algorithm, int):
        raise invalid_field("deriving a Symmetric Key needs a Cryptographic Algorithm")

    rows = [objects.load_visible(ctx, u) for u in uids]  # type: ignore[arg-type]
    inherited = []
    for row, role in zip(rows, ("base key", "derivation data object"), strict=False):
        if row.object_type not in _BASE_TYPES or not row.has_material:
            raise keys.by_version(ctx, ResultReason.INVALID_FIELD, ResultReason.INVALID_OBJECT_TYPE,
                                  f"the {role} must be an existing Symmetric Key or Secret Data")
        # Every input is checked and passes its protection on (export rules follow the material):
        # E_K(protected bytes) under a base key K the caller knows is the protected key, in effect.
        inherited.append(export.derivation_input(ctx, row, role))
    attrs, history = export.derived_protection(ctx, inherited, attrs)
    if keys.value(attrs, "Operation Policy Name") is None and rows[0].policy not in (None, "", "default"):
        # The base key's owner owns the derived key: by default under the base key's policy, so
        # whoever that policy lets derive may also use what was derived as it allows.
        attrs.append(Attribute("Operation Policy Name", objects.value_item(Type.TEXT_STRING, rows[0].policy)))
    base = objects.open_material(ctx, rows[0])
    block = formats.block_of(base)
    data = params.value_of(T.DERIVATION_DATA.value)
    if data is None and len(rows) == 2:
        data = formats.raw_bytes(objects.open_material(ctx, rows[1]))
    if data is not None and not isinstance(data, bytes):
        raise invalid_field("Derivation Data must be a byte string")
    inputs = _Inputs(
        formats.raw_bytes(base),
        block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value) if block is not None else None,
        data, params,
    )
    try:
        derived = method(ctx, inputs, length // 8)
    except ValueError as exc:  # parameters the primitive refuses (key or IV size, ...)
        raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, f"derivation failed: {exc}") from None
    except UnsupportedAlgorithm:
        raise unsupported(ctx, "the derivation parameters are not supported by this server") from None
    if len(derived) < length // 8:
        raise KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE,
                        "the Derivation Method yields fewer bits than the requested Cryptographic Length")
    obj = _new_object(object_type, algorithm, length, derived[: length // 8])  # type: ignore[arg-type]
    if object_type == ObjectType.SECRET_DATA.value:  # a secret has no algorithm or length of its own
        attrs = [a for a in attrs if a.name not in ("Cryptographic Algorithm", "Cryptographic Length")]

    new_uid = str(uuid.uuid4())
    for uid in uids:
        attrs = keys.with_link(attrs, LinkType.DERIVATION_BASE_OBJECT_LINK.value, uid)  # type: ignore[arg-type]
    with ctx.services.store.unit_of_work():
        for row in {r.uid: r for r in rows}.values():
            link = keys.link_row(ctx, row.uid, LinkType.DERIVED_KEY_LINK.value, new_uid)
            objects.update(ctx, row, add=[link])
        # Owned by the base key's owner, sealed under its tenant KEK, whoever derives.
        objects.insert_new(ctx, object_type, obj, attrs,  # type: ignore[arg-type]
                           state=keys.initial_state(attrs, objects.now()), uid=new_uid,
                           origin=objects.origin_of(rows[0]), history=history)
    return objects.uid_payload(new_uid)
