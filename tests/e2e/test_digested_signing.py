"""Sign / Signature Verify of Digested Data (KMIP 1.4+: the client hashed the message) with RSA
PKCS#1 v1.5, RSA-PSS and ECDSA, and the ECDSA verify forms a KMIP 1.3 client sends (a Digital
Signature Algorithm, or Cryptographic Algorithm ECDSA with a Hashing Algorithm), against a real
server with raw TTLV. Signatures are checked with `cryptography`, both ways."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from kmip.core import enums
from kmip.core.enums import CryptographicAlgorithm as A
from kmip.core.enums import CryptographicUsageMask as U
from kmip.core.enums import DigitalSignatureAlgorithm as D
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from .conftest import Instance, Server
from .test_crypto_ops import Client, _register_pair, data, params, uid_

pytestmark = pytest.mark.e2e

DIGEST_VERSIONS = pytest.mark.parametrize("version", [(1, 4), (2, 0), (2, 1)], ids=["1.4", "2.0", "2.1"])
VALID, INVALID = enums.ValidityIndicator.VALID.value, enums.ValidityIndicator.INVALID.value
MESSAGE = b"a message the client hashed itself" * 3


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def admin(server: Server, instance: Instance) -> Iterator[Client]:
    c = Client(server, instance, "admin")
    yield c
    c.raw.close()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _sign(c: Client, uid: str, p: object, digest: bytes, version: tuple[int, int]) -> bytes:
    out = c.ok(Operation.SIGN, uid_(uid), p, data(digest, T.DIGESTED_DATA), version=version)  # type: ignore[arg-type]
    return out.value_of(T.SIGNATURE_DATA.value)  # type: ignore[return-value]


def _verify(c: Client, uid: str, p: object, signature: bytes, version: tuple[int, int], digest: bytes | None = None,
            message: bytes | None = None) -> int:
    body = data(digest, T.DIGESTED_DATA) if digest is not None else data(message)  # type: ignore[arg-type]
    out = c.ok(Operation.SIGNATURE_VERIFY, uid_(uid), p, body, data(signature, T.SIGNATURE_DATA),  # type: ignore[arg-type]
               version=version)
    return out.value_of(T.VALIDITY_INDICATOR.value)  # type: ignore[return-value]


@DIGEST_VERSIONS
def test_rsa_pkcs1_and_pss_over_digested_data(admin: Client, rsa_key: rsa.RSAPrivateKey,
                                              version: tuple[int, int]) -> None:
    priv, pub = _register_pair(admin, rsa_key, A.RSA, 2048, U.SIGN.value, U.VERIFY.value, version=version)
    public = rsa_key.public_key()
    for hash_enum, algorithm, digest_fn in ((enums.HashingAlgorithm.SHA_256, hashes.SHA256(), hashlib.sha256),
                                            (enums.HashingAlgorithm.SHA_512, hashes.SHA512(), hashlib.sha512)):
        digest = digest_fn(MESSAGE).digest()
        v15 = params(padding_method=enums.PaddingMethod.PKCS1v15, hashing_algorithm=hash_enum)
        sig = _sign(admin, priv, v15, digest, version)
        # Byte for byte the signature of the whole message: the server signed the digest as given.
        assert sig == rsa_key.sign(MESSAGE, padding.PKCS1v15(), algorithm)
        assert _verify(admin, pub, v15, sig, version, digest=digest) == VALID
        assert _verify(admin, pub, v15, sig, version, message=MESSAGE) == VALID  # the same key, Data form
        pss = params(padding_method=enums.PaddingMethod.PSS, hashing_algorithm=hash_enum)
        sig = _sign(admin, priv, pss, digest, version)
        public.verify(sig, MESSAGE, padding.PSS(padding.MGF1(algorithm), padding.PSS.MAX_LENGTH), algorithm)
        theirs = rsa_key.sign(digest, padding.PSS(padding.MGF1(algorithm), 32), utils.Prehashed(algorithm))
        assert _verify(admin, pub, pss, theirs, version, digest=digest) == VALID
        # Hostile: a digest of another message verifies nothing.
        assert _verify(admin, pub, pss, theirs, version, digest=digest_fn(b"other").digest()) == INVALID
    # A digest whose length is not the hash's: refused, not signed as if it were.
    v15 = params(digital_signature_algorithm=D.SHA256_WITH_RSA_ENCRYPTION)
    admin.fails(ResultReason.INVALID_FIELD, Operation.SIGN, uid_(priv), v15, data(bytes(31), T.DIGESTED_DATA),
                version=version)
    # Data and Digested Data together: which one was meant? Refused.
    admin.fails(ResultReason.INVALID_FIELD, Operation.SIGN, uid_(priv), v15, data(MESSAGE),
                data(hashlib.sha256(MESSAGE).digest(), T.DIGESTED_DATA), version=version)


@DIGEST_VERSIONS
def test_ecdsa_over_digested_data(admin: Client, ec_key: ec.EllipticCurvePrivateKey, version: tuple[int, int]) -> None:
    priv, pub = _register_pair(admin, ec_key, A.EC, 256, U.SIGN.value, U.VERIFY.value, version=version)
    digest = hashlib.sha384(MESSAGE).digest()
    p = params(digital_signature_algorithm=D.ECDSA_WITH_SHA384)
    sig = _sign(admin, priv, p, digest, version)
    ec_key.public_key().verify(sig, MESSAGE, ec.ECDSA(hashes.SHA384()))
    theirs = ec_key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    assert _verify(admin, pub, p, theirs, version, digest=digest) == VALID
    assert _verify(admin, pub, p, theirs, version, message=MESSAGE) == VALID
    assert _verify(admin, pub, p, theirs, version, digest=hashlib.sha384(b"other").digest()) == INVALID
    # An RSA scheme for an EC key is refused, not silently turned into ECDSA.
    reason = ResultReason.UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS if version >= (2, 0) \
        else ResultReason.FEATURE_NOT_SUPPORTED
    admin.fails(reason, Operation.SIGN, uid_(priv), params(digital_signature_algorithm=D.SHA256_WITH_RSA_ENCRYPTION),
                data(hashlib.sha256(MESSAGE).digest(), T.DIGESTED_DATA), version=version)


def test_digested_data_does_not_exist_before_kmip_1_4(admin: Client, ec_key: ec.EllipticCurvePrivateKey) -> None:
    priv, _ = _register_pair(admin, ec_key, A.EC, 256, U.SIGN.value, U.VERIFY.value, version=(1, 3))
    p = params(digital_signature_algorithm=D.ECDSA_WITH_SHA256)
    admin.fails(ResultReason.INVALID_FIELD, Operation.SIGN, uid_(priv), p,
                data(hashlib.sha256(MESSAGE).digest(), T.DIGESTED_DATA), version=(1, 3))
    # The control: the message itself, in the same version.
    admin.ok(Operation.SIGN, uid_(priv), p, data(MESSAGE), version=(1, 3))


@pytest.mark.parametrize("version", [(1, 2), (1, 3)], ids=["1.2", "1.3"])
def test_ecdsa_verify_forms_of_a_1_3_client(admin: Client, ec_key: ec.EllipticCurvePrivateKey,
                                             version: tuple[int, int]) -> None:
    priv, pub = _register_pair(admin, ec_key, A.EC, 256, U.SIGN.value, U.VERIFY.value, version=version)
    sig = ec_key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    forms = [
        params(digital_signature_algorithm=D.ECDSA_WITH_SHA256),
        params(cryptographic_algorithm=A.ECDSA, hashing_algorithm=enums.HashingAlgorithm.SHA_256),
        params(digital_signature_algorithm=D.ECDSA_WITH_SHA256, cryptographic_algorithm=A.ECDSA,
               hashing_algorithm=enums.HashingAlgorithm.SHA_256),
    ]
    for p in forms:
        assert _verify(admin, pub, p, sig, version, message=MESSAGE) == VALID
        assert _verify(admin, pub, p, sig, version, message=MESSAGE + b"!") == INVALID
        # Hostile: a signature made with another hash than the one named.
        other = ec_key.sign(MESSAGE, ec.ECDSA(hashes.SHA384()))
        assert _verify(admin, pub, p, other, version, message=MESSAGE) == INVALID
    # Signing in the same forms gives what `cryptography` verifies.
    for p in forms:
        out = admin.ok(Operation.SIGN, uid_(priv), p, data(MESSAGE), version=version)
        ec_key.public_key().verify(out.value_of(T.SIGNATURE_DATA.value), MESSAGE, ec.ECDSA(hashes.SHA256()))  # type: ignore[arg-type]
