"""MAC and MACVerify with a stored symmetric key: HMAC (SHA-1/2/3, MD5) or AES/3DES CMAC.

The MAC algorithm is the Cryptographic Parameters' Cryptographic Algorithm when it names an HMAC
(so an AES-typed key can be used for HMAC-SHA256, as the vectors do), else the key's own
algorithm: HMAC keys do HMAC, AES/3DES keys do CMAC.
"""

from __future__ import annotations

import hmac as compare

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac, hashes, hmac
from cryptography.hazmat.primitives.ciphers import algorithms
from kmip.core.enums import (
    BlockCipherMode,
    CryptographicAlgorithm,
    CryptographicUsageMask,
    ObjectType,
    Operation,
    ValidityIndicator,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.ttlv import Item
from . import keyuse, streams
from .context import RequestContext
from .keyuse import KeyUse

_A = CryptographicAlgorithm
_HMACS: dict[int, type[hashes.HashAlgorithm]] = {
    _A.HMAC_MD5.value: hashes.MD5,
    _A.HMAC_SHA1.value: hashes.SHA1,
    _A.HMAC_SHA224.value: hashes.SHA224,
    _A.HMAC_SHA256.value: hashes.SHA256,
    _A.HMAC_SHA384.value: hashes.SHA384,
    _A.HMAC_SHA512.value: hashes.SHA512,
    _A.HMAC_SHA3_224.value: hashes.SHA3_224,
    _A.HMAC_SHA3_256.value: hashes.SHA3_256,
    _A.HMAC_SHA3_384.value: hashes.SHA3_384,
    _A.HMAC_SHA3_512.value: hashes.SHA3_512,
}
_CMACS = {_A.AES.value: algorithms.AES, _A.TRIPLE_DES.value: TripleDES}
_TYPES = frozenset({ObjectType.SYMMETRIC_KEY.value})


def _mac(ctx: RequestContext, use: KeyUse, data: bytes) -> bytes:
    key = keyuse.symmetric_bytes(ctx, use)  # also settles use.algorithm from the Key Block
    try:
        for candidate in (use.params.cryptographic_algorithm, use.algorithm):
            if candidate in _HMACS:
                h = hmac.HMAC(key, _HMACS[candidate]())  # type: ignore[index]
                h.update(data)
                return h.finalize()
        mode = use.params.block_cipher_mode
        if use.algorithm in _CMACS and mode in (None, BlockCipherMode.CMAC.value):
            c = cmac.CMAC(_CMACS[use.algorithm](key))  # type: ignore[index]
            c.update(data)
            return c.finalize()
        raise keyuse.unsupported(ctx, "no MAC algorithm (HMAC or CMAC) fits the key and parameters")
    finally:
        del key


def _start(
    ctx: RequestContext, payload: Item, op: Operation, verify: bool
) -> tuple[streams.Part, streams.Stream, KeyUse, int]:
    p, stream = streams.start(ctx, payload, op.value)
    usage = CryptographicUsageMask.MAC_VERIFY if verify else CryptographicUsageMask.MAC_GENERATE
    use = keyuse.prepare(ctx, payload, uid=stream.uid if stream else None, types=_TYPES, usage=usage.value,
                         protect=not verify)
    stream = stream or streams.new(ctx, op.value, use.uid, params=use.params)
    use.params = stream.state["params"]  # type: ignore[assignment]
    chunk = keyuse.data(payload, required=p.correlation is None)
    streams.feed(ctx, stream, chunk)
    # What this part costs against the key's Usage Limits (MAC generation only: protect=True).
    return p, stream, use, keyuse.check_limits(use, len(chunk), first=p.correlation is None)


@keyuse.guarded
def mac(ctx: RequestContext, payload: Item) -> Item:
    p, stream, use, amount = _start(ctx, payload, Operation.MAC, verify=False)
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, use.uid)]
    if p.final:
        body.append(ttlv.bytes_(T.MAC_DATA, _mac(ctx, use, bytes(stream.data))))
    keyuse.consume(ctx, use, amount)  # every part, before the stream is kept for the next one
    body += streams.finish(ctx, p, stream)
    ctx.id_placeholder = use.uid
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)


@keyuse.guarded
def mac_verify(ctx: RequestContext, payload: Item) -> Item:
    p, stream, use, _ = _start(ctx, payload, Operation.MAC_VERIFY, verify=True)
    validity = ValidityIndicator.UNKNOWN  # until the final part
    if p.final:
        given = keyuse.data(payload, T.MAC_DATA)
        ok = compare.compare_digest(_mac(ctx, use, bytes(stream.data)), given)
        validity = ValidityIndicator.VALID if ok else ValidityIndicator.INVALID
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, use.uid), ttlv.enum(T.VALIDITY_INDICATOR, validity)]
    body += streams.finish(ctx, p, stream)
    ctx.id_placeholder = use.uid
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)
