"""The symmetric layer of Encrypt/Decrypt: multi-part processing equals one-shot processing for
every mode (each part recomputes from the accumulated input and returns only the new output)."""

from __future__ import annotations

import pytest
from kmip.core.enums import BlockCipherMode as M
from kmip.core.enums import CryptographicAlgorithm as A
from kmip.core.enums import PaddingMethod as P

from kmip_bridge.operations import ciphers
from kmip_bridge.protocol.errors import KmipError

KEY = bytes(range(16))
SPECS = {
    "ecb": ciphers.Spec(A.AES.value, M.ECB.value, P.NONE.value, None, b"", 16),
    "cbc-pkcs5": ciphers.Spec(A.AES.value, M.CBC.value, P.PKCS5.value, bytes(16), b"", 16),
    "ctr": ciphers.Spec(A.AES.value, M.CTR.value, P.NONE.value, bytes(16), b"", 16),
    "gcm": ciphers.Spec(A.AES.value, M.GCM.value, P.NONE.value, bytes(12), b"aad", 16),
    "3des-cbc": ciphers.Spec(A.TRIPLE_DES.value, M.CBC.value, P.PKCS5.value, bytes(8), b"", 16),
}


def _parts(run, sizes: list[int], data: bytes) -> tuple[bytes, object]:  # type: ignore[no-untyped-def]
    acc, out, sent, tag, at = b"", b"", 0, None, 0
    for i, n in enumerate(sizes):
        acc += data[at : at + n]
        at += n
        result, tag = run(acc, i == len(sizes) - 1)
        out += result[sent:]
        sent = len(result)
    return out, tag


@pytest.mark.parametrize("name", SPECS)
def test_parts_equal_one_shot(name: str) -> None:
    spec = SPECS[name]
    key = KEY + bytes(8) if spec.algorithm == A.TRIPLE_DES.value else KEY
    plain = bytes(range(64)) if spec.padding == P.NONE.value and spec.mode == M.ECB.value else bytes(range(63))
    whole, tag = ciphers.encrypt(key, spec, plain)
    sizes = [16, 32, 16] if name == "ecb" else [5, 17, 30, 11]
    parts, part_tag = _parts(lambda acc, final: ciphers.encrypt(key, spec, acc, final), sizes, plain)
    assert parts == whole and part_tag == tag
    back, _ = _parts(lambda acc, final: (ciphers.decrypt(key, spec, acc, tag, final), None),  # type: ignore[arg-type]
                     [7, 9, len(whole) - 16], whole)
    assert back == plain


def test_bad_padding_and_tag_are_cryptographic_failures() -> None:
    spec = SPECS["cbc-pkcs5"]
    ct, _ = ciphers.encrypt(KEY, spec, b"secret")
    with pytest.raises(KmipError) as err:
        ciphers.decrypt(bytes(16), spec, ct, None)
    assert err.value.reason == 10  # Cryptographic Failure
    gcm = SPECS["gcm"]
    ct, tag = ciphers.encrypt(KEY, gcm, b"secret")
    with pytest.raises(KmipError) as err:
        ciphers.decrypt(KEY, gcm, ct, bytes(len(tag)))  # type: ignore[arg-type]
    assert err.value.reason == 10
