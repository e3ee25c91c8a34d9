"""Encrypt/Decrypt, Sign/SignatureVerify, MAC/MACVerify, Hash, RNGRetrieve/RNGSeed against a real
server with raw TTLV requests, in KMIP 1.4 and 2.1 forms.

Keys are registered with known material so outputs can be compared byte for byte with
`cryptography` and with the OASIS vectors they come from (CS-BC-M-*, CS-AC-M-*, CS-RNG-M-1).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from kmip.core import enums
from kmip.core.enums import CryptographicAlgorithm as A
from kmip.core.enums import CryptographicUsageMask as U
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import attributes as wire
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server

pytestmark = pytest.mark.e2e

V14, V21 = (1, 4), (2, 1)
VERSIONS = pytest.mark.parametrize("version", [V14, V21], ids=["1.4", "2.1"])
KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")  # the CS-BC/CS-AC vectors' AES key
P16 = bytes.fromhex("01020304050607080910111213141516")
P33 = bytes.fromhex("010203040506070809101112131415160102030405060708091011121314151601")
ENC_DEC = U.ENCRYPT.value | U.DECRYPT.value


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Client:
    def __init__(self, server: Server, instance: Instance, name: str) -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx)

    def call(self, op: Operation, *fields: Item | None, version: tuple[int, int] = V14) -> Item:
        payload = ttlv.struct_(T.REQUEST_PAYLOAD, fields)
        return self.raw.call(request([(op.value, payload)], version=version)).all(T.BATCH_ITEM.value)[0]

    def ok(self, op: Operation, *fields: Item | None, version: tuple[int, int] = V14) -> Item:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]

    def fails(self, reason: ResultReason, op: Operation, *fields: Item | None, version: tuple[int, int] = V14) -> str:
        bi = self.call(op, *fields, version=version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value
        assert bi.value_of(T.RESULT_REASON.value) == reason.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.value_of(T.RESULT_MESSAGE.value) or ""  # type: ignore[return-value]

    def register(self, object_type: enums.ObjectType, obj: Item, *attrs: Item, version: tuple[int, int] = V14) -> str:
        """Registers ``obj``; ``attrs`` are attributes in their 2.x tagged form."""
        if version >= (2, 0):
            template = ttlv.struct_(T.ATTRIBUTES, attrs)
        else:
            template = ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                wire.to_v1(wire.Attribute(wire.name_for(a.tag), Item(T.ATTRIBUTE_VALUE.value, a.type, a.value)))  # type: ignore[arg-type]
                for a in attrs
            ])
        out = self.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, object_type), template, obj, version=version)
        return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]

    def symmetric(self, key: bytes, *attrs: Item, alg: A = A.AES, mask: int = ENC_DEC,
                  version: tuple[int, int] = V14, active: bool = True) -> str:
        obj = ttlv.struct_(T.SYMMETRIC_KEY, [_block(enums.KeyFormatType.RAW, ttlv.bytes_(T.KEY_MATERIAL, key),
                                                    alg, len(key) * 8)])
        dates = [ttlv.date_time(T.ACTIVATION_DATE, int(time.time()) - 3600)] if active else []
        return self.register(enums.ObjectType.SYMMETRIC_KEY, obj, ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, mask),
                             *dates, *attrs, version=version)


def _block(fmt: enums.KeyFormatType, material: Item, alg: A, length: int) -> Item:
    return ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, fmt), ttlv.struct_(T.KEY_VALUE, [material]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, alg), ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length),
    ])


def params(**fields: object) -> Item:
    """Cryptographic Parameters from keyword fields (enumerations, ints, bools, bytes)."""
    kinds = {"tag_length": ttlv.integer, "salt_length": ttlv.integer, "random_iv": ttlv.boolean,
             "p_source": ttlv.bytes_}
    return ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
        kinds.get(name, ttlv.enum)(T[name.upper()], value) for name, value in fields.items()  # type: ignore[operator]
    ])


def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def data(value: bytes, tag: T = T.DATA) -> Item:
    return ttlv.bytes_(tag, value)


@pytest.fixture(scope="module")
def admin(server: Server, instance: Instance) -> Iterator[Client]:
    c = Client(server, instance, "admin")
    yield c
    c.raw.close()


@pytest.fixture(scope="module")
def bob(server: Server, instance: Instance) -> Iterator[Client]:
    instance.client("bob")
    c = Client(server, instance, "bob")
    yield c
    c.raw.close()


# -- symmetric ------------------------------------------------------------------------------------
def _aes(mode: modes.Mode, plain: bytes, key: bytes = KEY) -> bytes:
    enc = Cipher(algorithms.AES(key), mode).encryptor()
    return enc.update(plain) + enc.finalize()


@VERSIONS
def test_aes_modes_match_reference_and_round_trip(admin: Client, version: tuple[int, int]) -> None:
    uid = admin.symmetric(KEY, version=version)
    iv = bytes(range(1, 17))
    cases = [
        # (parameters, plaintext, IV, expected ciphertext)
        (params(block_cipher_mode=enums.BlockCipherMode.ECB), P16, None,
         bytes.fromhex("d9bcce11b0b437b90239552df3a360c9")),  # CS-BC-M-4
        (params(block_cipher_mode=enums.BlockCipherMode.ECB, padding_method=enums.PaddingMethod.PKCS5), P16, None,
         bytes.fromhex("d9bcce11b0b437b90239552df3a360c90efb6bfed93b4d1ea2123ba4db075ff6")),  # CS-BC-M-8
        (params(block_cipher_mode=enums.BlockCipherMode.CBC, padding_method=enums.PaddingMethod.PKCS5), P33,
         bytes.fromhex("01020304050607080910111213141516"),
         bytes.fromhex("79abc5c23868ad84d388ce61110a62742bda19d694bbcb757dd06617c0d80fb1"
                       "df2e71864ad9633d7d797e30860df00d")),  # CS-BC-M-10
        (params(block_cipher_mode=enums.BlockCipherMode.CBC), P16 * 2, iv, _aes(modes.CBC(iv), P16 * 2)),
        (params(block_cipher_mode=enums.BlockCipherMode.CTR), P33, iv, _aes(modes.CTR(iv), P33)),
    ]
    for p, plain, given_iv, expected in cases:
        iv_item = data(given_iv, T.IV_COUNTER_NONCE) if given_iv else None
        out = admin.ok(Operation.ENCRYPT, uid_(uid), p, data(plain), iv_item, version=version)
        assert out.value_of(T.UNIQUE_IDENTIFIER.value) == uid
        assert out.value_of(T.DATA.value) == expected
        assert out.get(T.IV_COUNTER_NONCE.value) is None  # the client chose it
        back = admin.ok(Operation.DECRYPT, uid_(uid), p, data(expected), iv_item, version=version)
        assert back.value_of(T.DATA.value) == plain
    # ECB without padding refuses data that is not whole blocks.
    admin.fails(ResultReason.INVALID_FIELD, Operation.ENCRYPT, uid_(uid),
                params(block_cipher_mode=enums.BlockCipherMode.ECB), data(P33), version=version)


@VERSIONS
def test_gcm_matches_reference_and_rejects_tampering(admin: Client, version: tuple[int, int]) -> None:
    uid = admin.symmetric(KEY, version=version)
    nonce, aad, plain = bytes(range(12)), b"header", P33
    gcm = params(block_cipher_mode=enums.BlockCipherMode.GCM, tag_length=16)
    out = admin.ok(Operation.ENCRYPT, uid_(uid), gcm, data(plain), data(nonce, T.IV_COUNTER_NONCE),
                   data(aad, T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA), version=version)
    reference = AESGCM(KEY).encrypt(nonce, plain, aad)
    ct, tag = out.value_of(T.DATA.value), out.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value)
    assert ct + tag == reference  # type: ignore[operator]

    def decrypt(ciphertext: bytes, tag: bytes, aad: bytes = aad, p: Item = gcm) -> Item:
        return admin.call(Operation.DECRYPT, uid_(uid), p, data(ciphertext), data(nonce, T.IV_COUNTER_NONCE),
                          data(aad, T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA),
                          data(tag, T.AUTHENTICATED_ENCRYPTION_TAG), version=version)

    ok = decrypt(ct, tag)  # type: ignore[arg-type]
    assert ok.get(T.RESPONSE_PAYLOAD.value).value_of(T.DATA.value) == plain  # type: ignore[union-attr]
    for bad in (decrypt(ct, bytes([tag[0] ^ 1]) + tag[1:]),  # type: ignore[index]
                decrypt(bytes([ct[0] ^ 1]) + ct[1:], tag),  # type: ignore[index,arg-type]
                decrypt(ct, tag, aad=b"other header")):  # type: ignore[arg-type]
        assert bad.value_of(T.RESULT_REASON.value) == ResultReason.CRYPTOGRAPHIC_FAILURE.value
        assert bad.get(T.RESPONSE_PAYLOAD.value) is None  # no unauthenticated plaintext
    # A truncated tag (Tag Length 12) verifies; tag lengths GCM does not allow are refused.
    short = params(block_cipher_mode=enums.BlockCipherMode.GCM, tag_length=12)
    ok = decrypt(ct, tag[:12], p=short)  # type: ignore[arg-type,index]
    assert ok.get(T.RESPONSE_PAYLOAD.value).value_of(T.DATA.value) == plain  # type: ignore[union-attr]
    for length in (1, 32):
        admin.fails(ResultReason.GENERAL_FAILURE, Operation.ENCRYPT, uid_(uid),
                    params(block_cipher_mode=enums.BlockCipherMode.GCM, tag_length=length), data(plain),
                    data(nonce, T.IV_COUNTER_NONCE), version=version)
    # CS-BC-M-GCM-1 (NIST test case 2): all-zero key, IV and block.
    zero = admin.symmetric(bytes(16), version=version)
    out = admin.ok(Operation.ENCRYPT, uid_(zero), gcm, data(bytes(16)), data(bytes(12), T.IV_COUNTER_NONCE),
                   version=version)
    assert out.value_of(T.DATA.value) == bytes.fromhex("0388dace60b6a392f328c2b971b2fe78")
    assert out.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value) == bytes.fromhex("ab6e47d42cec13bdf53a67b21257bddf")


@VERSIONS
def test_parameters_from_the_key_and_server_generated_iv(admin: Client, version: tuple[int, int]) -> None:
    stored = params(block_cipher_mode=enums.BlockCipherMode.CBC, padding_method=enums.PaddingMethod.PKCS5)
    uid = admin.symmetric(KEY, stored, version=version)
    iv = bytes.fromhex("ff020304050607080910111213141516")
    out = admin.ok(Operation.ENCRYPT, uid_(uid), data(P33), data(iv, T.IV_COUNTER_NONCE), version=version)
    expected = bytes.fromhex("e768203ba72b6e157daaad34b1e791d8e88457dc147942f01bfaff7b28a3cdde"
                             "2203d4d5a4c7928ba9e9cc78b66a6546")  # CS-BC-M-12
    assert out.value_of(T.DATA.value) == expected
    admin.fails(ResultReason.INVALID_MESSAGE, Operation.DECRYPT, uid_(uid), data(expected), version=version)
    # Random IV (CS-BC-M-13), and the same for GCM and CTR without an IV: the server draws one.
    for p in (params(block_cipher_mode=enums.BlockCipherMode.CBC, padding_method=enums.PaddingMethod.PKCS5,
                     random_iv=True),
              params(block_cipher_mode=enums.BlockCipherMode.GCM),
              params(block_cipher_mode=enums.BlockCipherMode.CTR)):
        first = admin.ok(Operation.ENCRYPT, uid_(uid), p, data(P33), version=version)
        second = admin.ok(Operation.ENCRYPT, uid_(uid), p, data(P33), version=version)
        iv1 = first.value_of(T.IV_COUNTER_NONCE.value)
        assert isinstance(iv1, bytes) and iv1 != second.value_of(T.IV_COUNTER_NONCE.value)
        assert first.value_of(T.DATA.value) != second.value_of(T.DATA.value)
        tag = first.get(T.AUTHENTICATED_ENCRYPTION_TAG.value)
        back = admin.ok(Operation.DECRYPT, uid_(uid), p, data(first.value_of(T.DATA.value)),  # type: ignore[arg-type]
                        data(iv1, T.IV_COUNTER_NONCE), tag, version=version)
        assert back.value_of(T.DATA.value) == P33


def test_gcm_streaming_matches_one_shot_and_is_bound_to_its_owner(admin: Client, bob: Client) -> None:
    """CS-BC-M-GCM-3: Init Indicator, then Correlation Value + Final Indicator."""
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308")
    iv, aad = bytes.fromhex("cafebabefacedbad"), bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    part1 = bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72")
    part2 = bytes.fromhex("1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
    uid = admin.symmetric(key)
    gcm = params(block_cipher_mode=enums.BlockCipherMode.GCM, tag_length=16)
    first = admin.ok(Operation.ENCRYPT, uid_(uid), gcm, data(part1), data(iv, T.IV_COUNTER_NONCE),
                     ttlv.boolean(T.INIT_INDICATOR, True), data(aad, T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA))
    assert first.value_of(T.DATA.value) == bytes.fromhex(
        "61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c7423")
    assert first.get(T.AUTHENTICATED_ENCRYPTION_TAG.value) is None
    correlation = first.value_of(T.CORRELATION_VALUE.value)
    assert isinstance(correlation, bytes)
    # Another client cannot continue (nor end) the stream.
    bob.fails(ResultReason.INVALID_FIELD, Operation.ENCRYPT, data(part2), data(correlation, T.CORRELATION_VALUE),
              ttlv.boolean(T.FINAL_INDICATOR, True))
    last = admin.ok(Operation.ENCRYPT, uid_(uid), gcm, data(part2), data(correlation, T.CORRELATION_VALUE),
                    ttlv.boolean(T.FINAL_INDICATOR, True))
    assert last.value_of(T.DATA.value) == bytes.fromhex("73806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598")
    assert last.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value) == bytes.fromhex("3612d2e79e3b0785561be14aaca2fccb")
    assert last.get(T.CORRELATION_VALUE.value) is None
    # The stream is over.
    admin.fails(ResultReason.INVALID_FIELD, Operation.ENCRYPT, data(b"x"), data(correlation, T.CORRELATION_VALUE))
    # Decrypting in three parts gives the plaintext back once the final part checks the tag.
    ct = first.value_of(T.DATA.value) + last.value_of(T.DATA.value)  # type: ignore[operator]
    out = admin.ok(Operation.DECRYPT, uid_(uid), gcm, data(ct[:10]), data(iv, T.IV_COUNTER_NONCE),
                   data(aad, T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA), ttlv.boolean(T.INIT_INDICATOR, True))
    corr = data(out.value_of(T.CORRELATION_VALUE.value), T.CORRELATION_VALUE)  # type: ignore[arg-type]
    got = out.value_of(T.DATA.value)
    got += admin.ok(Operation.DECRYPT, data(ct[10:40]), corr).value_of(T.DATA.value)  # type: ignore[operator]
    final = admin.ok(Operation.DECRYPT, data(ct[40:]), corr, ttlv.boolean(T.FINAL_INDICATOR, True),
                     data(last.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value), T.AUTHENTICATED_ENCRYPTION_TAG))  # type: ignore[arg-type]
    assert got + final.value_of(T.DATA.value) == part1 + part2  # type: ignore[operator]


def test_chacha20_and_chacha20_poly1305(admin: Client) -> None:
    uid = admin.symmetric(bytes(32), alg=A.CHACHA20, version=V21)
    out = admin.ok(Operation.ENCRYPT, uid_(uid), params(), data(bytes(64)), data(bytes(8), T.IV_COUNTER_NONCE),
                   version=V21)
    assert out.value_of(T.DATA.value) == bytes.fromhex(  # CS-BC-M-CHACHA20-1
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")
    key, nonce, aad = bytes(range(0x80, 0xA0)), bytes.fromhex("070000004041424344454647"), b"aad"
    aead = admin.symmetric(key, alg=A.CHACHA20_POLY1305, version=V21)
    p = params(block_cipher_mode=enums.BlockCipherMode.AEAD, tag_length=16)
    out = admin.ok(Operation.ENCRYPT, uid_(aead), p, data(P33), data(nonce, T.IV_COUNTER_NONCE),
                   data(aad, T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA), version=V21)
    ct, tag = out.value_of(T.DATA.value), out.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value)
    assert ct + tag == ChaCha20Poly1305(key).encrypt(nonce, P33, aad)  # type: ignore[operator]
    fields = (uid_(aead), p, data(ct), data(nonce, T.IV_COUNTER_NONCE),  # type: ignore[arg-type]
              data(aad, T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA))
    assert admin.ok(Operation.DECRYPT, *fields, data(tag[:12], T.AUTHENTICATED_ENCRYPTION_TAG),  # type: ignore[index]
                    version=V21).value_of(T.DATA.value) == P33
    admin.fails(ResultReason.CRYPTOGRAPHIC_FAILURE, Operation.DECRYPT, *fields,
                data(bytes(16), T.AUTHENTICATED_ENCRYPTION_TAG), version=V21)


# -- asymmetric -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _register_pair(c: Client, private: object, alg: A, length: int, private_mask: int, public_mask: int,
                   *attrs: Item, version: tuple[int, int] = V14) -> tuple[str, str]:
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                serialization.NoEncryption())
    spki = private.public_key().public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    active = ttlv.date_time(T.ACTIVATION_DATE, int(time.time()) - 3600)
    priv = c.register(enums.ObjectType.PRIVATE_KEY, ttlv.struct_(T.PRIVATE_KEY, [
        _block(enums.KeyFormatType.PKCS_8, ttlv.bytes_(T.KEY_MATERIAL, der), alg, length)]),
        ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, private_mask), active, *attrs, version=version)
    pub = c.register(enums.ObjectType.PUBLIC_KEY, ttlv.struct_(T.PUBLIC_KEY, [
        _block(enums.KeyFormatType.X_509, ttlv.bytes_(T.KEY_MATERIAL, spki), alg, length)]),
        ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, public_mask), active, *attrs, version=version)
    return priv, pub


@VERSIONS
def test_rsa_oaep_and_pkcs1_round_trips(admin: Client, rsa_key: rsa.RSAPrivateKey, version: tuple[int, int]) -> None:
    priv, pub = _register_pair(admin, rsa_key, A.RSA, 2048, U.DECRYPT.value, U.ENCRYPT.value, version=version)
    oaep256 = params(padding_method=enums.PaddingMethod.OAEP, hashing_algorithm=enums.HashingAlgorithm.SHA_256,
                     mask_generator=enums.MaskGenerator.MGF1,
                     mask_generator_hashing_algorithm=enums.HashingAlgorithm.SHA_256, p_source=b"label")
    cases = [
        (params(padding_method=enums.PaddingMethod.OAEP, hashing_algorithm=enums.HashingAlgorithm.SHA_1),
         padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
        (oaep256, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"label")),
        (params(padding_method=enums.PaddingMethod.PKCS1v15), padding.PKCS1v15()),
    ]
    message = b"a data key to wrap"
    for p, reference in cases:
        ct = admin.ok(Operation.ENCRYPT, uid_(pub), p, data(message), version=version).value_of(T.DATA.value)
        assert rsa_key.decrypt(ct, reference) == message  # type: ignore[arg-type]
        theirs = rsa_key.public_key().encrypt(message, reference)
        assert admin.ok(Operation.DECRYPT, uid_(priv), p, data(theirs), version=version).value_of(
            T.DATA.value) == message
    admin.fails(ResultReason.CRYPTOGRAPHIC_FAILURE, Operation.DECRYPT, uid_(priv), oaep256, data(bytes(256)),
                version=version)


@VERSIONS
def test_sign_and_verify_rsa_and_ecdsa(admin: Client, rsa_key: rsa.RSAPrivateKey, version: tuple[int, int]) -> None:
    pss = params(padding_method=enums.PaddingMethod.PSS, hashing_algorithm=enums.HashingAlgorithm.SHA_256,
                 cryptographic_algorithm=A.RSA)
    priv, pub = _register_pair(admin, rsa_key, A.RSA, 2048, U.SIGN.value, U.VERIFY.value, pss, version=version)
    message = b"sign me" * 10
    # PSS from the keys' Cryptographic Parameters (CS-AC-M-3): the longest salt, MGF1 with SHA-256.
    sig = admin.ok(Operation.SIGN, uid_(priv), data(message), version=version).value_of(T.SIGNATURE_DATA.value)
    rsa_key.public_key().verify(sig, message, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH),  # type: ignore[arg-type]
                                hashes.SHA256())

    def verify(message: bytes, signature: bytes, *extra: Item) -> int:
        out = admin.ok(Operation.SIGNATURE_VERIFY, uid_(pub), *extra, data(message),
                       data(signature, T.SIGNATURE_DATA), version=version)
        return out.value_of(T.VALIDITY_INDICATOR.value)  # type: ignore[return-value]

    assert verify(message, sig) == enums.ValidityIndicator.VALID.value  # type: ignore[arg-type]
    assert verify(b"another message", sig) == enums.ValidityIndicator.INVALID.value  # type: ignore[arg-type]
    sha1 = params(padding_method=enums.PaddingMethod.PSS, hashing_algorithm=enums.HashingAlgorithm.SHA_1)
    assert verify(message, sig, sha1) == enums.ValidityIndicator.INVALID.value  # type: ignore[arg-type]
    # PKCS#1 v1.5 is deterministic: byte for byte what cryptography produces.
    v15 = params(digital_signature_algorithm=enums.DigitalSignatureAlgorithm.SHA256_WITH_RSA_ENCRYPTION)
    sig = admin.ok(Operation.SIGN, uid_(priv), v15, data(message), version=version).value_of(T.SIGNATURE_DATA.value)
    assert sig == rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    assert verify(message, sig, v15) == enums.ValidityIndicator.VALID.value  # type: ignore[arg-type]
    digest = hashlib.sha256(message).digest()
    sig = admin.ok(Operation.SIGN, uid_(priv), v15, data(digest, T.DIGESTED_DATA),
                   version=version).value_of(T.SIGNATURE_DATA.value)
    assert sig == rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    # ECDSA on P-256.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    epriv, epub = _register_pair(admin, ec_key, A.EC, 256, U.SIGN.value, U.VERIFY.value, version=version)
    ecdsa = params(digital_signature_algorithm=enums.DigitalSignatureAlgorithm.ECDSA_WITH_SHA256)
    sig = admin.ok(Operation.SIGN, uid_(epriv), ecdsa, data(message), version=version).value_of(T.SIGNATURE_DATA.value)
    ec_key.public_key().verify(sig, message, ec.ECDSA(hashes.SHA256()))  # type: ignore[arg-type]
    out = admin.ok(Operation.SIGNATURE_VERIFY, uid_(epub), ecdsa, data(message), data(sig, T.SIGNATURE_DATA),  # type: ignore[arg-type]
                   version=version)
    assert out.value_of(T.VALIDITY_INDICATOR.value) == enums.ValidityIndicator.VALID.value
    with pytest.raises(InvalidSignature):
        ec_key.public_key().verify(sig, message + b"!", ec.ECDSA(hashes.SHA256()))  # type: ignore[arg-type]
    # The public key cannot sign.
    reason = ResultReason.INVALID_OBJECT_TYPE if version >= (2, 0) else ResultReason.ILLEGAL_OPERATION
    admin.fails(reason, Operation.SIGN, uid_(pub), data(message), version=version)


# -- MAC, Hash, RNG -------------------------------------------------------------------------------
@VERSIONS
def test_mac_and_mac_verify(admin: Client, version: tuple[int, int]) -> None:
    mask = ENC_DEC | U.MAC_GENERATE.value | U.MAC_VERIFY.value
    uid = admin.symmetric(KEY, params(cryptographic_algorithm=A.HMAC_SHA256), mask=mask, version=version)
    mac = admin.ok(Operation.MAC, uid_(uid), data(P16), version=version).value_of(T.MAC_DATA.value)
    expected = bytes.fromhex("c911e78196d64c30f631bb079ea37b97a95936d4da764d6a171df030c895ecf9")  # CS-AC-M-4
    assert mac == expected == hmac.new(KEY, P16, hashlib.sha256).digest()

    def verify(uid: str, message: bytes, mac: bytes) -> int:
        out = admin.ok(Operation.MAC_VERIFY, uid_(uid), data(message), data(mac, T.MAC_DATA), version=version)
        return out.value_of(T.VALIDITY_INDICATOR.value)  # type: ignore[return-value]

    assert verify(uid, P16, expected) == enums.ValidityIndicator.VALID.value
    assert verify(uid, P16 + b"x", expected) == enums.ValidityIndicator.INVALID.value
    # HMAC-SHA512 from a key of that algorithm, and AES-CMAC from a plain AES key.
    hkey = bytes(range(64))
    h512 = admin.symmetric(hkey, alg=A.HMAC_SHA512, mask=mask, version=version)
    out = admin.ok(Operation.MAC, uid_(h512), data(P33), version=version)
    assert out.value_of(T.MAC_DATA.value) == hmac.new(hkey, P33, hashlib.sha512).digest()
    aes = admin.symmetric(KEY, mask=mask, version=version)
    c = cmac.CMAC(algorithms.AES(KEY))
    c.update(P33)
    reference = c.finalize()
    assert admin.ok(Operation.MAC, uid_(aes), data(P33), version=version).value_of(T.MAC_DATA.value) == reference
    assert verify(aes, P33, reference) == enums.ValidityIndicator.VALID.value
    # A key without the MAC Generate bit.
    reason = ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK if version >= (2, 0) else ResultReason.PERMISSION_DENIED
    plain = admin.symmetric(KEY, version=version)
    admin.fails(reason, Operation.MAC, uid_(plain), data(P16), version=version)


@VERSIONS
def test_hash_rng_retrieve_and_seed(admin: Client, version: tuple[int, int]) -> None:
    h = enums.HashingAlgorithm
    for alg, ref in ((h.SHA_1, hashlib.sha1), (h.SHA_224, hashlib.sha224), (h.SHA_256, hashlib.sha256),
                     (h.SHA_384, hashlib.sha384), (h.SHA_512, hashlib.sha512), (h.SHA3_256, hashlib.sha3_256)):
        out = admin.ok(Operation.HASH, params(hashing_algorithm=alg), data(P16), version=version)
        assert out.value_of(T.DATA.value) == ref(P16).digest()
    out = admin.ok(Operation.HASH, params(hashing_algorithm=enums.HashingAlgorithm.SHA_256), data(P16), version=version)
    assert out.value_of(T.DATA.value) == bytes.fromhex(  # CS-AC-M-7
        "ad41233d22cf9322e3a7ff49a13da434797abed3bab80950a1a0d4e582b7ea72")
    admin.fails(ResultReason.MISSING_DATA, Operation.HASH, data(P16), version=version)
    # Hash in parts.
    first = admin.ok(Operation.HASH, params(hashing_algorithm=enums.HashingAlgorithm.SHA_256), data(b"abc"),
                     ttlv.boolean(T.INIT_INDICATOR, True), version=version)
    assert first.get(T.DATA.value) is None
    corr = data(first.value_of(T.CORRELATION_VALUE.value), T.CORRELATION_VALUE)  # type: ignore[arg-type]
    last = admin.ok(Operation.HASH, data(b"def"), corr, ttlv.boolean(T.FINAL_INDICATOR, True), version=version)
    assert last.value_of(T.DATA.value) == hashlib.sha256(b"abcdef").digest()
    # RNG (CS-RNG-M-1): the requested length, different every time.
    a = admin.ok(Operation.RNG_RETRIEVE, ttlv.integer(T.DATA_LENGTH, 32), version=version).value_of(T.DATA.value)
    b = admin.ok(Operation.RNG_RETRIEVE, ttlv.integer(T.DATA_LENGTH, 32), version=version).value_of(T.DATA.value)
    assert isinstance(a, bytes) and len(a) == 32 and a != b
    admin.fails(ResultReason.INVALID_FIELD, Operation.RNG_RETRIEVE, ttlv.integer(T.DATA_LENGTH, 0), version=version)
    out = admin.ok(Operation.RNG_SEED, data(bytes(48)), version=version)
    assert out.value_of(T.DATA_LENGTH.value) == 48


# -- life cycle, usage mask, limits, ownership -----------------------------------------------------
@VERSIONS
def test_state_dates_usage_mask_and_limits(admin: Client, version: tuple[int, int]) -> None:
    v2 = version >= (2, 0)
    wrong_state = ResultReason.WRONG_KEY_LIFECYCLE_STATE if v2 else ResultReason.PERMISSION_DENIED
    ecb = params(block_cipher_mode=enums.BlockCipherMode.ECB)
    now = int(time.time())
    ct = bytes.fromhex("d9bcce11b0b437b90239552df3a360c9")
    # Pre-Active: neither direction.
    pre = admin.symmetric(KEY, version=version, active=False)
    admin.fails(wrong_state, Operation.ENCRYPT, uid_(pre), ecb, data(P16), version=version)
    admin.fails(wrong_state, Operation.DECRYPT, uid_(pre), ecb, data(ct), version=version)
    # Destroyed: the material is gone; the same answer as Get gives.
    admin.ok(Operation.DESTROY, uid_(pre), version=version)
    gone = ResultReason.OBJECT_DESTROYED if v2 else ResultReason.ITEM_NOT_FOUND
    admin.fails(gone, Operation.DECRYPT, uid_(pre), ecb, data(ct), version=version)
    # Deactivated (its Deactivation Date has passed): decrypts old data, encrypts nothing new.
    old = admin.symmetric(KEY, ttlv.date_time(T.DEACTIVATION_DATE, now - 60), version=version)
    admin.fails(wrong_state, Operation.ENCRYPT, uid_(old), ecb, data(P16), version=version)
    assert admin.ok(Operation.DECRYPT, uid_(old), ecb, data(ct), version=version).value_of(T.DATA.value) == P16
    # Protect Stop Date passed, Process Start Date ahead (CS-BC-M-14).
    dated = admin.symmetric(KEY, ttlv.date_time(T.PROCESS_START_DATE, now + 3600),
                            ttlv.date_time(T.PROTECT_STOP_DATE, now - 3600), version=version)
    admin.fails(wrong_state, Operation.ENCRYPT, uid_(dated), ecb, data(P16), version=version)
    admin.fails(wrong_state, Operation.DECRYPT, uid_(dated), ecb, data(ct), version=version)
    # Cryptographic Usage Mask without Encrypt.
    mask_reason = ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK if v2 else ResultReason.PERMISSION_DENIED
    decrypt_only = admin.symmetric(KEY, mask=U.DECRYPT.value, version=version)
    admin.fails(mask_reason, Operation.ENCRYPT, uid_(decrypt_only), ecb, data(P16), version=version)
    # Usage Limits of 16 bytes: one block, then no more (CS-BC-M-7).
    limited = admin.symmetric(KEY, ttlv.struct_(T.USAGE_LIMITS, [
        ttlv.long_integer(T.USAGE_LIMITS_TOTAL, 16), ttlv.enum(T.USAGE_LIMITS_UNIT, enums.UsageLimitsUnit.BYTE)]),
        version=version)
    assert admin.ok(Operation.ENCRYPT, uid_(limited), ecb, data(P16), version=version).value_of(T.DATA.value) == ct
    admin.fails(ResultReason.PERMISSION_DENIED, Operation.ENCRYPT, uid_(limited), ecb, data(P16), version=version)
    assert admin.ok(Operation.DECRYPT, uid_(limited), ecb, data(ct), version=version).value_of(T.DATA.value) == P16


def test_other_clients_get_item_not_found(admin: Client, bob: Client, rsa_key: rsa.RSAPrivateKey) -> None:
    mask = ENC_DEC | U.MAC_GENERATE.value | U.MAC_VERIFY.value
    aes = admin.symmetric(KEY, mask=mask)
    priv, pub = _register_pair(admin, rsa_key, A.RSA, 2048, U.SIGN.value, U.VERIFY.value)
    ecb = params(block_cipher_mode=enums.BlockCipherMode.ECB)
    probes = [
        (Operation.ENCRYPT, aes, [ecb, data(P16)]),
        (Operation.DECRYPT, aes, [ecb, data(P16)]),
        (Operation.MAC, aes, [data(P16)]),
        (Operation.MAC_VERIFY, aes, [data(P16), data(P16, T.MAC_DATA)]),
        (Operation.SIGN, priv, [data(P16)]),
        (Operation.SIGNATURE_VERIFY, pub, [data(P16), data(P16, T.SIGNATURE_DATA)]),
    ]
    for op, uid, fields in probes:
        for version in (V14, V21):
            # Exactly the answer for an id that does not exist (2.x says Object Not Found).
            missing = bob.call(op, uid_("no-such-object"), *fields, version=version)
            probe = bob.call(op, uid_(uid), *fields, version=version)
            allowed = {ResultReason.ITEM_NOT_FOUND.value}
            if version == V21:
                allowed.add(ResultReason.OBJECT_NOT_FOUND.value)
            assert missing.value_of(T.RESULT_REASON.value) in allowed
            for tag in (T.RESULT_STATUS, T.RESULT_REASON, T.RESULT_MESSAGE):
                assert probe.value_of(tag.value) == missing.value_of(tag.value), (op, version)
    # The owner is unaffected.
    assert admin.ok(Operation.ENCRYPT, uid_(aes), ecb, data(P16)).value_of(T.DATA.value) == bytes.fromhex(
        "d9bcce11b0b437b90239552df3a360c9")


def test_query_lists_the_cryptographic_operations(admin: Client) -> None:
    out = admin.ok(Operation.QUERY, ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS))
    listed = {o.value for o in out.all(T.OPERATION.value)}
    assert {Operation.ENCRYPT.value, Operation.DECRYPT.value, Operation.SIGN.value, Operation.SIGNATURE_VERIFY.value,
            Operation.MAC.value, Operation.MAC_VERIFY.value, Operation.HASH.value, Operation.RNG_RETRIEVE.value,
            Operation.RNG_SEED.value} <= listed



def _limits(total: int, unit: enums.UsageLimitsUnit = enums.UsageLimitsUnit.BYTE) -> Item:
    return ttlv.struct_(T.USAGE_LIMITS, [ttlv.long_integer(T.USAGE_LIMITS_TOTAL, total),
                                         ttlv.enum(T.USAGE_LIMITS_UNIT, unit)])


def test_usage_limits_are_charged_at_every_part(admin: Client, rsa_key: rsa.RSAPrivateKey) -> None:
    """Issue 12: Usage Limits were consumed only at the Final part, so 20 Init parts of 32 bytes
    each encrypted under a 32-byte limit. Each part is now charged as it arrives."""
    init, final = ttlv.boolean(T.INIT_INDICATOR, True), ttlv.boolean(T.FINAL_INDICATOR, True)
    ecb = params(block_cipher_mode=enums.BlockCipherMode.ECB, padding_method=enums.PaddingMethod.NONE)
    chunk = P16 * 2
    mac_mask = U.MAC_GENERATE.value | U.MAC_VERIFY.value
    priv, _ = _register_pair(admin, rsa_key, A.RSA, 2048, U.SIGN.value, U.VERIFY.value, _limits(32))
    keys = {
        Operation.ENCRYPT: (admin.symmetric(KEY, _limits(32)), [ecb]),
        Operation.MAC: (admin.symmetric(KEY, _limits(32), params(cryptographic_algorithm=A.HMAC_SHA256),
                                        mask=mac_mask), []),
        Operation.SIGN: (priv, []),
    }
    for op, (uid, extra) in keys.items():
        # Hostile: many Init parts, each within the limit alone. Only the first one fits.
        admin.ok(op, uid_(uid), *extra, data(chunk), init)
        for _ in range(3):
            admin.fails(ResultReason.PERMISSION_DENIED, op, uid_(uid), *extra, data(chunk), init)
        # ... and a one-shot use after them is refused too: the limit is spent.
        admin.fails(ResultReason.PERMISSION_DENIED, op, uid_(uid), *extra, data(P16))
    # A continuation part is charged too: 16 + 16 fit in 32 bytes, a third part does not.
    uid = admin.symmetric(KEY, _limits(32))
    first = admin.ok(Operation.ENCRYPT, uid_(uid), ecb, data(P16), init)
    corr = data(first.value_of(T.CORRELATION_VALUE.value), T.CORRELATION_VALUE)  # type: ignore[arg-type]
    second = admin.ok(Operation.ENCRYPT, uid_(uid), ecb, data(P16), corr)
    corr = data(second.value_of(T.CORRELATION_VALUE.value), T.CORRELATION_VALUE)  # type: ignore[arg-type]
    admin.fails(ResultReason.PERMISSION_DENIED, Operation.ENCRYPT, uid_(uid), ecb, data(P16), corr, final)
    # Control: a stream within its limit completes, and matches the one-shot result.
    uid = admin.symmetric(KEY, _limits(48))
    first = admin.ok(Operation.ENCRYPT, uid_(uid), ecb, data(P16), init)
    corr = data(first.value_of(T.CORRELATION_VALUE.value), T.CORRELATION_VALUE)  # type: ignore[arg-type]
    last = admin.ok(Operation.ENCRYPT, uid_(uid), ecb, data(chunk), corr, final)
    out = first.value_of(T.DATA.value) + last.value_of(T.DATA.value)  # type: ignore[operator]
    assert out == _aes(modes.ECB(), P16 * 3)
    # Object unit: one use per operation, however many parts it has.
    uid = admin.symmetric(KEY, _limits(1, enums.UsageLimitsUnit.OBJECT))
    first = admin.ok(Operation.ENCRYPT, uid_(uid), ecb, data(P16), init)
    corr = data(first.value_of(T.CORRELATION_VALUE.value), T.CORRELATION_VALUE)  # type: ignore[arg-type]
    admin.ok(Operation.ENCRYPT, uid_(uid), ecb, data(P16), corr, final)
    admin.fails(ResultReason.PERMISSION_DENIED, Operation.ENCRYPT, uid_(uid), ecb, data(P16))
